"""LRP composites: which zennit rule each layer of the network uses.

Stock composites are named (``epsilon_plus_flat``, ``epsilon_gamma_box``,
``epsilon_alpha2_beta1``, ``epsilon``); a *depth composite* assigns one rule per depth
group, written as a string so it can be a notebook parameter and recorded in score files::

    depth:low=gamma(0.25),middle=epsilon(1e-06),high=zplus,dense=epsilon(0.25)

Groups: ``low`` = convolutions of the first two blocks (before the second max-pool),
``middle`` = blocks three and four, ``high`` = the later blocks, ``dense`` = every Linear.
The first convolution always gets the flat rule: filter and weight scores are read at layer
outputs, so the rule of the first layer changes input heatmaps only, never a score.
Rules that only ever see non-negative inputs (every layer after the first in a ReLU VGG) use
zennit's rules specialised to that case, with the same numbers in fewer passes. Everything is
built from zennit's rules and composites (``NameMapComposite`` for the
assignment, ``LayerMapComposite`` for activations, pooling and BatchNorm).
"""
from __future__ import annotations

import re

import torch
from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import (LayerMapComposite, MixedComposite, NameMapComposite,
                               SpecialFirstLayerMapComposite, layer_map_base)
from zennit.core import BasicHook, Stabilizer
from zennit.rules import AlphaBeta, ClampMod, Epsilon, Flat, GammaMod, ZBox
from zennit.types import Convolution, Linear

EPSILON = 1e-6  # the stabiliser zennit uses by default


class CompositeError(ValueError):
    """A composite name or depth-rule string that cannot be built."""


class ZPlusNonNegative(BasicHook):
    """zennit's ``ZPlus`` rule for layers whose inputs are non-negative (after ReLU or
    max-pooling): R_i = a_i w+_ij R_j / (sum_i a_i w+_ij + b+_j). zennit's ``ZPlus`` adds a
    second branch for negative inputs, which is identically zero here; skipping it halves the
    cost of the backward pass and changes no number (checked against ``EpsilonPlusFlat`` in
    the tests)."""

    def __init__(self, stabilizer=EPSILON):
        # z+ >= 0 here (non-negative inputs, weights and bias): adding eps is zennit's
        # stabiliser for this case, in one pass instead of three
        stabilize = (lambda z: z + stabilizer) if isinstance(stabilizer, float) else Stabilizer.ensure(stabilizer)
        super().__init__(
            input_modifiers=[lambda input: input.clamp(min=0)],
            param_modifiers=[ClampMod(min=0.)],
            output_modifiers=[lambda output: output],
            gradient_mapper=lambda out_grad, outputs: [out_grad / stabilize(outputs[0])],
            reducer=lambda inputs, gradients: inputs[0] * gradients[0])


class GammaNonNegative(BasicHook):
    """zennit's ``Gamma`` rule for non-negative inputs, in two passes instead of five: with
    a >= 0 the passes on a- are zero, and the sign of z = a w + b (which picks the branch) is
    the sign of the two remaining outputs' sum, (2 + gamma) z. Same numbers as ``Gamma``
    (checked against ``EpsilonGammaBox`` in the tests)."""

    def __init__(self, gamma=0.25, stabilizer=EPSILON):
        stabilize = Stabilizer.ensure(stabilizer)
        super().__init__(
            input_modifiers=[lambda input: input.clamp(min=0)] * 2,
            param_modifiers=[GammaMod(gamma, min=0.), GammaMod(gamma, max=0.)],
            output_modifiers=[lambda output: output] * 2,
            gradient_mapper=lambda out_grad, outputs: [
                (_times_z(outputs) > 0) * out_grad / stabilize(outputs[0]),
                (_times_z(outputs) < 0) * out_grad / stabilize(outputs[1])],
            reducer=lambda inputs, gradients: inputs[0] * gradients[0] + inputs[1] * gradients[1])


def _times_z(outputs):
    """(2 + gamma) z: the sum of the two modified outputs has the sign of the layer's output."""
    return outputs[0] + outputs[1]


