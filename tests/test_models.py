import pytest
import torch

from helpers import models


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


def test_imagenet_weights_offline_is_a_clear_error(monkeypatch):
    from torchvision.models import VGG16_Weights

    def offline(self, *a, **k):
        raise OSError("no network")
    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", offline)
    with pytest.raises(models.ModelError, match="ImageNet VGG-16 weights.*pretrained=False"):
        models.load_imagenet_weights(models.build_model(models.vgg16_spec()))
