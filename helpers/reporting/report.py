"""Small result tables and the README's results block, generated from saved metrics."""
from __future__ import annotations

import re
import statistics
from pathlib import Path

import pandas as pd

from ..core import checkpoint, config, measure
from . import tables

README = config.REPO_ROOT / "README.md"
_BLOCK = re.compile(r"(<!-- results:start -->\n).*?(<!-- results:end -->)", re.S)


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


def write_table(df: pd.DataFrame, folder: Path, name: str) -> Path:
    """Save ``df`` as ``name.csv`` (the data) and ``name.md`` (for reading) in ``folder``."""
    checkpoint.save_text(df.to_csv(index=False), Path(folder) / f"{name}.csv")
    checkpoint.save_text(df.to_markdown(index=False) + "\n", Path(folder) / f"{name}.md")
    return Path(folder) / f"{name}.csv"


def read_table(folder: Path, name: str) -> pd.DataFrame:
    path = Path(folder) / f"{name}.csv"
    if not path.exists():
        raise checkpoint.CheckpointError(f"{path} does not exist: run the notebooks of that "
                                         "profile first (python -m helpers.tools.run)")
    return pd.read_csv(path)


def baseline_markdown(profile: str = "cpu") -> str:
    """The README's baseline section, from ``figures/<profile>/baseline_metrics.csv``."""
    folder = config.FIGURES_ROOT / profile
    m = read_table(folder, "baseline_metrics").iloc[0]
    rows = [("test top-1 accuracy", f"{m.test_acc:.2f} %"), ("test loss", f"{m.test_loss:.3f}"),
            ("parameters", f"{int(m.parameters):,}"), ("FLOPs per image", f"{int(m.flops) / 1e6:.1f} M"),
            ("size on disk", f"{m.size_MB:.2f} MB ({m.size_MiB:.2f} MiB)"),
            ("training time", f"{m.train_minutes:.1f} min for {int(m.epochs)} epochs"),
            ("training throughput", f"{m.train_img_per_s:.0f} images/s")]
    table = pd.DataFrame(rows, columns=["baseline (" + profile + " profile)", "value"])
    return (table.to_markdown(index=False) + "\n\n"
            f"![training curves](figures/{profile}/baseline_training_curves.png)\n")


def update_readme(profile: str = "cpu", readme: Path = README) -> str:
    """Replace the README's results block with the text generated from saved results."""
    text = readme.read_text()
    if not _BLOCK.search(text):
        raise ValueError(f"{readme} has no '<!-- results:start -->' ... '<!-- results:end -->' block")
    new = _BLOCK.sub(lambda m: m.group(1) + results_markdown(profile) + m.group(2), text)
    checkpoint.save_text(new, readme)
    return new


def results_markdown(profile: str = "cpu") -> str:
    """The README's results block: the headline of 06 first, the fine-tuning budget study
    (``python -m helpers.studies.budget``, when run), then the report's table of 08, the speed
    benchmark, the low-data study (when present) and the baseline."""
    folder = config.FIGURES_ROOT / profile
    text = saved_section(folder, profile, "headline") + saved_section(folder, profile, "budget")
    if (folder / "results_headline.csv").exists():
        head = read_table(folder, "results_headline")
        text += ("Secondary, the original report's operating point and table: every criterion gets the "
                 "report's architecture (weights pruned globally by magnitude to 80 % sparsity, each "
                 "layer's sparsity - 0.01 is its fraction of filters removed) and chooses within each "
                 "layer by its own scores, then is fine-tuned one-shot with the recipe and budget of "
                 "the headline; the LRP run best on validation is then quantized. Test split; sizes in "
                 "MB (10^6 bytes); latency on 2 CPU "
                 f"threads. Full report: [figures/{profile}/REPORT.md](figures/{profile}/REPORT.md).\n\n"
                 + tables.markdown(head) + "\n\n"
                 f"![accuracy against size and latency](figures/{profile}/results_pareto.png)\n\n")
    if (folder / "structured_speed_benchmark.csv").exists():
        bench = read_table(folder, "structured_speed_benchmark")
        ratio = speed_ratios(bench)
        ratio.columns = [f"batch {b}" for b in ratio.columns]
        text += ("Does structured pruning to about half the FLOPs halve CPU latency? Speed-up divided by "
                 "the FLOPs ratio, baseline and pruned timed side by side (target: at least 0.8 at both "
                 "batch sizes):\n\n" + tables.markdown(ratio) + "\n\n")
    text += saved_section(folder, profile, "lowdata")
    return text + baseline_markdown(profile)


def saved_section(folder: Path, profile: str, name: str) -> str:
    """A notebook's marked section of ``REPORT.md`` (its words, tables and figure, read from the
    saved file) for the README: headings one level down, figure links from the repository root."""
    report_md = Path(folder) / "REPORT.md"
    m = _section(name).search(report_md.read_text()) if report_md.exists() else None
    body = m.group(0).split("\n", 1)[1].rsplit(f"<!-- {name}:end -->", 1)[0] if m else ""
    body = re.sub(r"\]\((?!http)([\w.-]+\.png)\)", rf"](figures/{profile}/\1)", body).replace("## ", "### ")
    return body.strip() + "\n\n" if body.strip() else ""


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


def write_report(text: str, path: Path) -> str:
    """Write ``REPORT.md`` with ``text``, keeping every marked section of the existing file;
    the ``headline`` section leads, right after the title."""
    old = Path(path).read_text() if Path(path).exists() else ""
    found = list(re.finditer(r"<!-- (\w+):start -->\n.*?<!-- \1:end -->\n?", old, re.S))
    lead = "".join("\n" + m.group(0).rstrip() + "\n" for m in found if m.group(1) == "headline")
    kept = "".join("\n" + m.group(0).rstrip() + "\n" for m in found if m.group(1) != "headline")
    title, _, rest = text.rstrip().partition("\n")
    new = title + "\n" + lead + rest + "\n" + kept
    checkpoint.save_text(new, path)
    return new


def readme_block(readme: Path = README) -> str:
    m = _BLOCK.search(readme.read_text())
    return m.group(0)[len("<!-- results:start -->\n"):-len("<!-- results:end -->")] if m else ""


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
