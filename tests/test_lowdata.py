"""The low-data study (notebook 05): composites, reference sampling, AUC and paired intervals."""
import numpy as np
import pandas as pd
import pytest
import torch

from helpers.core import config, data, stats
from helpers.methods import composites, criteria
from helpers.studies import lowdata
from helpers.core.data import Data, Split

from test_criteria import _ref, _tiny, _vgg

ALL_ZPLUS = "depth:low=zplus,middle=zplus,high=zplus,dense=epsilon"
ALL_EPSILON = "depth:low=epsilon,middle=epsilon,high=epsilon,dense=epsilon"


# ----------------------------------------------------------------------------- composites
def _filter_scores(model, ref, composite):
    return criteria.compute_scores(model, ref, "lrp", composite=composite, normalize=False, absolute=False)["filter"]


@pytest.mark.parametrize("depth, stock", [
    (ALL_ZPLUS, "epsilon_plus_flat"), (ALL_EPSILON, "epsilon"),
    ("depth:low=gamma,middle=gamma,high=gamma,dense=epsilon", "epsilon_gamma_box")])
def test_depth_composite_equals_stock_composite_where_the_rules_coincide(depth, stock):
    model, ref = _vgg().double(), _ref(1)
    ours, theirs = _filter_scores(model, ref, depth), _filter_scores(model, ref, stock)
    for n in theirs:
        torch.testing.assert_close(ours[n], theirs[n], rtol=1e-9, atol=1e-12)


def test_epsilon_and_gamma_conserve_relevance_on_a_bias_free_model():
    model, ref = _tiny(), _ref(1)
    x = data.normalize(ref.x).double()
    total = model(x).gather(1, ref.y[:, None]).sum().item()
    for name in (ALL_EPSILON, "depth:low=gamma(0.25),middle=gamma,high=gamma,dense=epsilon"):
        s = criteria.compute_scores(model, ref, "lrp", composite=name, normalize=False, absolute=False)
        for layer, r in s["filter"].items():
            assert r.sum().item() == pytest.approx(total, rel=1e-5), (name, layer)


def test_depth_groups_follow_the_vgg_blocks():
    groups = composites.depth_groups(_vgg())
    assert [len(groups[g]) for g in composites.GROUPS] == [4, 6, 3, 2]


def test_depth_names_round_trip():
    name = "depth:low=gamma(0.1),middle=epsilon(0.25),high=zplus,dense=epsilon(1e-06)"
    assert composites.depth_name(composites.parse_depth(name)) == name


@pytest.mark.parametrize("name, says", [
    ("nonsense", "epsilon_plus_flat"),
    ("depth:low=zplus,middle=zplus,high=zplus", "low, middle, high, dense"),
    ("depth:low=alpha,middle=zplus,high=zplus,dense=epsilon", "valid rules: epsilon, gamma, zplus"),
    ("depth:low=zplus(2),middle=zplus,high=zplus,dense=epsilon", "takes no parameter"),
    ("depth:low=gamma(-1),middle=zplus,high=zplus,dense=epsilon", "must be > 0"),
])
def test_bad_composites_and_rules_get_a_clear_error(name, says):
    with pytest.raises(criteria.ScoreError, match=says.replace("(", r"\(")):
        criteria.compute_scores(_vgg(), _ref(1), "lrp", composite=name)


def test_study_refuses_unknown_composite_and_criterion():
    p = config.get_profile("smoke")
    with pytest.raises(lowdata.StudyError, match="valid: epsilon_plus_flat"):
        lowdata.make_study(p, ["eps"], ["gradient"])
    with pytest.raises(lowdata.StudyError, match="valid: gradient, taylor, weight, random"):
        lowdata.make_study(p, ["epsilon"], ["lrp"])


# ----------------------------------------------------------------------------- reference sets
def _data(per_class=6, val=4, test=3):
    """Train images filled with 1, validation with 2, test with 3: where a draw came from is visible."""
    def split(n, value):
        y = torch.arange(100).repeat_interleave(n)
        return Split(torch.full((len(y), 3, 32, 32), value, dtype=torch.uint8), y)
    return Data(split(per_class, 1), split(val, 2), split(test, 3), [f"c{i}" for i in range(100)])


