import pandas as pd
import pytest

from helpers.core import config
from helpers.reporting import report


@pytest.mark.skipif(not (config.FIGURES_ROOT / "cpu" / "baseline_metrics.csv").exists(),
                    reason="no committed cpu results yet")
def test_readme_results_are_generated_from_the_saved_tables():
    assert report.readme_block() == report.results_markdown("cpu"), \
        "README results are stale: run `make readme` (python -m helpers.reporting.report cpu)"


def test_readme_is_a_doorway_of_at_most_10_kb():
    size = len(report.README.read_bytes())
    assert size <= 10 * 1024, f"README.md is {size} bytes: move what a first reader does not need to docs/"


def test_update_readme_replaces_only_the_block(tmp_path, monkeypatch):
    folder = tmp_path / "figures" / "cpu"
    folder.mkdir(parents=True)
    report.write_table(pd.DataFrame([{"test_acc": 50.0, "test_loss": 2.0, "parameters": 10, "flops": 2e6,
                                      "size_MB": 1.0, "size_MiB": 0.95, "epochs": 1, "train_minutes": 1.0,
                                      "train_img_per_s": 100.0}]), folder, "baseline_metrics")
    monkeypatch.setattr(config, "FIGURES_ROOT", tmp_path / "figures")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\nend\n"
                      "<!-- profiles:start -->\nold\n<!-- profiles:end -->\n")
    text = report.update_readme("cpu", readme)
    assert text.startswith("intro\n<!-- results:start -->\n") and "<!-- results:end -->\nend\n" in text
    assert report.profiles_markdown() in text
    assert "50.00 %" in text and "old" not in text


def test_speed_finding_names_what_meets_the_target_at_both_batch_sizes():
    rows = [("small", "uniform", "eager", 1, 0.59), ("small", "uniform", "eager", 256, 0.85),
            ("big", "uniform", "folded", 1, 0.81), ("big", "uniform", "folded", 256, 0.80)]
    bench = pd.DataFrame(rows, columns=["model", "pruned", "form", "batch", "speedup_over_flops_ratio"])
    text = report.speed_finding(bench)
    assert "small, uniform, eager: 0.59 / 0.85" in text and "big, uniform, folded: 0.81 / 0.80" in text
    assert text.endswith("Target met at both batch sizes by big, uniform, folded.")
    assert report.speed_finding(bench.iloc[:2]).endswith("by none.")


def test_report_sections_survive_a_rewrite_of_the_report(tmp_path):
    path = tmp_path / "REPORT.md"
    report.update_section(path, "lowdata", "## Low data\n\nfirst")
    report.write_report("# Results\n\nmain text", path)
    report.update_section(path, "lowdata", "## Low data\n\nsecond")
    text = path.read_text()
    assert text.startswith("# Results\n\nmain text\n")
    assert text.count("<!-- lowdata:start -->") == 1 and "second" in text and "first" not in text
    report.write_report("# Results\n\nnew main", path)
    assert "main text" not in path.read_text() and "second" in path.read_text()


def test_time_sentence_sums_every_invocation_against_the_target():
    """An interrupted invocation and its resumption are one run from scratch: judged. A notebook
    run again after finishing makes the sum more than a run costs: not judged."""
    times = {"01_a.ipynb": [{"seconds": 600.0, "finished": True, "ended": ""}],
             "06_b.ipynb": [{"seconds": 3000.0, "finished": False, "ended": ""},
                            {"seconds": 6000.0, "finished": True, "ended": ""}]}
    table = report.times_table(times)
    assert table["all invocations (min)"].tolist() == [10.0, 150.0]
    assert table["last finished (min)"].tolist() == [10.0, 100.0]
    assert table["not finished"].tolist() == [0, 1]
    text = report.time_sentence(times, 150.0)
    assert "160.0 min" in text and "3 invocations" in text and "1 of them interrupted" in text
    assert "one run from scratch; target for the whole series 150 min: missed by 10.0 min" in text
    assert "met" in report.time_sentence(times, 200.0) and "target" not in report.time_sentence(times)
    assert "No wall times recorded" in report.time_sentence({}, 150.0)
    times["06_b.ipynb"].append({"seconds": 60.0, "finished": True, "ended": ""})
    text = report.time_sentence(times, 150.0)
    assert "161.0 min" in text and "(06: 3 invocations)" in text and "not judged" in text and "missed" not in text


def test_time_sentence_judges_only_a_record_of_the_whole_series():
    """Notebook 08 writes REPORT.md before 08 and 09 have a time: not the whole series, not judged."""
    times = {"01_a.ipynb": [{"seconds": 600.0, "finished": True, "ended": ""}]}
    series = ["01_a.ipynb", "08_r.ipynb", "09_e.ipynb"]
    text = report.time_sentence(times, 150.0, series)
    assert "Not recorded yet: 08, 09" in text and "not judged against the 150-min target" in text
    assert "met" not in text
    for name in series[1:]:
        times[name] = [{"seconds": 30.0, "finished": True, "ended": ""}]
    assert "11.0 min" in report.time_sentence(times, 150.0, series) and \
        "target for the whole series 150 min: met" in report.time_sentence(times, 150.0, series)
    section = report.times_markdown(times, 150.0, series)
    assert section.startswith("## Wall time of the series\n") and "09_e.ipynb" in section


