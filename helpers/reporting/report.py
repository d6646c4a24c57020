"""Small result tables and the README's results block, generated from saved metrics."""
from __future__ import annotations

import re
import statistics
from pathlib import Path

import pandas as pd

from ..core import checkpoint, config, measure
from . import findings, tables

README = config.REPO_ROOT / "README.md"


def model_metrics(model, test: dict, input_size: int) -> dict:
    """Test accuracy and loss beside parameters, FLOPs and size on disk."""
    cost = measure.cost(model, input_size)
    return {"test_acc": round(test["acc"], 2), "test_loss": round(test["loss"], 4),
            "parameters": cost["parameters"], "flops": cost["flops"], "size_MB": round(cost["size_MB"], 3),
            "size_MiB": round(measure.size_on_disk(model)["MiB"], 3)}


def training_metrics(history: pd.DataFrame) -> dict:
    """Epochs, training time (minutes, summed over every epoch, so over every segment of a
    resumed run) and throughput (images over that time)."""
    seconds = history["epoch_s"].sum()
    images = (history["img_per_s"] * history["epoch_s"]).sum()
    return {"epochs": len(history), "train_minutes": round(seconds / 60, 2),
            "train_img_per_s": round(images / seconds, 1)}


def write_table(df: pd.DataFrame, folder: Path, name: str, readable: bool = True) -> Path:
    """Save ``df`` as ``name.csv`` (the data) and, unless ``readable`` is false (a table of
    machine data, such as per-image hits), ``name.md`` (for reading) in ``folder``."""
    checkpoint.save_text(df.to_csv(index=False), Path(folder) / f"{name}.csv")
    if readable:
        checkpoint.save_text(df.to_markdown(index=False) + "\n", Path(folder) / f"{name}.md")
    return Path(folder) / f"{name}.csv"


def read_table(folder: Path, name: str) -> pd.DataFrame:
    path = Path(folder) / f"{name}.csv"
    if not path.exists():
        raise checkpoint.CheckpointError(f"{path} does not exist: run the notebooks of that "
                                         "profile first (python -m helpers.tools.run)")
    return pd.read_csv(path)


def _readme_block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)


def readme_blocks(profile: str = "cpu") -> dict[str, str]:
    """The README's generated blocks: the results (from the profile's saved tables) and the
    profiles table (from ``config``)."""
    return {"results": results_markdown(profile), "profiles": profiles_markdown()}


def update_readme(profile: str = "cpu", readme: Path = README) -> str:
    """Replace the README's generated blocks with the text generated now (:func:`readme_blocks`)."""
    text = readme.read_text()
    for name, block in readme_blocks(profile).items():
        if not _readme_block(name).search(text):
            raise ValueError(f"{readme} has no '<!-- {name}:start -->' ... '<!-- {name}:end -->' block")
        text = _readme_block(name).sub(lambda m, b=block: m.group(1) + b + m.group(2), text)
    checkpoint.save_text(text, readme)
    return text


PROSE_NUMBER = re.compile(r"(?<![\w.\-/])(?P<num>\d{1,3}(?:,\d{3})+|\d+\.\d+|\d+)"
                          r"(?P<unit>\s?(?:%|(?:x|ms|s|min|MB|KB|GB|GiB|points?|epochs?|images|seeds?)\b))?"
                          r"(?![\w\-/])")
"""A number in prose that states a quantity: a decimal, a thousands-separated number, or any
number with a unit (``57.85``, ``40,000``, ``4 MB``, ``75 %``); bare small integers (notebook
numbers, "2 CPU cores", years) are not."""


def _blank(m: re.Match) -> str:
    """A match replaced by its line breaks alone (line numbers keep counting in the text)."""
    return "\n" * m.group(0).count("\n")


