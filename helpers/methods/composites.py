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
zennit's rules specialised to that case, with the same numbers in fewer passes; epsilon,
gamma and alpha-beta are zennit ``Hook`` subclasses (:class:`Redirected`) that let the
layer's own backward pass do half the work. Everything is
built from zennit's rules and composites (``NameMapComposite`` for the
assignment, ``LayerMapComposite`` for activations, pooling and BatchNorm).
"""
from __future__ import annotations

import re
import weakref

import torch
from torch import nn
from zennit.canonizers import SequentialMergeBatchNorm
from zennit.composites import (LayerMapComposite, MixedComposite, NameMapComposite,
                               SpecialFirstLayerMapComposite, layer_map_base)
from zennit.core import BasicHook, Hook, ParamMod, Stabilizer
from zennit.rules import AlphaBeta, ClampMod, Flat, ZBox
from zennit.types import Convolution, Linear

from ..core import vocabulary
from ..core.vocabulary import EPSILON_ALPHA2_BETA1, EPSILON_GAMMA_BOX, EPSILON_PLUS_FLAT

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


class Redirected(Hook):
    """A zennit ``Hook`` for rules of the form R_in = a * (W^T g + W'^T h): W is the layer's
    own weight, W' a modified copy (a zennit ``ParamMod``; none when ``h`` is not needed), and
    g, h are maps of the output relevance R and of the outputs z = layer(a; W), z' = layer(a; W').

    Under zennit's hooks the layer's own backward pass runs anyway (its result is then
    replaced by the rule's). Here a pre-hook on the output's ``grad_fn`` hands it g instead of
    R, so it computes W^T g; z' is computed once in the forward pass and only W'^T h costs an
    extra pass. zennit's ``BasicHook`` recomputes every output in the backward pass and
    back-propagates through each, so the same numbers cost two convolutions more per layer.
    Subclasses set ``modifier`` and implement :meth:`split` (R, z, z') -> (g, h)."""

    modifier = None

    def __init__(self, **settings):
        super().__init__()
        self.settings, self.checked = settings, False

    def copy(self):
        return type(self)(**self.settings)

    def forward(self, module, input, output):
        a = input[0]
        if self.modifier is not None:
            if not self.checked and (a < 0).any():  # once per registration: the check costs a pass
                raise CompositeError(f"{type(self).__name__} takes non-negative inputs (after a ReLU or "
                                     f"max-pool), but {module} got negative ones: give that layer another rule")
            with torch.enable_grad(), ParamMod.ensure(self.modifier)(module) as modified:
                a_mod = a.detach().requires_grad_()
                self.stored_tensors["modified"] = (a_mod, modified.forward(a_mod))
        self.stored_tensors.update(input=a.detach(), output=output.detach())
        self.checked = True

    def post_forward(self, module, input, output):
        hook_ref = weakref.ref(self)

        def redirect(grad_outputs):
            hook = hook_ref()
            if hook is None or not hook.active:
                return None
            stored = hook.stored_tensors
            stored["grad_output"] = grad_outputs
            z_mod = stored["modified"][1].detach() if "modified" in stored else None
            g, stored["h"] = hook.split(grad_outputs[0], stored["output"], z_mod)
            return (g, *grad_outputs[1:])

        if output.grad_fn is not None:
            self.tensor_handles.append(output.grad_fn.register_prehook(redirect))
        return output

    def backward(self, module, grad_input, grad_output):
        total = grad_input[0]
        if self.modifier is not None:
            a_mod, z_mod = self.stored_tensors.pop("modified")
            total = total + torch.autograd.grad(z_mod, a_mod, self.stored_tensors["h"])[0]
        relevance = self.stored_tensors["input"] * total
        return tuple(relevance if g is not None and g.shape == relevance.shape else None for g in grad_input)

    def split(self, r, z, z_mod):
        raise NotImplementedError


class EpsilonRedirected(Redirected):
    """zennit's ``Epsilon`` rule, R_in = a * W^T (R / (z + eps sign z)), in one pass: the
    layer's own backward pass computes W^T g. Same numbers as ``Epsilon`` (checked in the tests)."""

    def __init__(self, epsilon=EPSILON):
        super().__init__(epsilon=epsilon)
        self.stabilize = Stabilizer.ensure(epsilon)

    def split(self, r, z, z_mod):
        return r / self.stabilize(z), None


class GammaNonNegative(Redirected):
    """zennit's ``Gamma`` rule for non-negative inputs: R_in = a * sum_j (w + gamma w^s)_ij s_j,
    with w^s = w+ where z_j > 0 (s_j = R_j / (z + gamma z+)_j) and w- where z_j < 0
    (s_j = R_j / (z + gamma z-)_j). With z- = z - z+ this is a * (W^T g + W+^T h),
    g = s_pos + (1 + gamma) s_neg, h = gamma (s_pos - s_neg): one modified output (z+) and
    one extra pass, where zennit's ``Gamma`` makes five and ``BasicHook`` with two
    modifiers two. Same numbers as ``Gamma`` (checked against ``EpsilonGammaBox`` in the tests)."""

    modifier = ClampMod(min=0.)

    def __init__(self, gamma=0.25, stabilizer=EPSILON):
        super().__init__(gamma=gamma, stabilizer=stabilizer)
        self.gamma, self.epsilon = gamma, stabilizer

    def split(self, r, z, zp):
        gam, sign = self.gamma, z.sign()
        # the denominator: z + gamma z+ where z > 0, z + gamma z- = z + gamma (z - z+) where z < 0
        den = z + gam * torch.where(sign > 0, zp, z - zp)
        t = r / (den + self.epsilon * sign) * sign.abs()  # stabilised like zennit's (den has z's sign)
        u = t * sign                                      # s_pos - s_neg
        return t + (gam / 2) * (t - u), gam * u


class AlphaBetaNonNegative(Redirected):
    """zennit's ``AlphaBeta`` rule for non-negative inputs: R_in = a * (alpha W+^T R/z+ -
    beta W-^T R/z-). With W- = W - W+ and z- = z - z+ this is a * (W^T g + W+^T h),
    g = -beta s_neg, h = alpha s_pos + beta s_neg: one modified output and one extra pass
    (zennit's ``AlphaBeta``: four). Same numbers in float64 (checked against
    ``EpsilonAlpha2Beta1``); in float32 the rewrite loses digits where z- is near zero next
    to z+ (1.4e-3 relative on a random 4-channel test model; on the cpu baseline at most
    1.4e-7 of a layer's largest score, with the same filter order)."""

    modifier = ClampMod(min=0.)

    def __init__(self, alpha=2., beta=1., stabilizer=EPSILON):
        super().__init__(alpha=alpha, beta=beta, stabilizer=stabilizer)
        self.alpha, self.beta, self.stabilize = alpha, beta, Stabilizer.ensure(stabilizer)

    def split(self, r, z, zp):
        s_pos, s_neg = r / self.stabilize(zp), r / self.stabilize(z - zp)
        return -self.beta * s_neg, self.alpha * s_pos + self.beta * s_neg


class EpsilonPlusFlatVGG(SpecialFirstLayerMapComposite):
    """zennit's ``EpsilonPlusFlat`` (flat rule for the first layer, z+ for the other convs,
    epsilon for dense layers) with z+ specialised to the non-negative inputs of a ReLU VGG."""

    def __init__(self, epsilon=EPSILON, canonizers=None):
        layer_map = layer_map_base(EPSILON) + [(Convolution, ZPlusNonNegative()),
                                               (torch.nn.Linear, EpsilonRedirected(epsilon))]
        super().__init__(layer_map=layer_map, first_map=[(Linear, Flat())], canonizers=canonizers)


class EpsilonGammaBoxVGG(SpecialFirstLayerMapComposite):
    """zennit's ``EpsilonGammaBox`` (box rule first, gamma on the other convs, epsilon on dense)
    with gamma specialised to non-negative inputs."""

    def __init__(self, low, high, gamma=0.25, canonizers=None):
        layer_map = layer_map_base(EPSILON) + [(Convolution, GammaNonNegative(gamma)),
                                               (torch.nn.Linear, EpsilonRedirected(EPSILON))]
        super().__init__(layer_map=layer_map, first_map=[(Convolution, ZBox(low=low, high=high))],
                         canonizers=canonizers)


class EpsilonAlpha2Beta1VGG(SpecialFirstLayerMapComposite):
    """zennit's ``EpsilonAlpha2Beta1`` with alpha-beta specialised to non-negative inputs on
    every conv but the first (whose inputs are normalised pixels: zennit's own rule there)."""

    def __init__(self, canonizers=None):
        layer_map = layer_map_base(EPSILON) + [(Convolution, AlphaBetaNonNegative()),
                                               (torch.nn.Linear, EpsilonRedirected(EPSILON))]
        super().__init__(layer_map=layer_map, first_map=[(Convolution, AlphaBeta(2., 1.))], canonizers=canonizers)


def _merge_bn():
    return [SequentialMergeBatchNorm()]


COMPOSITES = {
    # Yeom et al. 2021 for VGG: flat rule on the first layer, z+ on convs, epsilon on dense.
    EPSILON_PLUS_FLAT: lambda low, high: EpsilonPlusFlatVGG(canonizers=_merge_bn()),
    EPSILON_GAMMA_BOX: lambda low, high: EpsilonGammaBoxVGG(low, high, canonizers=_merge_bn()),
    EPSILON_ALPHA2_BETA1: lambda low, high: EpsilonAlpha2Beta1VGG(canonizers=_merge_bn()),
    # Hatefi et al. 2024: LRP-epsilon on every layer, a strong default for pruning.
    vocabulary.EPSILON: lambda low, high: LayerMapComposite(
        layer_map_base(EPSILON) + [(Convolution, EpsilonRedirected(EPSILON)),
                                   (torch.nn.Linear, EpsilonRedirected(EPSILON))],
        canonizers=_merge_bn()),
}

GROUPS = ("low", "middle", "high", "dense")
RULES = {  # rule name -> (zennit rule from its parameter, default parameter; None: no parameter)
    "epsilon": (lambda v: EpsilonRedirected(v), EPSILON),
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


STOCK_RULES = {  # the rule of each depth group in the stock composites (the first conv aside)
    EPSILON_PLUS_FLAT: {"low": ("zplus", None), "middle": ("zplus", None), "high": ("zplus", None),
                          "dense": ("epsilon", EPSILON)},
    EPSILON_GAMMA_BOX: {"low": ("gamma", 0.25), "middle": ("gamma", 0.25), "high": ("gamma", 0.25),
                          "dense": ("epsilon", EPSILON)},
    vocabulary.EPSILON: {g: ("epsilon", EPSILON) for g in GROUPS},
}


def same_scores(a: str, b: str) -> bool:
    """Whether composites ``a`` and ``b`` give the same filter and weight scores: the same rule
    on every depth group. Scores are read at layer outputs, so the first conv's rule (flat, box
    or epsilon) never enters them; alpha-beta has no depth form and matches only itself."""
    def rules(name):
        return STOCK_RULES.get(name) if name in COMPOSITES else parse_depth(name)
    return a == b or (rules(a) is not None and rules(a) == rules(b))


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
