from collections import OrderedDict

import pytest
import torch

from helpers.core import config, models


def _reference_count(cfg, batch_norm, pool, hidden, classes):
    """Parameters counted from the layer formulas, independently of torch."""
    total, c_in = 0, 3
    for v in cfg:
        if v == "M":
            continue
        total += c_in * v * 9 + v + (2 * v if batch_norm else 0)
        c_in = v
    f = c_in * pool * pool
    for h in hidden + [classes]:
        total += f * h + h
        f = h
    return total


def test_torchvision_vgg16_with_100_class_head():
    m = models.build_model(models.vgg16_spec())
    assert sum(p.numel() for p in m.parameters()) == 134_670_244
    assert m.classifier[-1].out_features == 100
    assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 100)


@pytest.mark.parametrize("width", [1.0, 0.25, 0.125])
def test_cifar_vgg16_bn_parameter_count(width):
    spec = models.vgg16_bn_spec(width)
    m = models.build_model(spec)
    assert sum(p.numel() for p in m.parameters()) == _reference_count(
        spec["cfg"], True, 1, spec["hidden"], 100)
    convs = [c for c in m.features if isinstance(c, torch.nn.Conv2d)]
    assert len(convs) == 13 and sum(isinstance(x, torch.nn.MaxPool2d) for x in m.features) == 5
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_spec_round_trip_and_reload():
    spec = models.vgg16_bn_spec(0.125)
    spec["cfg"][0] = 3  # a pruned layer
    m = models.build_model(spec)
    assert models.spec_of(m, "vgg16_bn") == spec
    again = models.model_from_state(spec, m.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(m.eval()(x), again.eval()(x))


def test_wrong_weights_for_spec_is_a_clear_error():
    state = models.build_model(models.vgg16_bn_spec(0.125)).state_dict()
    with pytest.raises(models.ModelError, match="do not match the spec vgg16_bn"):
        models.model_from_state(models.vgg16_bn_spec(0.25), state)
    with pytest.raises(models.ModelError, match="a model spec is a dict"):
        models.build_model({"arch": "vgg16"})


def _imagenet_state(value=0.01):
    """torchvision's ImageNet VGG-16 keys and shapes (1000-class head), with cheap values."""
    import torchvision
    with torch.device("meta"):
        ref = torchvision.models.vgg16()
    return {k: torch.full(v.shape, value) for k, v in ref.state_dict().items()}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: torchvision's download raises; torch's hub cache is an empty temporary folder."""
    from torchvision.models import VGG16_Weights

    def no_network(self, *a, **k):
        raise OSError("no network")
    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", no_network)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path


def test_imagenet_weights_missing_offline_name_the_file_and_folder(offline):
    cache = offline / "torch_home" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    assert models.imagenet_cache_path() == cache
    with pytest.raises(models.ModelError, match=f"put vgg16-397923af.pth into {cache.parent}.*weights_file"):
        models.imagenet_state()


def test_imagenet_weights_from_the_hub_cache_offline(offline):
    path = models.imagenet_cache_path()
    path.parent.mkdir(parents=True)
    torch.save(_imagenet_state(), path)
    model = models.build_model(models.vgg16_spec())
    head = model.classifier[6].weight.clone()
    models.load_imagenet_weights(model)
    assert torch.all(model.features[0].weight == 0.01) and torch.all(model.classifier[3].bias == 0.01)
    assert torch.equal(model.classifier[6].weight, head)  # the 100-class head keeps its own init


def test_explicit_weights_file_with_wrong_shape_or_keys(offline):
    state = _imagenet_state()
    state["features.0.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save(state, offline / "wrong_shape.pth")
    with pytest.raises(models.ModelError, match=r"wrong_shape.pth.*features.0.weight has shape \(32, 3, 3, 3\), "
                                                r"torchvision's VGG-16 has \(64, 3, 3, 3\)"):
        models.imagenet_state(offline / "wrong_shape.pth")
    state["extra.weight"] = state.pop("features.0.weight")
    torch.save(state, offline / "wrong_keys.pth")
    with pytest.raises(models.ModelError, match=r"wrong_keys.pth.*missing features.0.weight.*unexpected extra.weight"):
        models.imagenet_state(offline / "wrong_keys.pth")
    with pytest.raises(models.ModelError, match="no weights file at .*absent.pth"):
        models.imagenet_state(offline / "absent.pth")


def test_explicit_weights_file_offline(offline):
    torch.save(_imagenet_state(0.02), offline / "vgg16.pth")
    p = config.get_profile("paper", weights_file=str(offline / "vgg16.pth"))
    model = models.create_model(p)
    assert torch.all(model.features[28].weight == 0.02)


def test_a_repeat_build_is_the_same_model_and_leaves_the_generator_alike(monkeypatch):
    """A build served from memory equals one built from scratch: weights, the generator's state
    after it and the next random draw; served models are copies; another state, another model."""
    spec = models.vgg16_bn_spec(0.125)
    monkeypatch.setattr(models, "_BUILT", OrderedDict())

    def build(seed):
        torch.manual_seed(seed)
        m = models.build_model(spec)
        return m.state_dict(), torch.get_rng_state(), torch.rand(3)

    def same(a, b):
        return all(torch.equal(a[0][k], b[0][k]) for k in a[0]) and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])
    monkeypatch.setattr(models, "BUILT_MAX_BYTES", 0)
    ref = build(0)  # nothing kept: built from scratch
    assert not models._BUILT
    monkeypatch.setattr(models, "BUILT_MAX_BYTES", 64 << 20)
    first, second = build(0), build(0)  # built and kept, then served
    assert len(models._BUILT) == 1 and same(first, ref) and same(second, ref)
    second[0]["features.0.weight"].zero_()  # the served model is the caller's own
    assert same(build(0), ref) and not same(build(1), ref)
