import pytest

from helpers.core import config
from helpers.reporting import findings
from helpers.studies import headline


def test_profiles_build_and_default_is_cpu(monkeypatch):
    monkeypatch.delenv(config.PROFILE_ENV, raising=False)
    assert config.get_profile().name == "cpu"
    for name in config.PROFILES:
        assert config.get_profile(name).name == name


def test_env_profile_is_honoured(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "smoke")
    assert config.get_profile("").name == "smoke"
    assert config.get_profile("cpu").name == "cpu"  # an explicit name wins


def test_none_override_keeps_default_and_value_overrides():
    assert config.get_profile("cpu", epochs=None).epochs == config.Profile(name="x").epochs == 30
    assert config.get_profile("cpu", epochs=3).epochs == 3


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(ValueError, match="valid profiles: smoke, cpu, paper"):
        config.get_profile("gpu")


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown parameter.*epoch.*valid parameters:.*epochs"):
        config.get_profile("cpu", epoch=3)


@pytest.mark.parametrize("override, message", [
    (dict(epochs=0), "'epochs' must be > 0"),
    (dict(epochs=2.5), "'epochs' must be int"),
    (dict(lr="fast"), "'lr' must be float"),
    (dict(schedule="step"), "valid values: onecycle, cosine"),
    (dict(label_smoothing=1.0), "label_smoothing"),
    (dict(pretrained=1), "'pretrained' must be bool"),
    (dict(weight_bits=(6,)), "'weight_bits' must include 8"),
    (dict(weight_bits=(1, 8)), "'weight_bits' must be increasing distinct numbers in \\[2, 8\\]"),
    (dict(weight_bits=(8, 6)), "'weight_bits' must be increasing"),
    (dict(lowdata_fractions=(0.3,)), "'lowdata_fractions' needs at least two values"),
    (dict(lowdata_sparsities=(0.5,)), "'lowdata_sparsities' needs at least two values"),
])
def test_bad_values_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        config.get_profile("cpu", **override)


def test_import_creates_no_folders(tmp_path, monkeypatch):
    monkeypatch.setenv(config.ARTIFACTS_ENV, str(tmp_path / "a"))
    p = config.get_profile("smoke")
    assert p.artifacts == tmp_path / "a" / "smoke"
    assert not (tmp_path / "a").exists()


def test_compute_and_size_routes_may_have_more_seeds_than_the_other_routes():
    p = config.get_profile("cpu")
    assert p.seed_list() == [0, 1, 2] and p.seed_list("compute") == [0, 1, 2, 3, 4]
    assert p.seed_list("size") == [0, 1, 2, 3] and p.seed_list("all") == [0, 1, 2, 3, 4]
    assert config.get_profile("cpu", size_seeds=6).seed_list("all") == list(range(6))
    smoke = config.get_profile("smoke")
    assert smoke.seed_list("compute") == smoke.seed_list("size") == smoke.seed_list("all") == [0, 1]
    assert smoke.seed_list() == [0, 1]
    for name in ("compute_seeds", "size_seeds"):
        with pytest.raises(ValueError, match=f"'{name}' must be 0 .* or at least seeds"):
            config.get_profile("cpu", **{name: 2})
    assert headline.seeds_note(p) == " (5 on the compute route, 4 on the size route)"
    assert headline.seeds_note(smoke) == ""


def test_the_headline_margin_is_a_positive_number_of_points():
    assert config.get_profile("cpu").headline_max_drop == 1.0
    with pytest.raises(ValueError, match="'headline_max_drop' must be > 0"):
        config.get_profile("cpu", headline_max_drop=0.0)
    assert findings.within(1.0) == "within 1 point" and findings.within(100.0) == "within 100 points"
