"""VGG-16 in the two forms this project prunes, built from a JSON-able spec.

A spec (``dict``) fully describes the architecture, including pruned channel counts, so a
checkpoint carries its own spec and reloads without pickled modules or Torch-Pruning.
Both forms are ``torchvision.models.VGG`` instances with torchvision's module names, so
ImageNet weights load into the full-width torchvision form unchanged.
"""
from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models.vgg import VGG, make_layers

from . import config

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M"]


class ModelError(ValueError):
    """A spec, checkpoint or weight file that does not describe a model this project builds."""


def vgg16_bn_spec(width: float = 1.0, num_classes: int = 100) -> dict:
    """CIFAR VGG-16-BN: 13 conv+BN+ReLU, 5 max-pools, classifier C->512w->classes."""
    cfg = [v if v == "M" else max(1, round(v * width)) for v in VGG16_CFG]
    return dict(arch="vgg16_bn", cfg=cfg, batch_norm=True, pool=1,
                hidden=[max(1, round(512 * width))], dropout=0.0, num_classes=num_classes)


def vgg16_spec(num_classes: int = 100) -> dict:
    """torchvision VGG-16 (the original report's model): 7x7 pooled flatten, 4096-wide head."""
    return dict(arch="vgg16", cfg=list(VGG16_CFG), batch_norm=False, pool=7,
                hidden=[4096, 4096], dropout=0.5, num_classes=num_classes)


def spec_for(profile: config.Profile) -> dict:
    if profile.arch == "vgg16":
        return vgg16_spec()
    return vgg16_bn_spec(profile.width)


