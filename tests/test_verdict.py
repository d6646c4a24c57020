"""REPORT.md's opening table, against hand-made paired tables."""
import pandas as pd
import pytest

from helpers.reporting import report
from helpers.studies import verdict


def _fine_tuned_tables():
    head = pd.DataFrame({"route": ["compute", "compute", "size"], "criterion": ["lrp", "weight", "lrp"],
                         "filters_removed_or_sparsity": [0.3, 0.3, None], "weight_bits": [32, 32, 8]})
    points = pd.DataFrame({"route": "compute", "point": 0.3, "weight_bits": 32,
                           "criterion": ["none", "lrp", "weight", "taylor", "random"],
                           "test_acc_mean": [60.0, 55.0, 55.5, 54.0, 50.0]})
    paired = pd.DataFrame({"route": "compute", "point": 0.3, "weight_bits": 32, "criterion": ["weight", "taylor"],
                           "mean": [-0.5, 1.0], "low": [-0.9, 0.2], "high": [-0.1, 1.8], "p_holm": [0.08, 0.03],
                           "resolved_holm": [False, True]})
    return head, points, paired


def _lowdata_tables():
    summary = pd.DataFrame({"kind": "structured", "bn_recalibrated": False, "ref_per_class": 5,
                            "label": ["lrp (epsilon)", "lrp (searched)", "weight", "taylor", "gradient"],
                            "auc_mean": [30.0, 31.0, 29.0, 25.0, 20.0]})
    confirm = pd.DataFrame({"kind": "structured", "bn_recalibrated": False, "ref_per_class": 5,
                            "lrp": ["lrp (epsilon)"] * 3 + ["lrp (searched)"] * 3,
                            "other": ["weight", "taylor", "gradient"] * 2,
                            "diff_mean": [1.0, 5.0, 10.0, 2.0, 6.0, 11.0], "diff_low": [0.1, 4, 9, 1.5, 5, 10],
                            "diff_high": [1.9, 6, 11, 2.5, 7, 12], "p_holm": [0.04, 0.0, 0.0, 0.001, 0.0, 0.0],
                            "verdict": ["ahead"] * 6})
    return summary, confirm


def test_verdict_rows_against_hand_made_tables():
    t = verdict.table(*_fine_tuned_tables(), *_lowdata_tables())
    assert len(t) == 2  # the size route: LRP reached no point, so no row
    ft = t.iloc[0]
    # the strongest other at LRP's point is weight (55.5), not the control (60) nor taylor (54)
    assert ft["setting"] == "fine-tuned, compute route (0.3 of the filters)" and ft["strongest_other"] == "weight"
    assert (ft["difference"], ft["low"], ft["high"], ft["p_holm"]) == pytest.approx((-0.5, -0.9, -0.1, 0.08))
    assert ft["verdict"] == "tied"  # its interval read alone excludes 0, the correction does not hold it
    nf = t.iloc[1]
    # LRP's better confirmed composite by the screen's AUC is the searched one (31 > 30); the
    # strongest other is weight (29)
    assert nf["setting"] == "no fine-tuning, structured, as pruned, 5/class"
    assert (nf["lrp"], nf["strongest_other"], nf["difference"], nf["verdict"]) == \
        ("lrp (searched)", "weight", 2.0, "ahead")
    text = verdict.section(t)
    assert "1 ahead, 1 tied, 0 behind of 2" in text and "| fine-tuned, compute route" in text


def test_the_verdict_leads_the_report(tmp_path):
    path = tmp_path / "REPORT.md"
    report.update_section(path, "lowdata", "## low data")
    report.update_section(path, "headline", "## headline")
    report.update_section(path, "verdict", "## verdict")
    text = report.write_report("# Results\n\nbody", path)
    assert text.index("## verdict") < text.index("## headline") < text.index("body") < text.index("## low data")