def test_reference_draws_the_requested_count_per_class_from_training_images_only():
    d = _data()
    for k in (1, 2, 4):
        ref = lowdata.reference(d, k, seed=3, val_per_class=4)
        assert torch.bincount(ref.y, minlength=100).tolist() == [k] * 100
        assert (ref.x == 1).all()  # training images, never validation (2) or test (3)


def test_reference_sets_of_one_seed_are_nested():
    d = _data()
    d.train.x[:] = torch.arange(len(d.train.y)).view(-1, 1, 1, 1) % 256
    small, large = (lowdata.reference(d, k, seed=1, val_per_class=4) for k in (2, 4))
    assert {tuple(v.flatten()[:1].tolist()) for v in small.x} <= {tuple(v.flatten()[:1].tolist()) for v in large.x}


@pytest.mark.parametrize("size", [0, 5, -1, 2.0, True])
def test_bad_reference_sizes_are_refused_naming_the_range(size):
    with pytest.raises(lowdata.StudyError, match="from 1 to 4"):
        lowdata.reference(_data(), size, seed=0, val_per_class=4)


def test_validation_halves_are_disjoint_and_never_test():
    p = config.get_profile("smoke", val_per_class=4)
    d = _data()
    d = Data(d.train, Split(torch.arange(len(d.val.y)).view(-1, 1, 1, 1), d.val.y), d.test, d.classes)  # ids
    a, b = lowdata.validation_halves(d, p, per_class=2)
    ids_a, ids_b = set(a.x[:, 0, 0, 0].tolist()), set(b.x[:, 0, 0, 0].tolist())
    assert len(a) == len(b) == 200 and not ids_a & ids_b
    with pytest.raises(lowdata.StudyError, match="1..2"):
        lowdata.validation_halves(d, p, per_class=3)


# ----------------------------------------------------------------------------- summaries
def test_auc_against_a_hand_computation():
    # trapezoids: (10+20)/2*0.1 + (20+40)/2*0.2 = 1.5 + 6 = 7.5 over a span of 0.3
    assert stats.auc([0.1, 0.2, 0.4], [10, 20, 40]) == pytest.approx(25.0)
    assert stats.auc([0.4, 0.1, 0.2], [40, 10, 20]) == pytest.approx(25.0)  # order does not matter
    with pytest.raises(ValueError, match="two distinct"):
        stats.auc([0.1], [3])


def test_paired_difference_against_a_hand_computation():
    a, b = [3.0, 3.5, 2.5], [1.0, 1.0, 1.0]   # differences 2, 2.5, 1.5: mean 2, sd 0.5
    d = stats.paired_difference(a, b)
    half = 4.302652729749464 * 0.5 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(n) = 1.242
    assert d["mean"] == pytest.approx(2.0) and d["std"] == pytest.approx(0.5)
    assert (d["low"], d["high"]) == pytest.approx((2 - half, 2 + half))
    assert d["resolved"] is True
    assert stats.paired_difference([3.0, 5.0, 4.0], [1.0, 2.0, 3.0])["resolved"] is False  # sd 1: +-2.48
    assert stats.paired_difference([1, 2], [2, 1])["resolved"] is False
    assert np.isnan(stats.paired_difference([1], [0])["low"])


def test_seeds_needed_for_a_half_point_interval():
    # sd 0.5: n=6 gives t(0.975,5)=2.571*0.5/sqrt(6)=0.525, n=7 gives 2.447*0.5/sqrt(7)=0.462
    assert stats.seeds_needed(0.5) == 7


def test_select_best_reads_validation_of_finished_runs_only():
    rows = pd.DataFrame({"status": ["ok", "ok", "diverged"], "val_acc": [50.0, 52.0, 90.0],
                         "test_acc": [60.0, 1.0, 0.0]})
    assert stats.select_best(rows)["val_acc"] == 52.0  # the diverged run's 90 and the test column are ignored
    assert stats.select_best(rows.drop(columns="test_acc")).name == 1
    with pytest.raises(ValueError, match="none with status ok"):
        stats.select_best(rows[rows["status"] == "diverged"])


