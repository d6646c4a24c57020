"""A pytest plugin for nbval: cells tagged ``nbval-shape`` are compared by their shape.

Some outputs of the smoke series are not only numbers of the training trajectory but choices
made by it: which filters a global allocation keeps (so the parameter counts of a pruned
network), which criterion ranks first, which rule the search picks, which differences resolve.
Another CPU sums in another order, trains another network and makes other choices, so these
cells cannot be compared digit by digit. A cell tagged ``nbval-shape`` is compared, after the
sanitiser every cell goes through (``tests/nbval_sanitize.cfg``), with :data:`PATTERNS` applied
on both sides: what is left is its shape (headers, the number of table rows, the words of each
line, each finding's opening words). A cell that raises, loses or gains a row, a column or a
finding, or changes its wording, still fails.

Loaded with ``-p helpers.tools.nbval_shape`` (``pyproject.toml`` adds it to every pytest run).
"""
from __future__ import annotations

import re

from ..core.vocabulary import ALLOCATIONS, COMPOSITES, CRITERIA

TAG = "nbval-shape"


def _names(names) -> str:
    """A regex alternation of whole words, longest first (``lrp_zplus`` before ``lrp``)."""
    return r"\b(?:" + "|".join(sorted(names, key=len, reverse=True)) + r")\b"


# Each (pattern, replacement) is applied in order, on both the stored and the fresh output.
PATTERNS = [
    # stock LRP composites a setting picked (first: their names hold digits, masked next)
    (re.compile(_names(COMPOSITES)), "<composite>"),
    # whole numbers: counts the trajectory chose (kept filters, parameters, seeds needed); a table's
    # True or False (resolved or not), and its dash for a missing value (no run finished there)
    (re.compile(r"\d+(?:,\d{3})*|\b(?:True|False)\b|(?<= )–(?= )"), "#"),
    # names the trajectory ranks or picks: criteria, allocations, searched LRP rules
    (re.compile(_names([*CRITERIA, "lrp_zplus"])), "<criterion>"),
    (re.compile(_names(ALLOCATIONS)), "<allocation>"),
    (re.compile(r"depth:\S+"), "<rule>"),
    # verdicts read off the trajectory's numbers
    (re.compile(r"\b(?:met|missed|ahead|behind|tied|not within|within)\b"), "<verdict>"),
    # a finding (a Markdown list item) by its opening words, up to its first number or name
    (re.compile(r"^(- [^#<:]*).*$", re.MULTILINE), r"\1…"),
    # column widths follow the names masked above
    (re.compile(r" {2,}"), " "),
]


def shape(text):
    """``text`` with :data:`PATTERNS` applied; anything but a string is returned as it is."""
    if not isinstance(text, str):
        return text
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _tagged(item) -> bool:
    cell = getattr(item, "cell", None)
    return cell is not None and TAG in cell.get("metadata", {}).get("tags", [])


def pytest_collection_modifyitems(items):
    """Give every nbval cell tagged :data:`TAG` a sanitiser that also applies :func:`shape`."""
    for item in items:
        if _tagged(item) and hasattr(item, "sanitize"):
            sanitize = item.sanitize
            item.sanitize = lambda text, _sanitize=sanitize: shape(_sanitize(text))
