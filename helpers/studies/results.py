"""The results notebook's tables: everything read back from saved metrics and models.

Also the original report's pipeline applied to torchvision VGG-16 as *architecture
arithmetic*: parameter count and size on disk after its pruning recipe, no accuracy.
"""
from __future__ import annotations

import re

import pandas as pd
import torch

from ..core import artifacts, checkpoint, config, measure, models, stats
from ..core.vocabulary import COMBINED, COMPUTE, INT8_ROUTES, LRP
from ..methods import criteria, pruning
from ..reporting import report
from ..reporting import findings as sentences
from ..methods.training import load_artifact
from . import recipe, routes
from .verdict import section as verdict_section
from .verdict import table as verdict_table

REPORT_CLAIM = {"baseline_acc": 74.44, "baseline_loss": 1.055, "pruned_acc": 74.15,
                "pruned_loss": 1.186, "size_before_MB": 527.8, "size_after_MB": 46.3}


TABLES = {"baseline_metrics": "01", "relevance_timing": "02", "relevance_benchmark": "02",
          "unstructured_sweep": "03",
          "structured_allocations": "04", "structured_sweep": "04", "structured_speed_benchmark": "04",
          "lowdata_auc": "05", "lowdata_confirm": "05",
          "finetune_recipe": "06", "headline": "06", "headline_paired": "06", "headline_points": "06",
          "headline_per_seed": "06", "finetune_results": "06",
          "quantization_results": "07", "quantization_targets": "07"}
"""The saved tables notebook 08 reads, and the notebook that writes each."""
QUANTIZED_FROM = ("finetune_recipe", "headline", "headline_per_seed")
"""The tables :func:`best_network` reads (notebook 07 reads them before it writes its own)."""


NOT_ASKED = {"lowdata_confirm": (lambda p: p.lowdata_confirm_per_class == 0,
                                 ("kind", "bn_recalibrated", "ref_per_class", "lrp", "other", "diff_mean",
                                  "diff_low", "diff_high", "p_holm", "verdict"))}
"""Tables a profile may ask not to make (05's confirmation, ``lowdata_confirm_per_class`` 0, as on
a subset too small to hold one): where it did, an empty table with these columns stands in."""


def load_tables(p: config.Profile, names: tuple[str, ...] = tuple(TABLES)) -> dict[str, pd.DataFrame]:
    """The saved tables ``names`` (default: every one of notebooks 01-07); a missing one names
    the notebook to run, unless the profile asked for none (:data:`NOT_ASKED`)."""
    tables = {}
    for name, nb in {n: TABLES[n] for n in names}.items():
        try:
            tables[name] = report.read_table(p.figures, name)
        except checkpoint.CheckpointError:
            if name in NOT_ASKED and NOT_ASKED[name][0](p):
                tables[name] = pd.DataFrame(columns=list(NOT_ASKED[name][1]))
                continue
            raise checkpoint.CheckpointError(f"{p.figures / (name + '.csv')} is missing: run notebook {nb} "
                                             f"of the {p.name} profile first") from None
    return tables


