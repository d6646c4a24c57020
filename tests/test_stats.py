"""Family-wise correction and the two-way bootstrap, against hand computations."""
import numpy as np
import pandas as pd
import pytest

from helpers.core import stats


def test_paired_t_p_value_against_a_hand_computation():
    # differences 2, 2.5, 1.5: t = 2 / (0.5 / sqrt 3) = 6.928 on 2 df; two-sided p = 0.0202
    assert stats.paired_difference([3.0, 3.5, 2.5], [1.0, 1.0, 1.0])["p"] == pytest.approx(0.02020, abs=1e-5)
    assert np.isnan(stats.paired_difference([1], [0])["p"])


def test_holm_against_a_hand_made_example():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    out = stats.holm([np.nan, 0.01, 0.04])                      # NaN: no test, not counted in m
    assert np.isnan(out[0]) and out[1:] == pytest.approx([0.02, 0.04])
    assert stats.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    table = stats.with_holm(pd.DataFrame({"p": [0.01, 0.04, 0.03, 0.005]}))
    assert table["resolved_holm"].tolist() == [True, False, False, True]


def test_two_way_bootstrap_against_hand_computations():
    rng = np.random.default_rng(1)
    # only the images vary (every seed alike): the standard error is the images' sd / sqrt(n)
    images = rng.normal(0.3, 1.0, size=2000)
    out = stats.two_way_bootstrap(np.tile(images, (5, 1)), n_boot=4000, seed=0)
    assert out["mean"] == pytest.approx(images.mean())
    assert out["se"] == pytest.approx(images.std(ddof=1) / np.sqrt(2000), rel=0.06)
    assert out["low"] < out["mean"] < out["high"] and (out["n_seeds"], out["n_images"]) == (5, 2000)
    # only the seeds vary: the seeds' sd * sqrt((n-1)/n) / sqrt(n), the bootstrap's plug-in error
    seeds = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    out = stats.two_way_bootstrap(np.repeat(seeds[:, None], 50, axis=1), n_boot=8000, seed=0)
    assert out["se"] == pytest.approx(seeds.std(ddof=0) / np.sqrt(8), rel=0.05)
    assert out["resolved"] and out["p"] < 1e-6
    # a constant difference has no spread and a zero one is not resolved
    flat = stats.two_way_bootstrap(np.zeros((3, 10)))
    assert (flat["low"], flat["high"], flat["resolved"], flat["p"]) == (0.0, 0.0, False, 1.0)
    with pytest.raises(ValueError, match="seeds, images"):
        stats.two_way_bootstrap(np.zeros(4))
