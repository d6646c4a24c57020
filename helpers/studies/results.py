"""The results notebook's tables: everything read back from saved metrics and models.

Also the original report's pipeline applied to torchvision VGG-16 as *architecture
arithmetic*: parameter count and size on disk after its pruning recipe, no accuracy.
"""
from __future__ import annotations

import pandas as pd
import torch

from ..core import artifacts, checkpoint, config, measure, models
from ..methods import criteria, pruning
from ..reporting import report
from ..reporting import findings as sentences
from ..methods.training import load_artifact
from .verdict import table as verdict_table

REPORT_CLAIM = {"baseline_acc": 74.44, "baseline_loss": 1.055, "pruned_acc": 74.15,
                "pruned_loss": 1.186, "size_before_MB": 527.8, "size_after_MB": 46.3}


def load_tables(p: config.Profile) -> dict[str, pd.DataFrame]:
    """Every saved table of notebooks 01-07 (a missing one names the notebook to run)."""
    names = {"baseline_metrics": "01", "relevance_timing": "02", "relevance_benchmark": "02",
             "unstructured_sweep": "03",
             "structured_allocations": "04", "structured_sweep": "04", "structured_speed_benchmark": "04",
             "lowdata_auc": "05", "lowdata_confirm": "05",
             "finetune_recipe": "06", "headline": "06", "headline_paired": "06", "headline_points": "06",
             "finetune_results": "06",
             "quantization_results": "07", "quantization_targets": "07"}
    tables = {}
    for name, nb in names.items():
        try:
            tables[name] = report.read_table(p.figures, name)
        except checkpoint.CheckpointError:
            raise checkpoint.CheckpointError(f"{p.figures / (name + '.csv')} is missing: run notebook {nb} "
                                             f"of the {p.name} profile first") from None
    return tables


def latencies(p: config.Profile, runs: pd.DataFrame) -> pd.DataFrame:
    """CPU latency (2 threads) of each criterion's fine-tuned model at the report's operating
    point (``runs``: :func:`helpers.studies.routes.load_report_runs`; its first seed's model: seeds
    differ in which filters go, not in the architecture), measured now, side by side."""
    nets = {"baseline": load_artifact(artifacts.baseline(p))[0]}
    ok = runs[runs["status"] == "ok"]
    for r in ok.sort_values("seed", kind="stable").drop_duplicates("criterion").itertuples():
        nets[r.criterion] = load_artifact(artifacts.finetuned_model(p, r.run))[0]
    return pd.DataFrame([{"criterion": n, **t} for n, t in measure.latency_pairs(nets, p.input_size).items()])


def report_format(t: dict[str, pd.DataFrame], lat: pd.DataFrame) -> pd.DataFrame:
    """The original report's table for each criterion (test accuracy and loss:
    mean over seeds; ``n_seeds`` and ``test_acc_std`` beside them), plus cost columns."""
    base = t["baseline_metrics"].iloc[0]
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
    for _, r in q[q["variant"].isin(["int8 static", "int8 dynamic (linear)", "bf16 storage"])].iterrows():
        rows.append({"model": f"best LRP run + {r.variant}", "test_acc": r.test_acc, "test_loss": r.test_loss,
                     "size_MB": r.size_MB, "compression_%": 100 * (1 - r.size_MB / base.size_MB),
                     "latency_b1_ms": r.latency_b1_ms, "latency_b256_ms": r.latency_b256_ms})
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


REPORT_FIGURES = {"results_pareto": "accuracy against size and latency",
                  "unstructured_accuracy_vs_sparsity": "unstructured pruning, per criterion",
                  "structured_accuracy_vs_filters": "filter pruning, per criterion",
                  "structured_kept_filters": "filters kept per layer",

                  "relevance_lrp_heatmaps": "LRP heatmaps", "relevance_rank_correlation": "criteria rank correlation",
                  "baseline_training_curves": "baseline training"}
"""Figures of REPORT.md (file name without extension -> caption)."""


def report_sections(t: dict[str, pd.DataFrame], arithmetic: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """REPORT.md's tables, titled, in order."""
    return {"The fine-tuning recipe, chosen on validation": t["finetune_recipe"],
            "Quantization against the targets": t["quantization_targets"],
            "Structured pruning before fine-tuning (validation)": t["structured_allocations"],
            "Speed benchmark: half the FLOPs": t["structured_speed_benchmark"],
            "Cost of each criterion (one call each)": t["relevance_timing"],
            "Benchmark: LRP against the gradient criterion (medians)": t["relevance_benchmark"],
            "The original report's recipe on torchvision VGG-16 (architecture arithmetic)": arithmetic}