def prose_numbers(text: str) -> list[tuple[int, str]]:
    """``(line, number)`` for each :data:`PROSE_NUMBER` in Markdown written by hand: outside
    generated blocks (``<!-- name:start -->`` ... ``<!-- name:end -->``), code blocks and inline
    code. Line numbers count in ``text``."""
    text = re.sub(r"<!-- (\w+):start -->.*?<!-- \1:end -->", _blank, text, flags=re.S)
    text = re.sub(r"```.*?```", _blank, text, flags=re.S)
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        for m in PROSE_NUMBER.finditer(re.sub(r"`[^`]*`", "", line)):
            if m["unit"] or not m["num"].isdigit():
                out.append((i, m.group(0)))
    return out


MEANT_FOR = {"smoke": "CI and nbval (minutes)", "cpu": "2 CPU cores", "paper": "a GPU: the report's setting",
             "paper_scratch": "a GPU"}
"""The README's "meant for" column (every profile has an entry; a test checks)."""


def profiles_markdown() -> str:
    """The README's profiles table, written from the profiles' settings."""
    rows = []
    for name in config.PROFILES:
        p = config.get_profile(name)
        size = f" at {p.input_size}x{p.input_size}" if p.input_size != 32 else ""
        if p.dataset == "synthetic":
            what = (f"generated, {p.synthetic_train_per_class} train ({p.val_per_class} held out) / "
                    f"{p.synthetic_test_per_class} test images per class")
        else:
            what = (f"CIFAR-100{size}: {100 * (500 - p.val_per_class):,} train / {100 * p.val_per_class:,} "
                    f"validation / 10,000 test")
        net = (f"torchvision VGG-16{', ImageNet weights' if p.pretrained else ''}, 100-class head" if p.arch == "vgg16"
               else f"VGG-16-BN, {'full width' if p.width == 1 else f'width {p.width:g}'}")
        label = f"`{name}`" + (" (default)" if name == config.DEFAULT_PROFILE else "")
        rows.append(f"| {label} | {what} | {net}, {p.epochs} epochs | {MEANT_FOR[name]} |")
    return "\n".join(["| profile | data | model | meant for |", "|---|---|---|---|", *rows]) + "\n"


HEADLINE_COLUMNS = ["route", "criterion", "filters_removed_or_sparsity", "weight_bits", "compression_x", "flops_x",
                    "test_acc_mean", "test_acc_std", "drop_points", "n_seeds"]


def results_markdown(profile: str = "cpu") -> str:
    """The README's results block: the baseline, then notebook 06's headline where a point was
    reached (per route and criterion, the largest compression within the profile's margin, with
    test accuracy there), and the link to the full report."""
    folder, p = config.FIGURES_ROOT / profile, config.get_profile(profile)
    base = read_table(folder, "baseline_metrics").iloc[0]
    text = (f"Per route and criterion, the largest compression whose validation accuracy (mean over seeds) "
            f"stays {findings.within(p.headline_max_drop)} of the baseline, and the test accuracy there. "
            f"Baseline {p.arch} (width {p.width:g}): test accuracy {base.test_acc:.2f} %, "
            f"{int(base.parameters):,} parameters, {base.size_MB:.2f} MB.\n\n")
    if (folder / "headline.csv").exists():
        head = read_table(folder, "headline")
        text += tables.markdown(head[head["n_seeds"] > 0][HEADLINE_COLUMNS].reset_index(drop=True)) + "\n\n"
    return text + (f"Every route and criterion, the paired intervals, the low-data study and the budget study: "
                   f"[figures/{profile}/REPORT.md](figures/{profile}/REPORT.md).\n")


def speed_ratios(bench: pd.DataFrame) -> pd.DataFrame:
    """The speed benchmark's speed-up / FLOPs ratio, one row per (model, pruned, form), one
    column per batch size."""
    return bench.pivot_table(index=["model", "pruned", "form"], columns="batch",
                             values="speedup_over_flops_ratio", sort=False)


