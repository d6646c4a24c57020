"""How a table is shown to a reader, in a notebook cell or in REPORT.md.

Units go into the headers (``val_acc`` -> ``val acc (%)``), whole numbers lose their decimal
point and gain thousands separators (``952308.0`` -> ``952,308``), missing values read as a dash
instead of ``NaN``, and the meaningless 0..n index disappears (a meaningful index, such as the
rows of a pivot table, becomes the first column). The saved CSV files keep the raw column names
and values; only what a person reads is formatted here.
"""
from __future__ import annotations

import math
import re

import pandas as pd
from IPython.display import Markdown

MISSING = "–"
# (pattern on the raw column name, unit appended to the header); the first match wins
UNITS = ((re.compile(r"(^|[_ ])acc([_ ]|$)|_agreement$"), "%"), (re.compile(r"_ms$"), "ms"),
         (re.compile(r"_MB$"), "MB"), (re.compile(r"(^|_)seconds$"), "s"), (re.compile(r"(^|_)minutes$"), "min"),
         (re.compile(r"_x$|^x_|_x_"), "x"), (re.compile(r"^drop|^diff"), "points"))
# units that say themselves in the name once the suffix is dropped
DROP_SUFFIX = re.compile(r"_(ms|MB|x)$")
# columns that count things: whole numbers even when a missing value made them floats
COUNTS = re.compile(r"^(n|n_\w+|\w+_count|count|seeds?|seeds_needed|images|steps|epochs?|batch|\w*bits|parameters"
                    r"|flops|FLOPs)$")


def _name(column, sep: str) -> str:
    """A column label as text; the levels of a tuple label (from ``agg``) joined by ``sep``."""
    return sep.join(str(c) for c in column if str(c)) if isinstance(column, tuple) else str(column)


def header(column) -> str:
    """The header a reader sees for a raw column name (tuples from ``agg`` are joined)."""
    name = _name(column, " ")
    unit = next((u for pattern, u in UNITS if pattern.search(name)), None)
    text = DROP_SUFFIX.sub("", name).replace("_", " ")
    return f"{text} ({unit})" if unit and unit not in text.split() else text


def _is_count(values: pd.Series, name: str) -> bool:
    """Integers; floats that are all whole in a column that counts things (a missing value makes
    a count column float); or whole floats large enough to be counts. Small whole floats of
    other columns stay decimals, so a pivot's accuracy columns are formatted alike."""
    if values.dtype.kind in "iu":
        return True
    present = values.dropna()
    whole = len(present) > 0 and bool((present == present.round()).all())
    return whole and (bool(COUNTS.match(name)) or present.abs().max() >= 100)


def _format_column(values: pd.Series, digits: int, column) -> pd.Series:
    name = _name(column, "_")
    if values.dtype == bool or values.dtype.kind not in "iuf":
        return values.map(lambda v: MISSING if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    if _is_count(values, name) and "(%)" not in header(column):
        return values.map(lambda v: MISSING if pd.isna(v) else f"{int(v):,}")
    places = decimals(values, digits)
    return values.map(lambda v: MISSING if pd.isna(v) else f"{v:,.{places}f}")


def decimals(values: pd.Series, digits: int = 2, significant: int = 2, most: int = 8) -> int:
    """``digits``, unless a nonzero value of the column would print as zero (a learning rate of
    0.003, a p-value): then enough decimals for ``significant`` digits of the smallest one."""
    present = values.dropna().abs()
    smallest = present[present > 0].min() if (present > 0).any() else None
    if smallest is None or round(smallest, digits) > 0:
        return digits
    return min(most, int(math.floor(-math.log10(smallest))) + significant)


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with a named or multi-level index turned into leading columns."""
    return df.reset_index() if not isinstance(df.index, pd.RangeIndex) or df.index.name is not None else df


def frame(df: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """A copy of ``df`` as strings with readable headers and no 0..n index.

    Parameters
    ----------
    df : the raw table; a named or multi-level index becomes leading columns.
    digits : decimals of non-integer numbers.
    """
    flat = _flat(df)
    names = [header(c) for c in flat.columns]
    columns = [_format_column(flat.iloc[:, i], digits, c) for i, c in enumerate(flat.columns)]
    return pd.DataFrame(dict(zip(range(len(names)), columns))).set_axis(names, axis=1)


def markdown(df: pd.DataFrame, digits: int = 2) -> str:
    """``frame(df)`` as a Markdown table; numeric columns right-aligned."""
    flat = _flat(df)
    align = ["right" if flat.iloc[:, i].dtype.kind in "iuf" else "left" for i in range(flat.shape[1])]
    return frame(df, digits).to_markdown(index=False, disable_numparse=True, colalign=align)


def show(df: pd.DataFrame, caption: str = "", digits: int = 2) -> Markdown:
    """What a notebook cell ends with to show a table: Markdown, so JupyterLab renders it with
    the notebook's own typography and nbval compares its text. ``caption`` names what the
    cells of a pivot table hold (e.g. ``"validation accuracy (%)"``)."""
    head = f"**{caption}**\n\n" if caption else ""
    return Markdown(head + markdown(df, digits))