class AlphaBetaNonNegative(BasicHook):
    """zennit's ``AlphaBeta`` rule for non-negative inputs, in two passes instead of four (the
    passes on a- are zero). Same numbers as ``AlphaBeta`` (checked against
    ``EpsilonAlpha2Beta1`` in the tests)."""

    def __init__(self, alpha=2., beta=1., stabilizer=EPSILON):
        stabilize = Stabilizer.ensure(stabilizer)
        super().__init__(
            input_modifiers=[lambda input: input.clamp(min=0)] * 2,
            param_modifiers=[ClampMod(min=0.), ClampMod(max=0.)],
            output_modifiers=[lambda output: output] * 2,
            gradient_mapper=lambda out_grad, outputs: [out_grad / stabilize(o) for o in outputs],
            reducer=lambda inputs, gradients: alpha * inputs[0] * gradients[0] - beta * inputs[1] * gradients[1])


class EpsilonPlusFlatVGG(SpecialFirstLayerMapComposite):
    """zennit's ``EpsilonPlusFlat`` (flat rule for the first layer, z+ for the other convs,
    epsilon for dense layers) with z+ specialised to the non-negative inputs of a ReLU VGG."""

    def __init__(self, epsilon=EPSILON, canonizers=None):
        layer_map = layer_map_base(EPSILON) + [(Convolution, ZPlusNonNegative()),
                                               (torch.nn.Linear, Epsilon(epsilon=epsilon))]
        super().__init__(layer_map=layer_map, first_map=[(Linear, Flat())], canonizers=canonizers)


class EpsilonGammaBoxVGG(SpecialFirstLayerMapComposite):
    """zennit's ``EpsilonGammaBox`` (box rule first, gamma on the other convs, epsilon on dense)
    with gamma specialised to non-negative inputs."""

    def __init__(self, low, high, gamma=0.25, canonizers=None):
        layer_map = layer_map_base(EPSILON) + [(Convolution, GammaNonNegative(gamma)),
                                               (torch.nn.Linear, Epsilon(epsilon=EPSILON))]
        super().__init__(layer_map=layer_map, first_map=[(Convolution, ZBox(low=low, high=high))],
                         canonizers=canonizers)


class EpsilonAlpha2Beta1VGG(SpecialFirstLayerMapComposite):
    """zennit's ``EpsilonAlpha2Beta1`` with alpha-beta specialised to non-negative inputs on
    every conv but the first (whose inputs are normalised pixels: zennit's own rule there)."""

    def __init__(self, canonizers=None):
        layer_map = layer_map_base(EPSILON) + [(Convolution, AlphaBetaNonNegative()),
                                               (torch.nn.Linear, Epsilon(epsilon=EPSILON))]
        super().__init__(layer_map=layer_map, first_map=[(Convolution, AlphaBeta(2., 1.))], canonizers=canonizers)


def _merge_bn():
    return [SequentialMergeBatchNorm()]


COMPOSITES = {
    # Yeom et al. 2021 for VGG: flat rule on the first layer, z+ on convs, epsilon on dense.
    "epsilon_plus_flat": lambda low, high: EpsilonPlusFlatVGG(canonizers=_merge_bn()),
    "epsilon_gamma_box": lambda low, high: EpsilonGammaBoxVGG(low, high, canonizers=_merge_bn()),
    "epsilon_alpha2_beta1": lambda low, high: EpsilonAlpha2Beta1VGG(canonizers=_merge_bn()),
    # Hatefi et al. 2024: LRP-epsilon on every layer, a strong default for pruning.
    "epsilon": lambda low, high: LayerMapComposite(
        layer_map_base(EPSILON) + [(Convolution, Epsilon(EPSILON)), (torch.nn.Linear, Epsilon(EPSILON))],
        canonizers=_merge_bn()),
}

GROUPS = ("low", "middle", "high", "dense")
RULES = {  # rule name -> (zennit rule from its parameter, default parameter; None: no parameter)
    "epsilon": (lambda v: Epsilon(epsilon=v), EPSILON),
    "gamma": (lambda v: GammaNonNegative(gamma=v), 0.25),
    "zplus": (lambda v: ZPlusNonNegative(), None),
}
DEPTH_PREFIX = "depth:"
_RULE = re.compile(r"^(\w+)(?:\(([^()]+)\))?$")