def report_markdown(profile: str, headline: pd.DataFrame, findings: list[str],
                    sections: dict[str, pd.DataFrame], figures: dict[str, str]) -> str:
    """``figures/<profile>/REPORT.md``: generated from the results, so it cannot go stale. Its
    wall-time section is the marked ``times`` section (:func:`times_markdown`), which the
    batch runner rewrites after every notebook."""
    lines = [f"# Results: {profile} profile", "",
             "Generated by `notebooks/08_results.ipynb` from the saved metrics; do not edit by hand.",
             "Sizes are in MB (10^6 bytes); latency is the median CPU wall time on 2 threads.", "",
             "## What the numbers show", ""] + [f"- {f}" for f in findings] + \
            ["", "## The original report's table, per criterion", "", tables.markdown(headline), ""]
    for title, table in sections.items():
        lines += [f"## {title}", "", tables.markdown(table), ""]
    lines += ["## Figures", ""] + [f"![{cap}]({name}.png)" + "\n" for name, cap in figures.items()]
    return "\n".join(lines)


def times_markdown(times: dict[str, list[dict]], budget_min: float = 0.0,
                   series: list[str] | None = None) -> str:
    """REPORT.md's "Wall time of the series": :func:`time_sentence` and :func:`times_table`."""
    return "\n".join(["## Wall time of the series", "",
                      time_sentence(times, budget_min, series) + speed_sentence(times), "",
                      "Finished training runs, fine-tuned runs and study blocks are reused, so a rerun can "
                      "take far less than a run from scratch (README lists both).", "",
                      tables.markdown(times_table(times))])


def times_table(times: dict[str, list[dict]]) -> pd.DataFrame:
    """One row per notebook: invocations recorded, how many of them did not finish (failed or
    interrupted), the last finished one's minutes and the minutes summed over all of them."""
    return pd.DataFrame([{"notebook": name, "invocations": len(runs),
                          "not finished": sum(not r["finished"] for r in runs),
                          "last finished (min)": next((r["seconds"] / 60 for r in reversed(runs) if r["finished"]),
                                                      None),
                          "all invocations (min)": sum(r["seconds"] for r in runs) / 60}
                         for name, runs in times.items()],
                        columns=["notebook", "invocations", "not finished", "last finished (min)",
                                 "all invocations (min)"])


def time_sentence(times: dict[str, list[dict]], budget_min: float = 0.0,
                  series: list[str] | None = None) -> str:
    """What the recorded invocations add up to. It is the cost of a run from scratch only when
    every notebook of ``series`` (when given) is recorded and none ran again after finishing
    (interrupted invocations that were then resumed do count: together they are one run); only
    then is it judged against the profile's target."""
    if not times:
        return "No wall times recorded (the series was not run with `python -m helpers.tools.run`)."
    t = times_table(times)
    total = t["all invocations (min)"].sum()
    text = (f"The notebooks took {total:.1f} min of wall time, summed over the {t['invocations'].sum()} "
            f"invocations recorded for this artifacts folder ({t['not finished'].sum()} of them "
            f"interrupted or failed, their time included)")
    rerun = {name: len(runs) for name, runs in times.items() if any(r["finished"] for r in runs[:-1])}
    missing = [name.split("_")[0] for name in series or [] if name not in times]
    not_judged = f" and is not judged against the {budget_min:g}-min target" if budget_min else ""
    if rerun:
        listed = ", ".join(f"{name.split('_')[0]}: {n} invocations" for name, n in rerun.items())
        text += f". Notebooks ran again after finishing ({listed}), so this is more than one run from scratch costs"
        return text + (not_judged + " (README: the measured run from scratch)" if budget_min else "") + "."
    if missing:
        return (text + f". Not recorded yet: {', '.join(missing)} (the runner adds each notebook when it "
                "ends and rewrites this section), so this is not yet the whole series" + not_judged + ".")
    if budget_min:
        verdict = "met" if total <= budget_min else f"missed by {total - budget_min:.1f} min"
        text += f": one run from scratch; target for the whole series {budget_min:g} min: {verdict}"
    return text + "."