def latencies(p: config.Profile, runs: pd.DataFrame, head_runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """CPU latency (2 threads, batch 1 and 256) measured now, side by side, of the baseline
    (``criterion`` ``baseline``), each criterion's fine-tuned model at the report's operating
    point (``runs``: :func:`helpers.studies.routes.load_report_runs`), and each route's headline
    network per criterion (``head_runs``: :func:`headline_runs`; ``route`` set). Each uses its
    first seed's model: seeds differ in which filters go, hardly in the architecture."""
    nets = {("", "baseline"): load_artifact(artifacts.baseline(p))[0]}
    ok = runs[runs["status"] == "ok"].assign(route="")
    for r in pd.concat([ok, head_runs]).sort_values("seed", kind="stable").drop_duplicates(["route", "criterion"]) \
            .itertuples():
        nets[(r.route, r.criterion)] = _network(p, r.route, r.run)
    return pd.DataFrame([{"route": route, "criterion": c, **t}
                         for (route, c), t in measure.latency_pairs(nets, p.input_size, p.latency_budget_s).items()])


def _network(p: config.Profile, route: str, run: str) -> torch.nn.Module:
    """A fine-tuned run's float network as timed: a masked route's (size, combined) with its
    masks folded in (:func:`helpers.studies.routes.fine_tuned`; dense kernels, so zeros cost
    the same time), every other route's saved model."""
    if route in INT8_ROUTES:
        return routes.fine_tuned(artifacts.finetuned(p, run).path)
    return load_artifact(artifacts.finetuned_model(p, run))[0]


def headline_runs(t: dict[str, pd.DataFrame], p: config.Profile) -> pd.DataFrame:
    """The finished runs (every seed) of each route's headline network per criterion (the point
    and weight grid notebook 06 chose on validation, ``headline.csv``), each with ``run``, its
    artifact name (:func:`helpers.core.artifacts.finetuned_model`)."""
    folder = recipe.folder(p, recipe.choose(t["finetune_recipe"])).name
    head = t["headline"].dropna(subset=["filters_removed_or_sparsity"])
    rows = t["headline_per_seed"]
    on = ["route", "criterion", "point", "weight_bits"]
    at = rows[rows["status"] == "ok"].merge(head.rename(columns={"filters_removed_or_sparsity": "point"})[on], on=on)
    tags = [f"_f{r.fraction:g}" if r.route == COMBINED else "" for r in at.itertuples()]
    return at.assign(run=[f"{folder}/{routes.run_name(r.route, r.criterion, r.point, r.seed, tag)}"
                          for r, tag in zip(at.itertuples(), tags)])


def best_network(t: dict[str, pd.DataFrame], p: config.Profile) -> str:
    """The network notebook 07 quantizes: the compute route's headline network with the largest
    parameter reduction (its point chosen on validation), in its seed with the best validation
    accuracy; the report's best LRP run when the compute route has no headline network."""
    runs = headline_runs(t, p)
    compute = runs[runs["route"] == COMPUTE]
    if compute.empty:
        return routes.best_run(routes.load_report_runs(p), LRP)
    top = compute.groupby("criterion")["compression_x"].mean().idxmax()
    return stats.select_best(compute[compute["criterion"] == top])["run"]


RUN_NAME = re.compile(r"(?P<route>[a-z]+)(?:_f(?P<fraction>[0-9.e-]+))?_(?P<name>.+)_(?P<point>[^_]+)"
                      r"_s(?P<seed>[0-9]+)")
"""A run's folder name (:func:`helpers.studies.routes.run_name`), read back."""


def network_label(run: str) -> str:
    """A run's artifact name as a reader's label: ``routes_lr0.03_kd0.9/compute_taylor_0.15_s2``
    -> ``compute route, taylor, 0.15, seed 2``."""
    m = RUN_NAME.fullmatch(run.split("/")[-1])
    if m is None:
        return run
    start = f" from {m['fraction']} of the filters" if m["fraction"] else ""
    return f"{m['route']} route{start}, {m['name']}, {m['point']}, seed {m['seed']}"


def report_format(t: dict[str, pd.DataFrame], lat: pd.DataFrame) -> pd.DataFrame:
    """The original report's table for each criterion (test accuracy and loss:
    mean over seeds; ``n_seeds`` and ``test_acc_std`` beside them), plus cost columns, and the
    variants of the network notebook 07 quantized (named by its ``network`` column)."""
    base = t["baseline_metrics"].iloc[0]
    lat = lat[lat["route"] == ""].drop(columns="route")
    runs = seed_means(t["finetune_results"]).merge(lat, on="criterion")
    b = lat[lat["criterion"] == "baseline"].iloc[0]
    rows = [{"model": "baseline", "test_acc": base.test_acc, "test_loss": base.test_loss,
             "size_MB": base.size_MB, "compression_%": 0.0, "parameters": int(base.parameters),
             "FLOPs": int(base.flops), "latency_b1_ms": b.latency_b1_ms, "latency_b256_ms": b.latency_b256_ms}]
    for _, r in runs.iterrows():
        rows.append({"model": f"{r.criterion}, pruned + fine-tuned", "n_seeds": r.n_seeds,
                     "test_acc": r.test_acc, "test_acc_std": r.test_acc_std, "test_loss": r.test_loss,
                     "size_MB": r.size_MB,
                     "compression_%": 100 * (1 - r.size_MB / base.size_MB), "parameters": int(r.parameters),
                     "FLOPs": int(r.flops), "latency_b1_ms": r.latency_b1_ms, "latency_b256_ms": r.latency_b256_ms})
    q = t["quantization_results"]
    quantized = q["network"].iloc[0]
    for _, r in q[q["variant"].isin(["int8 static", "int8 dynamic (linear)", "bf16 storage"])].iterrows():
        rows.append({"model": f"{quantized} + {r.variant}", "test_acc": r.test_acc, "test_loss": r.test_loss,
                     "size_MB": r.size_MB, "compression_%": 100 * (1 - r.size_MB / base.size_MB),
                     "latency_b1_ms": r.latency_b1_ms, "latency_b256_ms": r.latency_b256_ms})
    return pd.DataFrame(rows)


def networks(t: dict[str, pd.DataFrame], head_runs: pd.DataFrame, lat: pd.DataFrame) -> pd.DataFrame:
    """The results figure's networks, one row each (``group``, ``label``): the baseline; each
    route's headline network per criterion (test accuracy and file size: mean and standard
    deviation over its seeds; latency of :func:`latencies`); the int8 static model of the
    network notebook 07 quantized (its latency compiled, as 07 measured it); and the report's
    operating point per criterion."""
    base = t["baseline_metrics"].iloc[0]
    b1 = lat.set_index(["route", "criterion"])["latency_b1_ms"]
    rows = [{"group": "baseline", "label": "baseline", "criterion": "", "test_acc": base.test_acc, "test_acc_std": 0.0,
             "size_MB": base.size_MB, "size_MB_std": 0.0, "latency_b1_ms": b1[("", "baseline")], "n": 1}]
    for (route, c), g in head_runs.groupby(["route", "criterion"], sort=False):
        rows.append({"group": f"{route} route", "label": f"{c}, {route} route", "criterion": c,
                     "test_acc": g["test_acc"].mean(), "test_acc_std": g["test_acc"].std(ddof=1),
                     "size_MB": g["size_MB"].mean(), "size_MB_std": g["size_MB"].std(ddof=1),
                     "latency_b1_ms": b1[(route, c)], "n": len(g)})
    q = t["quantization_results"].set_index("variant").loc["int8 static"]
    rows.append({"group": "int8 static", "label": f"{q.network}, int8 static", "criterion": "",
                 "test_acc": q.test_acc, "test_acc_std": 0.0, "size_MB": q.size_MB, "size_MB_std": 0.0,
                 "latency_b1_ms": q.latency_b1_ms, "n": 1})
    for r in seed_means(t["finetune_results"]).itertuples():
        rows.append({"group": "report's operating point", "label": f"{r.criterion}, report's operating point",
                     "criterion": r.criterion, "test_acc": r.test_acc, "test_acc_std": r.test_acc_std,
                     "size_MB": r.size_MB, "size_MB_std": 0.0, "latency_b1_ms": b1[("", r.criterion)], "n": r.n_seeds})
    return pd.DataFrame(rows)


def seed_means(runs: pd.DataFrame) -> pd.DataFrame:
    """Fine-tuned runs averaged over seeds per criterion (``n_seeds``, ``test_acc_std``)."""
    g = runs[runs["status"] == "ok"].groupby("criterion", sort=False)
    out = g.mean(numeric_only=True).drop(columns=["seed"]).reset_index()
    return out.assign(n_seeds=g.size().values, test_acc_std=g["test_acc"].std(ddof=1).fillna(0.0).values)


def report_arithmetic(sparsity: float = 0.8, margin: float = 0.01, seed: int = 0) -> pd.DataFrame:
    """The original report's recipe on torchvision VGG-16 with a 100-class head (random
    weights, as the ImageNet weights need internet): global unstructured pruning by weight
    magnitude, per-layer filter ratios = layer sparsity - margin, filter removal. Parameter
    counts and serialized sizes only."""
    torch.manual_seed(seed)
    model = models.build_model(models.vgg16_spec()).eval()
    scores = criteria.weight_magnitude(model)
    counts = pruning.keep_counts(model, pruning.report_allocation(model, scores, sparsity, margin))
    pruned = pruning.prune_filters(model, scores["filter"], counts, input_size=64)
    before, after = measure.size_on_disk(model), measure.size_on_disk(pruned)
    thousand = models.vgg16_spec(num_classes=1000)
    with torch.device("meta"):  # shapes only: counting needs no 550 MB of weights
        thousand_params = measure.parameters(models.build_model(thousand))
    rows = [("torchvision VGG-16, 1000 classes", thousand_params, None, None),
            ("torchvision VGG-16, 100-class head", measure.parameters(model), before["MB"], before["MiB"]),
            (f"after the report's recipe ({sparsity:.0%}, margin {margin})", measure.parameters(pruned),
             after["MB"], after["MiB"])]
    table = pd.DataFrame(rows, columns=["model", "parameters", "size_MB", "size_MiB"])
    table["float32_MiB"] = table["parameters"] * 4 / measure.MIB
    return table


def findings(t: dict[str, pd.DataFrame]) -> list[str]:
    """Sentences stating what the numbers show, written from the numbers."""
    out = []
    base = t["baseline_metrics"].iloc[0]
    out += sentences.unstructured(t["unstructured_sweep"])[:1] + sentences.structured(t["structured_allocations"])
    ft = seed_means(t["finetune_results"]).sort_values("test_acc", ascending=False)
    top = ft.iloc[0]
    out.append(f"At the report's operating point, fine-tuned with the chosen recipe ({int(top.steps)} optimizer steps "
               f"per run, {int(top.n_seeds)} seeds), the best is {top.criterion} at "
               f"{top.test_acc:.2f} ± {top.test_acc_std:.2f} % test accuracy, {base.test_acc - top.test_acc:.2f} "
               f"points below the baseline's {base.test_acc:.2f} %, with {top.compression_x:.1f}x fewer "
               f"parameters and {top.flops_x:.1f}x fewer FLOPs.")
    out.append("Every criterion there: " + ", ".join(f"{r.criterion} {r.test_acc:.2f} ± {r.test_acc_std:.2f} %"
                                                    for r in ft.itertuples()) + ".")
    out.append(report.speed_finding(t["structured_speed_benchmark"]))
    out += sentences.quantization(t["quantization_targets"])[:1]
    return out


def verdicts(t: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """:func:`verdict.table` from the saved tables of notebooks 05 and 06."""
    return verdict_table(t["headline"], t["headline_points"], t["headline_paired"], t["lowdata_auc"],
                         t["lowdata_confirm"])


def findings_markdown(lines: list[str]) -> str:
    """The findings as notebook 08 shows them: a Markdown list and the pointer to notebook 09."""
    return sentences.markdown(lines, "08")


REPORT_FIGURES = {"results_pareto": "the headline networks: accuracy against file size and latency",
                  "unstructured_accuracy_vs_sparsity": "unstructured pruning, per criterion",
                  "structured_accuracy_vs_filters": "filter pruning, per criterion",
                  "structured_kept_filters": "filters kept per layer",

                  "relevance_lrp_heatmaps": "LRP heatmaps", "relevance_rank_correlation": "criteria rank correlation",
                  "baseline_training_curves": "baseline training"}
"""Figures of REPORT.md (file name without extension -> caption)."""


def report_text(p: config.Profile, t: dict[str, pd.DataFrame]) -> str:
    """REPORT.md's body (notebook 08's part), generated from the saved tables alone (``t`` and
    the two that 08 writes), so that :func:`stale_report` can generate it again."""
    return report.report_markdown(p.name, report.read_table(p.figures, "results_headline"), findings(t),
                                  report_sections(t, report.read_table(p.figures, "results_report_arithmetic")),
                                  REPORT_FIGURES)


SECTION = re.compile(r"<!-- (\w+):start -->\n(.*?)<!-- \1:end -->\n?", re.S)


def _squash(text: str) -> str:
    """``text`` without its marked sections and with runs of blank lines as one."""
    return re.sub(r"\n\s*\n+", "\n\n", SECTION.sub("", text)).strip()


def stale_report(p: config.Profile) -> list[str]:
    """The parts of ``figures/<p>/REPORT.md`` whose text differs from what the saved tables
    generate now: ``body`` (notebook 08's part, :func:`report_text`) and ``verdict``. Empty when
    every number there is the current tables'. (The other sections are written by the notebook
    that writes their tables, at the same time.)"""
    text = (p.figures / "REPORT.md").read_text()
    t = load_tables(p)
    sections = {m[1]: m[2] for m in SECTION.finditer(text)}
    stale = [] if _squash(text) == _squash(report_text(p, t)) else ["body"]
    return stale + ([] if sections.get("verdict", "").strip() == verdict_section(verdicts(t)).strip() else ["verdict"])


def report_sections(t: dict[str, pd.DataFrame], arithmetic: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """REPORT.md's tables, titled, in order."""
    return {"The fine-tuning recipe, chosen on validation": t["finetune_recipe"],
            "Quantization against the targets": t["quantization_targets"],
            "Structured pruning before fine-tuning (validation)": t["structured_allocations"],
            "Speed benchmark: half the FLOPs": t["structured_speed_benchmark"],
            "Cost of each criterion (one call each)": t["relevance_timing"],
            "Benchmark: LRP against the gradient criterion (medians)": t["relevance_benchmark"],
            "The original report's recipe on torchvision VGG-16 (architecture arithmetic)": arithmetic}