def _aucs():
    rows = []
    for seed, (lrp, g) in enumerate([(30, 20), (32, 21), (31, 22)]):
        rows.append({"label": "lrp (searched)", "auc": lrp, "seed": seed})
        rows.append({"label": "gradient", "auc": g, "seed": seed})
    rows.append({"label": "weight", "auc": 25.0, "seed": 0})
    return pd.DataFrame(rows).assign(kind="structured", bn_recalibrated=False, ref_per_class=1)


def test_paired_table_pairs_by_seed_and_repeats_seed_free_criteria():
    pairs = lowdata.paired(_aucs()).set_index("other")
    assert pairs.loc["gradient", "diff_mean"] == pytest.approx(10.0)
    assert pairs.loc["weight", "n"] == 3 and pairs.loc["weight", "diff_mean"] == pytest.approx(6.0)
    summary = lowdata.auc_summary(_aucs().assign(criterion="", composite=""))
    text = lowdata.conclusions(summary, lowdata.paired(_aucs()))
    # the strongest other criterion by mean AUC is weight (25 against gradient's 21)
    assert "lrp (searched) against the strongest" in text[0]
    assert "1/class: ahead of weight by +6.00 points [+3.52, +8.48], resolved" in text[0]


def test_auc_table_from_curves():
    rows = pd.DataFrame([{"kind": "structured", "bn_recalibrated": False, "label": "x", "criterion": "x",
                          "composite": "", "ref_per_class": 1, "seed": 0, "fraction": f, "val_acc": a}
                         for f, a in [(0.1, 10), (0.2, 20), (0.4, 40)]])
    assert lowdata.auc_table(rows)["auc"].tolist() == pytest.approx([25.0])


def test_reference_chunks_add_up_to_the_reference_sets():
    d = _data(per_class=12)
    d.train.x[:] = (torch.arange(len(d.train.y)) % 251).view(-1, 1, 1, 1)
    chunks = lowdata.reference_chunks(d, (1, 2, 4), seed=5, val_per_class=4)
    assert [len(c) for c in chunks] == [100, 100, 200]
    for k, size in enumerate((1, 2, 4), start=1):
        union = torch.cat([c.x for c in chunks[:k]])[:, 0, 0, 0].sort().values
        want = lowdata.reference(d, size, seed=5, val_per_class=4).x[:, 0, 0, 0].sort().values
        assert torch.equal(union, want)


@pytest.mark.parametrize("criterion", ["lrp", "gradient", "taylor"])
def test_nested_scores_equal_scores_of_each_set(criterion):
    model, ref = _vgg(), _ref(2)
    first, second = Split(ref.x[::2], ref.y[::2]), Split(ref.x[1::2], ref.y[1::2])
    nested = criteria.nested_scores(model, [first, second], criterion, batch_size=50)
    whole = criteria.compute_scores(model, Split(torch.cat([first.x, second.x]), torch.cat([first.y, second.y])),
                                    criterion, batch_size=50)
    alone = criteria.compute_scores(model, first, criterion, batch_size=50)
    for kind in ("filter", "weight"):
        for n in whole[kind]:
            torch.testing.assert_close(nested[0][kind][n], alone[kind][n])
            torch.testing.assert_close(nested[1][kind][n], whole[kind][n])
    assert [s["n_images"] for s in nested] == [100, 200]