def speed_sentence(times: dict[str, list[dict]]) -> str:
    """The machine's speed while the recorded invocations ran (their ``reference_step_s``, one
    training step measured as each runner invocation started), and the series' cost in those
    steps, which compares across days the machine ran at different speeds; empty if none."""
    runs = [r for v in times.values() for r in v]
    refs = [r for r in runs if "reference_step_s" in r]
    if not refs:
        return ""
    steps = [r["reference_step_s"] for r in refs]
    med = statistics.median(steps)
    cost = sum(r["seconds"] / r["reference_step_s"] for r in refs)
    return (f" The reference training step took {med:.3f} s (median over the {len(refs)} invocations that "
            f"measured it{'' if len(refs) == len(runs) else f' of {len(runs)}'}; {min(steps):.3f}-{max(steps):.3f} s): "
            f"those invocations cost {cost / 1000:.1f} thousand reference steps (minutes compare across "
            f"days only in these steps: the machine's speed drifts).")


def _section(name: str) -> re.Pattern:
    return re.compile(rf"<!-- {name}:start -->\n.*?<!-- {name}:end -->\n?", re.S)


def update_section(path: Path, name: str, markdown: str) -> str:
    """Put ``markdown`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` in the file at
    ``path`` (replacing the section, or appending it; creating the file), atomically. A notebook
    other than 08 writes its part of ``REPORT.md`` this way; :func:`write_report` keeps it."""
    block = f"<!-- {name}:start -->\n{markdown.rstrip()}\n<!-- {name}:end -->\n"
    old = Path(path).read_text() if Path(path).exists() else ""
    new = _section(name).sub(lambda m: block, old) if _section(name).search(old) else \
        (old.rstrip() + "\n\n" if old.strip() else "") + block
    checkpoint.save_text(new, path)
    return new


LEAD = ("verdict", "headline")
"""REPORT.md's sections that come first: the answer at a glance, then the headline."""


def write_report(text: str, path: Path) -> str:
    """Write ``REPORT.md`` with ``text``, keeping every marked section of the existing file;
    the :data:`LEAD` sections lead, in that order, right after the title."""
    old = Path(path).read_text() if Path(path).exists() else ""
    found = list(re.finditer(r"<!-- (\w+):start -->\n.*?<!-- \1:end -->\n?", old, re.S))
    lead = "".join("\n" + m.group(0).rstrip() + "\n" for name in LEAD for m in found if m.group(1) == name)
    kept = "".join("\n" + m.group(0).rstrip() + "\n" for m in found if m.group(1) not in LEAD)
    title, _, rest = text.rstrip().partition("\n")
    new = title + "\n" + lead + rest + "\n" + kept
    checkpoint.save_text(new, path)
    return new


def readme_block(readme: Path = README, name: str = "results") -> str:
    """The text of the README's generated block ``name`` (empty when it has none)."""
    m = _readme_block(name).search(readme.read_text())
    return m.group(0)[len(m.group(1)):-len(m.group(2))] if m else ""


if __name__ == "__main__":
    import sys
    update_readme(sys.argv[1] if len(sys.argv) > 1 else "cpu")


def speed_finding(bench: pd.DataFrame, target: float = 0.8) -> str:
    """One sentence on the speed benchmark: speed-up / FLOPs ratio at batch 1 and 256 for each
    network, pruned model and form, and which of them meet ``target`` at both batch sizes."""
    ratios = speed_ratios(bench)
    parts = [f"{m}, {p}, {f}: " + " / ".join(f"{v:.2f}" for v in r) for (m, p, f), r in ratios.iterrows()]
    met = [f"{m}, {p}, {f}" for (m, p, f), r in ratios.iterrows() if (r >= target).all()]
    return (f"Speed benchmark at about half the FLOPs (speed-up / FLOPs ratio at batch "
            f"{' / '.join(str(b) for b in ratios.columns)}; target {target} at both): " + "; ".join(parts) +
            ". Target met at both batch sizes by " + ("; ".join(met) if met else "none") + ".")
