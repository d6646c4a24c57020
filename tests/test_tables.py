"""What a reader sees of a table: units in headers, whole numbers, dashes, no 0..n index."""
import numpy as np
import pandas as pd

from helpers.reporting import tables


def test_headers_carry_units():
    assert tables.header("val_acc") == "val acc (%)"
    assert tables.header("val_acc_bn_recal") == "val acc bn recal (%)"
    assert tables.header(("test_acc", "mean")) == "test acc mean (%)"
    assert tables.header("latency_b1_ms") == "latency b1 (ms)"
    assert tables.header("size_MB") == "size (MB)"
    assert tables.header("compression_x") == "compression (x)"
    assert tables.header("drop_points") == "drop points"
    assert tables.header("criterion") == "criterion"


def test_counts_are_integers_and_missing_is_a_dash():
    df = pd.DataFrame({"criterion": ["lrp", "weight"], "parameters": [952308.0, np.nan],
                       "val_acc": [1.0, 1.0], "n": [3, 3]})
    out = tables.frame(df)
    assert list(out.columns) == ["criterion", "parameters", "val acc (%)", "n"]
    assert list(out["parameters"]) == ["952,308", tables.MISSING]
    assert list(out["val acc (%)"]) == ["1.00", "1.00"]  # a percentage keeps its decimals: 1 %, not 100 %
    assert list(out["n"]) == ["3", "3"]
    seeds = tables.frame(pd.DataFrame({"n_seeds": [3.0, np.nan], "acc_gain": [2.0, 3.0]}))
    assert list(seeds["n seeds"]) == ["3", tables.MISSING] and list(seeds["acc gain (%)"]) == ["2.00", "3.00"]
    bits = tables.frame(pd.DataFrame({"weight_bits": [6.0, 32.0, np.nan]}))  # a grid, float for the missing row
    assert list(bits["weight bits"]) == ["6", "32", tables.MISSING]


def test_small_whole_floats_stay_decimals_like_their_neighbours():
    pivot = pd.DataFrame({"a": [50.1, 40.0], "b": [49.0, 30.0]}, index=pd.Index([0.1, 0.2], name="sparsity"))
    out = tables.frame(pivot, digits=1)
    assert list(out.columns) == ["sparsity", "a", "b"]  # the named index is kept as a column
    assert list(out["b"]) == ["49.0", "30.0"]


def test_markdown_has_no_range_index_and_shows_caption():
    df = pd.DataFrame({"criterion": ["lrp"], "test_acc": [57.964]})
    text = tables.markdown(df)
    assert text.splitlines()[0].split("|")[1].strip() == "criterion"
    assert "57.96" in text and "57.964" not in text
    shown = tables.show(df, "caption here")
    assert shown.data.startswith("**caption here**") and "test acc (%)" in shown.data


def test_small_values_keep_their_significant_digits():
    out = tables.frame(pd.DataFrame({"lr": [0.003, 0.01, 0.1], "p_value": [0.0004, 0.2, np.nan],
                                     "val_acc": [0.25, 50.0, 99.0]}))
    assert list(out["lr"]) == ["0.0030", "0.0100", "0.1000"]  # was 0.00, 0.01, 0.10
    assert list(out["p value"]) == ["0.00040", "0.20000", tables.MISSING]
    assert list(out["val acc (%)"]) == ["0.25", "50.00", "99.00"]  # nothing rounds to zero: 2 decimals
    assert tables.decimals(pd.Series([0.0, 0.0])) == 2