def valid_names() -> str:
    return (f"{', '.join(COMPOSITES)}, or '{DEPTH_PREFIX}' followed by one rule per group "
            f"({', '.join(GROUPS)}) from {', '.join(RULES)}, e.g. "
            f"'{depth_name({g: ('epsilon', EPSILON) for g in GROUPS})}'")


def parse_depth(name: str) -> dict[str, tuple[str, float | None]]:
    """``depth:low=...,middle=...,high=...,dense=...`` as {group: (rule, parameter)}."""
    body = name[len(DEPTH_PREFIX):] if name.startswith(DEPTH_PREFIX) else None
    items = dict(item.split("=", 1) for item in body.split(",") if "=" in item) if body else {}
    if body is None or set(items) != set(GROUPS) or len(body.split(",")) != len(GROUPS):
        raise CompositeError(f"composite {name!r} is not valid; valid: {valid_names()}")
    return {g: _parse_rule(g, items[g].strip()) for g in GROUPS}


def _parse_rule(group: str, text: str) -> tuple[str, float | None]:
    match = _RULE.match(text)
    if not match or match.group(1) not in RULES:
        raise CompositeError(f"rule {text!r} for group {group!r} is not valid; valid rules: "
                             f"{', '.join(RULES)} (optionally with a parameter, e.g. gamma(0.25))")
    rule, value = match.group(1), match.group(2)
    default = RULES[rule][1]
    if default is None:
        if value is not None:
            raise CompositeError(f"rule {rule!r} takes no parameter, got {text!r}")
        return rule, None
    try:
        number = float(value) if value is not None else default
    except ValueError:
        raise CompositeError(f"the parameter of {text!r} must be a number") from None
    if not number > 0:
        raise CompositeError(f"the parameter of {text!r} must be > 0")
    return rule, number


def depth_name(assignment: dict[str, tuple[str, float | None]]) -> str:
    """The canonical string of a depth assignment (what :func:`parse_depth` reads back)."""
    def one(rule, value):
        return rule if value is None else f"{rule}({value:g})"
    return DEPTH_PREFIX + ",".join(f"{g}={one(*assignment[g])}" for g in GROUPS)


def check(name: str) -> None:
    """Raise ``CompositeError`` naming the valid choices unless ``name`` can be built."""
    if not isinstance(name, str):
        raise CompositeError(f"composite must be a string, got {name!r}; valid: {valid_names()}")
    if name not in COMPOSITES:
        parse_depth(name)


def depth_groups(model: nn.Module) -> dict[str, list[str]]:
    """Layer names of each depth group, by the number of max-pools before each convolution."""
    groups, pools = {g: [] for g in GROUPS}, 0
    for name, module in model.named_modules():
        if isinstance(module, nn.MaxPool2d):
            pools += 1
        elif isinstance(module, nn.Conv2d):
            groups["low" if pools < 2 else "middle" if pools < 4 else "high"].append(name)
        elif isinstance(module, nn.Linear):
            groups["dense"].append(name)
    return groups


def depth_composite(model: nn.Module, name: str):
    """zennit composite for a depth assignment: the group rules by layer name, flat for the
    first convolution, zennit's base map for activations, pooling and BatchNorm."""
    assignment, groups = parse_depth(name), depth_groups(model)
    first = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    name_map = [((first,), Flat())] if first else []
    for g in GROUPS:
        rule, value = assignment[g]
        layers = tuple(n for n in groups[g] if n != first)
        if layers:
            name_map.append((layers, RULES[rule][0](value)))
    return MixedComposite([NameMapComposite(name_map), LayerMapComposite(layer_map_base(EPSILON))],
                          canonizers=_merge_bn())


def make(name: str, model: nn.Module, low: torch.Tensor, high: torch.Tensor):
    """The zennit composite called ``name`` (stock or depth) for ``model``; ``low``/``high``
    bound the input pixels (for the box rule)."""
    check(name)
    return COMPOSITES[name](low, high) if name in COMPOSITES else depth_composite(model, name)