def test_composites_with_the_same_scores_are_scored_once():
    assert composites.same_scores(ALL_ZPLUS, "epsilon_plus_flat") and composites.same_scores(ALL_EPSILON, "epsilon")
    assert not composites.same_scores(ALL_EPSILON, "epsilon_plus_flat")
    assert not composites.same_scores("epsilon_alpha2_beta1", ALL_ZPLUS)
    names = ["epsilon_plus_flat", "epsilon_alpha2_beta1", ALL_ZPLUS]
    assert lowdata.duplicates(names) == {ALL_ZPLUS: "epsilon_plus_flat"}
    p = config.get_profile("smoke")
    study = lowdata.Study((1,), (0,), (0.3,), (0.5,), tuple(names), ("weight",), 1, 1)
    model, d = _vgg(), _data()
    d.train.x[:] = torch.randint(0, 256, d.train.x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    ev = Split(d.train.x[:200], d.train.y[:200])
    block = lowdata.run_block(model, d, study, ev, [], p, 0)
    lrp = block[block["criterion"] == "lrp"].set_index(["composite", "kind", "fraction"])["val_acc"]
    assert lrp.loc[ALL_ZPLUS].equals(lrp.loc["epsilon_plus_flat"])
    assert set(block["composite"]) >= set(names)


# ----------------------------------------------------------------------------- confirmation
def test_confirmation_images_are_the_comparison_halfs_and_not_the_screens():
    p = config.get_profile("smoke", val_per_class=6, lowdata_eval_per_class=1, lowdata_confirm_per_class=2)
    d = _data(val=6)
    d = Data(d.train, Split(torch.arange(len(d.val.y)).view(-1, 1, 1, 1), d.val.y), d.test, d.classes)  # ids
    search, screen = lowdata.validation_halves(d, p, p.lowdata_eval_per_class)
    confirm = lowdata.confirmation_split(d, p)
    ids = {name: set(s.x[:, 0, 0, 0].tolist()) for name, s in
           (("search", search), ("screen", screen), ("confirm", confirm))}
    assert torch.bincount(confirm.y, minlength=100).tolist() == [2] * 100
    assert not ids["confirm"] & ids["screen"] and not ids["confirm"] & ids["search"]
    assert lowdata.confirmation_split(d, config.get_profile("smoke", lowdata_confirm_per_class=0)) is None
    with pytest.raises(lowdata.StudyError, match="0..2"):
        lowdata.confirmation_split(d, config.get_profile("smoke", val_per_class=6, lowdata_confirm_per_class=3))


def test_hits_pack_and_unpack():
    right = torch.tensor([True, False, True, True, False, False, False, True, True, False, True])
    text = lowdata.pack_hits(right)
    assert text == "b1a0" and lowdata.unpack_hits(text, 11).tolist() == right.tolist()


def test_trapezoid_weights_give_the_auc():
    x, y = [0.1, 0.2, 0.4], [10.0, 20.0, 40.0]
    assert float(np.dot(lowdata.trapezoid_weights(x), y)) == pytest.approx(stats.auc(x, y))


def _hit_rows(n=8):
    """Two seeds, two fractions, 8 images: lrp (epsilon) right on all, lrp (searched) on the first
    six, taylor on all, gradient on none, weight (one seed, data-free) on the first four."""
    rows = []
    hits = {"lrp (epsilon)": [1] * n, "lrp (searched)": [1] * 6 + [0] * 2, "taylor": [1] * n,
            "gradient": [0] * n, "weight": [1] * 4 + [0] * 4}
    for label, right in hits.items():
        for seed in ((0,) if label == "weight" else (0, 1)):
            for f in (0.1, 0.3):
                rows.append({"kind": "structured", "bn_recalibrated": False, "ref_per_class": 1, "label": label,
                             "seed": seed, "fraction": f,
                             "confirm_hits": lowdata.pack_hits(torch.tensor(right).bool())})
    return pd.DataFrame(rows)


def test_confirmation_against_a_hand_made_table():
    summary = pd.DataFrame({"kind": "structured", "bn_recalibrated": False, "ref_per_class": 1,
                            "label": ["lrp (epsilon)", "lrp (epsilon_plus_flat)", "lrp (searched)"],
                            "auc_mean": [30.0, 20.0, 25.0]})
    pairs = pd.DataFrame({"kind": ["structured"], "bn_recalibrated": [False], "ref_per_class": [1],
                          "lrp": ["lrp (epsilon)"], "other": ["weight"], "diff_mean": [40.0], "diff_low": [30.0],
                          "diff_high": [50.0]})
    c = lowdata.confirmation(_hit_rows(), summary, pairs, 8).set_index(["lrp", "other"])
    assert list(c.index.get_level_values(0).unique()) == ["lrp (epsilon)", "lrp (searched)"]  # best stock, searched
    # every image right against four of eight: +50 points at both fractions and for both seeds, so all
    # the spread is the images' (0 or 100 each): a bootstrap error near sd / sqrt(8) = 18.9
    row = c.loc[("lrp (epsilon)", "weight")]
    assert row["diff_mean"] == pytest.approx(50.0) and row["diff_low"] < 50 < row["diff_high"]
    assert row["screen_half_width"] == pytest.approx(10.0) and row["half_width"] > 20
    assert row["p"] < 0.01 and row["verdict"] == "ahead"
    assert c.loc[("lrp (epsilon)", "taylor"), "verdict"] == "tied"          # the same hits: 0, no spread
    assert c.loc[("lrp (epsilon)", "taylor"), "diff_mean"] == 0.0
    assert c.loc[("lrp (searched)", "taylor"), "diff_mean"] == pytest.approx(-25.0)
    assert c.loc[("lrp (searched)", "gradient"), "diff_mean"] == pytest.approx(75.0)
    assert len(c) == 6 and (c["n_images"] == 8).all() and (c["n_seeds"] == 2).all()
    text = lowdata.confirmed_conclusions(c.reset_index())
    assert "1/class: `lrp (epsilon)` ahead weight (+50.00 [" in text[0]
    assert "]), tied taylor, ahead gradient; searched rule: tied weight, tied taylor, ahead gradient." in text[0]
    assert "Holm's correction over the 6 comparisons" in text[1]


class _Watched(Split):
    """A split that counts how often it is put on a device to be read (``batches`` does that)."""
    reads = 0

    def to(self, device):
        type(self).reads += 1
        return super().to(device)


@pytest.mark.slow
def test_the_study_and_its_confirmation_never_read_the_test_split_and_test_auc_reads_it_once():
    p = config.get_profile("smoke", val_per_class=4, lowdata_eval_per_class=1, lowdata_confirm_per_class=1,
                           lowdata_ref_sizes=(1,), lowdata_seeds=1, lowdata_fractions=(0.1, 0.3),
                           lowdata_sparsities=(0.3, 0.6))
    model, d = _vgg(), _data(val=4)
    g = torch.Generator().manual_seed(0)
    for s in (d.train, d.val, d.test):
        s.x[:] = torch.randint(0, 256, s.x.shape, generator=g, dtype=torch.uint8)
    d = Data(d.train, d.val, _Watched(d.test.x, d.test.y), d.classes)
    study = lowdata.make_study(p, ["epsilon"], ["weight", "taylor"])
    _, screen = lowdata.validation_halves(d, p, 1)
    rows = lowdata.run(model, d, study, screen, [], p, lowdata.confirmation_split(d, p))
    summary = lowdata.auc_summary(lowdata.auc_table(rows))
    lowdata.confirmation(rows, summary, lowdata.paired(lowdata.auc_table(rows)), 100)
    assert _Watched.reads == 0
    lowdata.test_auc(model, d, "epsilon", study, 1, p)
    assert _Watched.reads == 2  # once per network: the study's two fractions, one seed
    with pytest.raises(lowdata.StudyError, match="confirms on 1 image"):
        lowdata.run(model, d, study, screen, [], p, None)


def test_a_network_without_batchnorm_is_measured_once_for_both_rows(monkeypatch):
    """torchvision VGG-16 has no BatchNorm: its "recalibrated" row is the same network, so it is
    not measured twice (nor recalibrated); a BatchNorm network still is."""
    from helpers.methods import pruning
    p = config.get_profile("smoke")
    ev, recal = _ref(1), [(torch.zeros(2, 3, 32, 32), None)]
    plain = _vgg().eval()
    for m in list(plain.modules()):
        for child, sub in list(m.named_children()):
            if isinstance(sub, torch.nn.BatchNorm2d):
                setattr(m, child, torch.nn.Identity())
    calls = []
    monkeypatch.setattr(pruning, "recalibrate_batchnorm", lambda model, it, n: calls.append(n) or model)
    rows = lowdata._accuracies("structured", 0.3, plain, ev, recal, p, confirm=ev)
    assert calls == [] and [r["bn_recalibrated"] for r in rows] == [False, True]
    assert rows[1]["val_acc"] == rows[0]["val_acc"] and rows[1]["confirm_hits"] == rows[0]["confirm_hits"]
    assert rows[1]["confirm_s"] == 0.0  # its cost is charged once
    lowdata._accuracies("structured", 0.3, _vgg().eval(), ev, recal, p)
    assert calls == [1]