def test_speed_sentence_counts_the_series_in_reference_steps():
    """600 s at 0.2 s a step and 440 s at 0.22 s: 3,000 + 2,000 steps; an invocation recorded
    without a reference step is left out and said to be."""
    times = {"01_a.ipynb": [{"seconds": 600.0, "finished": True, "ended": "", "reference_step_s": 0.2}],
             "02_b.ipynb": [{"seconds": 300.0, "finished": True, "ended": ""},
                            {"seconds": 440.0, "finished": True, "ended": "", "reference_step_s": 0.22}]}
    text = report.speed_sentence(times)
    assert "0.210 s (median over the 2 invocations that measured it of 3; 0.200-0.220 s)" in text
    assert "5.0 thousand reference steps" in text
    assert report.speed_sentence({"01_a.ipynb": times["02_b.ipynb"][:1]}) == ""
    assert "thousand reference steps" in report.times_markdown(times)


def _stated() -> dict[tuple[str, str], tuple[float, float]]:
    """Each number written by hand in README and docs/ (outside generated blocks), with the
    value of the code or setting it states: (stated, in the code)."""
    import inspect
    import re as _re
    from helpers.methods import quantization, shipped
    from helpers.studies import benchmark, budget
    from helpers.tools import gpu_check
    python = _re.search(r"python=(\d+\.\d+)", (config.REPO_ROOT / "environment.yml").read_text())[1]
    study = {(route, criterion): point for route, criterion, point in budget.STUDY}
    code = {("README.md", "3.11"): float(python),
            ("docs/running.md", "4 MB"): shipped.MAX_BYTES / 1e6,
            ("docs/running.md", "5,000 images"): inspect.signature(gpu_check.lrp_seconds).parameters["n"].default,
            ("docs/running.md", "900 s"): gpu_check.SERIES_TIMEOUT_S,
            ("docs/running.md", "95 %"):
                inspect.signature(quantization.check_kernels).parameters["min_agreement"].default,
            ("docs/running.md", "0.8"): inspect.signature(report.speed_finding).parameters["target"].default,
            ("docs/running.md", "0.25"): benchmark.TRAINING_WIDTH,
            ("docs/running.md", "80 %"): 100 * study[("size", "weight")],
            ("docs/running.md", "45 %"): 100 * study[("compute", "lrp")],
            ("docs/running.md", "0.5"): min(budget.BUDGETS),
            ("docs/running.md", "4 epochs"): max(budget.BUDGETS),
            ("docs/running.md", "100 images"): config.get_profile("cpu").val_per_class}
    return {k: (float(_re.sub(r"[^\d.]", "", k[1])), float(v)) for k, v in code.items()}


DOCS = ("README.md", "docs/running.md", "docs/testing.md")
"""Markdown written by hand (docs/measurements.md is the dated log of measurements, kept as measured)."""


def test_no_hand_written_number_in_readme_or_docs_but_settings_that_match_the_code():
    stated = _stated()
    found = {(name, number) for name in DOCS
             for _, number in report.prose_numbers((config.REPO_ROOT / name).read_text())}
    unknown = sorted(found - set(stated))
    assert not unknown, (f"hand-written numbers {unknown}: generate them from their table "
                         "(a README block, REPORT.md) or, for a setting, add it to _stated() with its code value")
    wrong = {k: v for k, v in stated.items() if v[0] != pytest.approx(v[1])}
    assert not wrong, f"prose states other values than the code: {wrong}"
    assert not set(stated) - found, f"stale entries in _stated(): {sorted(set(stated) - found)}"


def test_a_planted_number_fails_the_checks(tmp_path):
    text = report.README.read_text()
    planted = text.replace("## The notebooks", "## The notebooks\n\nLRP reaches 58.31 % here.")
    assert "58.31 %" in {n for _, n in report.prose_numbers(planted)}  # a hand-written number: caught
    assert "58.31 %" not in {n for _, n in report.prose_numbers(text)}
    block = report.readme_block()
    readme = tmp_path / "README.md"
    readme.write_text(text.replace(block, block.replace("57.", "56.", 1)))
    assert report.readme_block(readme) != report.results_markdown("cpu")  # a wrong number in the block: caught


def test_the_readme_profiles_table_is_generated_from_the_profiles():
    assert report.readme_block(name="profiles") == report.profiles_markdown()
    assert set(report.MEANT_FOR) == set(config.PROFILES)