def _classifier(in_features: int, hidden: list[int], dropout: float, num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


BUILT_MAX_BYTES = 64 << 20
"""Largest model (parameter and buffer bytes) :func:`build_model` keeps a copy of; 0 keeps none."""
_BUILT: OrderedDict[tuple, tuple[VGG, torch.Tensor]] = OrderedDict()
_BUILT_ENTRIES = 8


def build_model(spec: dict) -> VGG:
    """A freshly initialised ``torchvision.models.VGG`` as described by ``spec``.

    torchvision's constructor first initialises its ImageNet head (120 M weights: about 1.8 s
    of random draws here) that the spec's head then replaces, and those draws set the state the
    convolutions' initialisation reads. A build is therefore a function of the spec and the
    CPU generator's state: a repeat build (a test fixture, a model reloaded after a seed) is
    served as a copy of the first one, and the generator is left where that build left it, so
    weights and every later random draw are the same as without the copy."""
    keys = {"arch", "cfg", "batch_norm", "pool", "hidden", "dropout", "num_classes"}
    if not isinstance(spec, dict) or set(spec) != keys:
        raise ModelError(f"a model spec is a dict with keys {sorted(keys)}, got {spec!r:.200}")
    key = (hashlib.blake2b(torch.get_rng_state().numpy().tobytes(), digest_size=16).hexdigest(),
           json.dumps(spec, sort_keys=True), str(torch.get_default_dtype()), str(torch.get_default_device()))
    if key in _BUILT:
        _BUILT.move_to_end(key)
        model, after = _BUILT[key]
        torch.set_rng_state(after)
        return copy.deepcopy(model)
    model = _build(spec)
    if sum(t.numel() * t.element_size() for t in model.state_dict().values()) <= BUILT_MAX_BYTES:
        _BUILT[key] = (copy.deepcopy(model), torch.get_rng_state())
        while len(_BUILT) > _BUILT_ENTRIES:
            _BUILT.popitem(last=False)
    return model


def _build(spec: dict) -> VGG:
    model = VGG(make_layers(spec["cfg"], batch_norm=spec["batch_norm"]),
                num_classes=spec["num_classes"], dropout=spec["dropout"])
    model.avgpool = nn.AdaptiveAvgPool2d(spec["pool"])
    last = [v for v in spec["cfg"] if v != "M"][-1]
    model.classifier = _classifier(last * spec["pool"] ** 2, spec["hidden"], spec["dropout"],
                                   spec["num_classes"])
    if spec["arch"] == "vgg16":  # torchvision's init for its 4096-wide head
        for m in model.classifier.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.constant_(m.bias, 0)
    # The narrow CIFAR head keeps PyTorch's default (Kaiming-uniform) init: N(0, 0.01) in two
    # stacked small layers shrinks the gradient reaching the convolutions and stalls the first
    # epochs (measured: 1.7 % train accuracy after epoch 1 of the cpu profile).
    return model


def imagenet_cache_path() -> Path:
    """Where torchvision keeps its ImageNet VGG-16 weights: ``$TORCH_HOME/hub/checkpoints/``
    (``~/.cache/torch`` when ``$TORCH_HOME`` is unset)."""
    from torchvision.models import VGG16_Weights
    name = Path(urlparse(VGG16_Weights.IMAGENET1K_V1.url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _check_imagenet_state(state, source) -> None:
    """``state`` must have exactly torchvision VGG-16's keys and shapes."""
    import torchvision
    with torch.device("meta"):
        ref = torchvision.models.vgg16().state_dict()
    if not isinstance(state, dict):
        raise ModelError(f"{source} holds a {type(state).__name__}, not a state dict")
    missing, unexpected = sorted(set(ref) - set(state)), sorted(set(state) - set(ref))
    if missing or unexpected:
        raise ModelError(f"{source} is not torchvision's VGG-16 state dict: missing {', '.join(missing) or 'none'}; "
                         f"unexpected {', '.join(unexpected) or 'none'}")
    for k, v in ref.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ModelError(f"{source}: {k} has shape {tuple(state[k].shape)}, torchvision's VGG-16 has "
                             f"{tuple(v.shape)}")


def _read_weights(path: Path) -> dict:
    if not path.is_file():
        raise ModelError(f"no weights file at {path}; give the path of torchvision's vgg16-397923af.pth")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelError(f"{path} is not a readable weights file ({type(err).__name__}: {err})") from None
    _check_imagenet_state(state, path)
    return state


def imagenet_state(weights_file: str | os.PathLike = "") -> dict:
    """torchvision's ImageNet VGG-16 weights: from ``weights_file`` when given, else from torch's
    hub cache (:func:`imagenet_cache_path`), else downloaded by torchvision into that cache
    (needs internet once). Read with ``weights_only=True`` and checked key by key."""
    if weights_file:
        return _read_weights(Path(weights_file))
    cached = imagenet_cache_path()
    if cached.exists():
        return _read_weights(cached)
    from torchvision.models import VGG16_Weights
    try:
        state = VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
    except Exception as err:  # offline, refused, corrupt download...
        raise ModelError(
            f"torchvision's ImageNet VGG-16 weights are not in torch's hub cache and downloading them failed "
            f"({err}). Offline: put {cached.name} into {cached.parent} (or point $TORCH_HOME at a folder whose "
            "hub/checkpoints/ holds it), or pass its path as the weights_file parameter; or run with "
            "pretrained=False") from err
    _check_imagenet_state(state, VGG16_Weights.IMAGENET1K_V1.url)
    return state


def load_imagenet_weights(model: VGG, weights_file: str | os.PathLike = "") -> None:
    """Copy torchvision's ImageNet VGG-16 weights (:func:`imagenet_state`) into every layer
    but the 100-class head."""
    state = imagenet_state(weights_file)
    for k in [k for k in state if k.startswith("classifier.6.")]:
        del state[k]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"classifier.6.weight", "classifier.6.bias"}:
        raise ModelError(f"ImageNet weights do not fit this model: missing {missing}, "
                         f"unexpected {unexpected}")


def device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (CPU for a model without parameters)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def autocast(dev: torch.device):
    """bf16 autocast on CUDA (training and evaluation); a no-op elsewhere."""
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")


def is_channels_last(module: nn.Module) -> bool:
    """Whether ``module``'s first 4-d parameter (a convolution's weight) is stored channels-last."""
    w = next((q for q in module.parameters() if q.dim() == 4), None)
    return w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()


CHANNELS_LAST_DEVICES = frozenset({"cpu", "cuda"})
"""Device types on which :func:`channels_last` stores convolution weights NHWC (``make gpu-check``
measures both layouts on CUDA)."""


def fit_layout_is_channels_last(dev: torch.device) -> bool:
    """Whether training and evaluation on ``dev`` run channels-last (see :func:`channels_last`)."""
    return dev.type in CHANNELS_LAST_DEVICES


@contextlib.contextmanager
def channels_last(*modules: nn.Module | None):
    """Convolution weights stored channels-last (NHWC) while the block runs, then contiguous again.

    oneDNN's CPU convolutions run about 1.2x faster in that layout for this network (training
    steps with and without distillation; ``python -m helpers.studies.benchmark --training`` measures it
    side by side). Values are unchanged; only the kernels' summation order differs (float32
    rounding). ``None`` entries are skipped, and so are modules on a device type not in
    :data:`CHANNELS_LAST_DEVICES`; a module already channels-last is left as it is, so the
    manager nests (evaluation inside training).
    """
    changed = [m for m in modules if m is not None and not is_channels_last(m)
               and fit_layout_is_channels_last(device_of(m))]
    for m in changed:
        m.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        for m in changed:
            m.to(memory_format=torch.contiguous_format)


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict as CPU tensors (what is saved, wherever the model runs)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` holds a BatchNorm layer (VGG-16-BN does; torchvision VGG-16 does not, so
    recalibrating or folding its BatchNorm changes nothing)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def cpu_copy(model: nn.Module) -> nn.Module:
    """``model`` itself when it is on the CPU, else a CPU copy: for the stages that are CPU-only
    by nature (CPU latency, int8 quantization), without moving the caller's model."""
    return model if device_of(model).type == "cpu" else copy.deepcopy(model).cpu()


def create_model(profile: config.Profile) -> VGG:
    """The profile's model, seeded, with ImageNet weights when the profile asks for them, on the
    profile's device (:func:`config.device`)."""
    torch.manual_seed(profile.seed)
    model = build_model(spec_for(profile))
    if profile.pretrained:
        load_imagenet_weights(model, profile.weights_file)
    return model.to(config.device(profile))


def spec_of(model: VGG, arch: str) -> dict:
    """The spec of a (possibly pruned) VGG, read off its layers."""
    cfg, bn = [], False
    for m in model.features:
        if isinstance(m, nn.MaxPool2d):
            cfg.append("M")
        elif isinstance(m, nn.Conv2d):
            cfg.append(m.out_channels)
        bn = bn or isinstance(m, nn.BatchNorm2d)
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    dropout = next((m.p for m in model.classifier if isinstance(m, nn.Dropout)), 0.0)
    return dict(arch=arch, cfg=cfg, batch_norm=bn, pool=model.avgpool.output_size
                if isinstance(model.avgpool.output_size, int) else model.avgpool.output_size[0],
                hidden=[m.out_features for m in linears[:-1]], dropout=dropout,
                num_classes=linears[-1].out_features)


def model_from_state(spec: dict, state: dict) -> VGG:
    """Rebuild a model from its spec and state dict (no pickled modules)."""
    model = build_model(copy.deepcopy(spec))
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ModelError(f"the weights do not match the spec {spec['arch']} "
                         f"{spec['cfg']}: {str(err).splitlines()[0]}") from None
    return model


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
