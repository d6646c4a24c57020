"""The explorer of notebook 09 as plain functions: a change of the amount changes the network
and its accuracy; a choice it cannot show is a clear message, in the widget too."""
import matplotlib
import pytest

from helpers.core import config
from helpers.studies import explorer

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def ex(trained_smoke):
    p, d, model = trained_smoke
    return explorer.setup(model, d, p, val_images=100, images=2)


def test_a_larger_fraction_keeps_fewer_filters_and_changes_the_accuracy(ex):
    small = explorer.view(ex, "weight", "epsilon_plus_flat", "global", "filters", 0.1)
    large = explorer.view(ex, "weight", "epsilon_plus_flat", "global", "filters", 0.6)
    kept_large, kept_small = large["kept"]["kept"], small["kept"]["kept"]
    assert (kept_large <= kept_small).all() and kept_large.sum() < kept_small.sum()
    assert large["parameters"] < small["parameters"] and large["flops"] < small["flops"]
    assert (large["val_acc"], large["val_acc_recal"]) != (small["val_acc"], small["val_acc_recal"])
    assert large["after"].shape == ex.before.shape and large["seconds"] > 0
    assert "fewer" in explorer.summary(ex, large)


def test_weights_keep_every_filter_and_scores_are_computed_once(ex, monkeypatch):
    v = explorer.view(ex, "lrp", "epsilon_plus_flat", "global", "weights", 0.5)
    assert (v["kept"]["kept"] == v["kept"]["original"]).all()
    calls = []
    monkeypatch.setattr(explorer.criteria, "compute_scores", lambda *a, **k: calls.append(1))
    explorer.view(ex, "lrp", "epsilon_plus_flat", "uniform", "filters", 0.3)
    assert calls == []  # cached


def test_the_after_row_has_its_own_colour_scale_and_the_summary_states_the_relevance_change(ex):
    v = explorer.view(ex, "weight", "epsilon_plus_flat", "global", "filters", 0.5)
    v["after"] = ex.before / 1000  # pruned relevance far smaller: a shared scale would show nothing
    fig = explorer.figure(ex, v)
    heat = [a.images[0] for a in fig.axes if a.images and a.images[0].get_cmap().name == "bwr"]
    before, after = heat[:len(ex.x)], heat[len(ex.x):]
    lim = float(ex.before.abs().max())
    assert all(im.get_clim() == pytest.approx((-lim, lim)) for im in before)
    assert all(im.get_clim() == pytest.approx((-lim / 1000, lim / 1000)) for im in after)
    labels = [a.get_ylabel() for a in fig.axes if a.get_ylabel().startswith(("before", "after"))]
    assert labels == [f"before\n±{lim:.2g}", f"after\n±{lim / 1000:.2g}"]  # each scale printed
    total = float(ex.before.sum())
    assert f"{total:.3g} before pruning, {total / 1000:.3g} after (-100%)" in explorer.summary(ex, v)


@pytest.mark.parametrize("choice, says", [
    (("lrp", "epsilon_plus_flat", "report", "weights", 0.5), "applies to filters only"),
    (("lrp", "epsilon_plus_flat", "global", "filters", 1.2), r"must lie in \[0, 1\)"),
    (("lrp", "no_such_composite", "global", "filters", 0.2), "no_such_composite"),
    (("magic", "epsilon_plus_flat", "global", "filters", 0.2), "unknown criterion 'magic'"),
])
def test_a_choice_it_cannot_show_is_a_clear_error(ex, choice, says):
    with pytest.raises(explorer.ExplorerError, match=says):
        explorer.view(ex, *choice)


def test_widgets_redraw_on_change_and_print_the_reason_for_a_bad_choice(ex, monkeypatch, capsys):
    shown = []
    monkeypatch.setattr(explorer, "view", lambda ex_, **k: shown.append(k) or (_ for _ in ()).throw(
        explorer.ExplorerError("nothing to see")))
    box = explorer.controls(ex, "weight", "epsilon_plus_flat", "global", "filters", 0.3)
    box.pick["amount"].value = 0.5
    assert [s["amount"] for s in shown] == [0.3, 0.5]  # drawn once, redrawn on the change
    assert capsys.readouterr().out.count("cannot show this choice: nothing to see") == 2  # a message, no traceback


def test_browser_check_works_on_a_copy_with_autosave_off():
    import json
    from helpers.tools import browser_check
    root = browser_check.workspace()
    try:
        assert (root / "09_explorer.ipynb").read_bytes() == (config.REPO_ROOT / browser_check.NOTEBOOK).read_bytes()
        docs = root / "settings" / "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings"
        assert json.loads(docs.read_text()) == {"autosave": False}  # nothing is ever written back
    finally:
        import shutil
        shutil.rmtree(root)


def test_browser_check_without_chromium_says_what_to_install(monkeypatch):
    from helpers.tools import browser_check
    monkeypatch.setattr(browser_check.shutil, "which", lambda name: None)
    with pytest.raises(browser_check.BrowserCheckError, match="apt-get install chromium chromium-driver"):
        browser_check.browser()
