"""Every notebook parameter's type and valid values, checked before any work is done.

The notebooks call :func:`resolve` in the cell after their ``parameters`` cell; the batch
runner calls :func:`check` for every notebook it is about to run, before the first kernel
starts, so a bad ``-p`` fails at once and writes nothing. A test keeps :data:`NOTEBOOKS` and
the notebooks' own ``parameters`` cells in step.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..core import config
from ..core.vocabulary import ALLOCATIONS, COMPOSITES, CRITERIA, OTHER_CRITERIA, ROUTES, SCHEDULES


class ParameterError(ValueError):
    """A notebook parameter of the wrong type, out of range, or not among the valid names."""


_TYPES = {int: "int", float: "float", str: "str", bool: "bool", list: "list", dict: "dict"}


@dataclass(frozen=True)
class Rule:
    """What one parameter accepts. ``kind`` is its type (``list``: a YAML list of ``item``);
    ``choices`` limits a ``str`` or the items of a list; ``low``/``high`` bound numbers
    (inclusive unless ``open_low``/``open_high``); ``optional`` admits ``None``."""

    kind: type
    item: type | None = None
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    optional: bool = False

    def describe(self) -> str:
        text = f"list of {_TYPES[self.item]}" if self.kind is list else _TYPES[self.kind]
        if self.optional:
            text = f"{text} or null (the profile's value)"
        if self.choices:
            text += f"; one of {', '.join(map(str, self.choices))}" if self.kind is str else \
                f"; items from {', '.join(map(str, self.choices))}"
        if self.low is not None or self.high is not None:
            text += f"; in {self._interval()}"
        return text

    def _interval(self) -> str:
        low = "-inf" if self.low is None else self.low
        high = "inf" if self.high is None else self.high
        return f"{'(' if self.open_low else '['}{low}, {high}{')' if self.open_high or self.high is None else ']'}"

    def check(self, name: str, value) -> None:
        if value is None and self.optional:
            return
        if self.kind is list:
            if isinstance(value, str):
                raise ParameterError(f"{name} must be a list (YAML: [{value}]), got the string {value!r}")
            _check_type(name, value, list)
            if not value:
                raise ParameterError(f"{name} must not be empty")
            for v in value:
                self._check_one(f"{name} item", v, self.item)
        else:
            self._check_one(name, value, self.kind)

    def _check_one(self, name: str, value, kind: type) -> None:
        _check_type(name, value, kind)
        if self.choices and value not in self.choices:
            raise ParameterError(f"{name} is {value!r}; valid: {', '.join(map(str, self.choices))}")
        low_bad = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        high_bad = self.high is not None and (value >= self.high if self.open_high else value > self.high)
        if low_bad or high_bad:
            raise ParameterError(f"{name} must lie in {self._interval()}, got {value!r}")


def _check_type(name: str, value, kind: type) -> None:
    ok = isinstance(value, (int, float) if kind is float else kind) and \
        (kind is bool or not isinstance(value, bool))
    if not ok:
        raise ParameterError(f"{name} must be {_TYPES[kind]}, got {type(value).__name__} {value!r}")


def fraction(**kw) -> Rule:
    """A number in [0, 1) unless told otherwise."""
    return Rule(float, low=kw.pop("low", 0.0), high=kw.pop("high", 1.0), open_high=kw.pop("open_high", True), **kw)


def positive(kind: type = int, **kw) -> Rule:
    return Rule(kind, low=0, open_low=True, **kw)


_PROFILE = {"profile": Rule(str, choices=("", *config.PROFILES)), "data_dir": Rule(str),
            "subset_per_class": positive(int, optional=True), "profile_overrides": Rule(dict)}
_OVERRIDE = dict(optional=True)
_CRITERIA = CRITERIA

NOTEBOOKS: dict[str, dict[str, Rule]] = {
    "01_baseline_training": {
        **_PROFILE, "epochs": positive(int, **_OVERRIDE), "lr": positive(float, **_OVERRIDE),
        "batch_size": positive(int, **_OVERRIDE), "width": positive(float, **_OVERRIDE),
        "seed": Rule(int, low=0, **_OVERRIDE), "weights_file": Rule(str), "retrain": Rule(bool)},
    "02_relevance": {
        **_PROFILE, "criteria_names": Rule(list, item=str, choices=_CRITERIA),
        "composite": Rule(str, choices=COMPOSITES), "ref_per_class": positive(int, optional=True),
        "score_batch_size": positive(int)},
    "03_unstructured_pruning": {
        **_PROFILE, "criteria_names": Rule(list, item=str, choices=(*_CRITERIA, "lrp_zplus")),
        "max_sparsity": fraction(), "step": fraction(open_low=True), "chosen_sparsity": fraction()},
    "04_structured_pruning": {
        **_PROFILE, "criteria_names": Rule(list, item=str, choices=_CRITERIA),
        "report_sparsity": fraction(open_low=True, **_OVERRIDE), "report_margin": fraction(**_OVERRIDE),
        "alloc_weight_criterion": Rule(str, choices=_CRITERIA),
        "sweep_allocation": Rule(str, choices=ALLOCATIONS),
        "sweep_ratios": Rule(list, item=float, low=0, high=1, open_low=True, open_high=True),
        "full_width_benchmark": Rule(bool, optional=True)},
    "05_low_data": {
        **_PROFILE, "composite_names": Rule(list, item=str, choices=COMPOSITES),
        "other_criteria": Rule(list, item=str, choices=OTHER_CRITERIA),
        "lowdata_ref_sizes": Rule(list, item=int, low=1, **_OVERRIDE),
        "lowdata_seeds": positive(int, **_OVERRIDE)},
    "06_fine_tuning": {
        **_PROFILE, "criteria_names": Rule(list, item=str, choices=_CRITERIA),
        "routes_run": Rule(list, item=str, choices=ROUTES), "report_point": Rule(bool),
        "report_sparsity": fraction(open_low=True, **_OVERRIDE), "schedules": Rule(list, item=str, choices=SCHEDULES),
        "finetune_epochs": positive(float, **_OVERRIDE), "seeds": positive(int, **_OVERRIDE),
        "compute_seeds": positive(int, **_OVERRIDE),
        "iterative_step": fraction(open_low=True, open_high=False, **_OVERRIDE),
        "ref_per_class": positive(int, optional=True)},
    "07_quantization": {**_PROFILE, "source": Rule(str), "calibration_batches": positive(int)},
    "08_results": {k: _PROFILE[k] for k in ("profile", "subset_per_class", "profile_overrides")},
    "09_explorer": {
        **_PROFILE, "criterion": Rule(str, choices=_CRITERIA), "composite": Rule(str, choices=COMPOSITES),
        "allocation": Rule(str, choices=ALLOCATIONS), "kind": Rule(str, choices=("filters", "weights")),
        "amount": fraction(), "ref_per_class": positive(int, optional=True)},
}
"""Notebook (file name without ``.ipynb``) -> parameter name -> rule."""

_PROFILE_FIELDS = {f.name for f in dataclasses.fields(config.Profile)} - {"name"}


def _cross_checks(stem: str, values: dict) -> None:
    """Rules that tie two parameters together."""
    if stem == "03_unstructured_pruning" and {"step", "max_sparsity"} <= set(values) \
            and values["step"] > values["max_sparsity"]:
        raise ParameterError(f"step ({values['step']}) must not exceed max_sparsity ({values['max_sparsity']})")


def check(stem: str, values: dict) -> config.Profile:
    """Check ``values`` (name -> value) against notebook ``stem``'s rules and return the
    profile they select, with the notebook's profile overrides applied. Raises
    :class:`ParameterError` naming the parameter, what it must be and what it got."""
    rules = NOTEBOOKS.get(stem)
    if rules is None:
        raise ParameterError(f"no parameter rules for notebook {stem!r}; known: {', '.join(NOTEBOOKS)}")
    unknown = sorted(set(values) - set(rules))
    if unknown:
        raise ParameterError(f"{stem} takes no parameter {', '.join(unknown)}; valid: {', '.join(rules)}")
    for name, value in values.items():
        rules[name].check(name, value)
    _cross_checks(stem, values)
    return profile_of(values)


def profile_of(values: dict) -> config.Profile:
    """The profile a notebook's (or a run's) parameters select: ``profile``, then every
    parameter that is a profile field, then ``profile_overrides`` (any other field, e.g.
    ``{headline_fractions: [0.3]}``). A field set twice, or a key that is no profile field,
    is a :class:`ParameterError`."""
    given = {k: v for k, v in values.items() if k in _PROFILE_FIELDS}
    extra = values.get("profile_overrides") or {}
    unknown = sorted(set(extra) - _PROFILE_FIELDS)
    if unknown:
        raise ParameterError(f"profile_overrides names no profile field {', '.join(map(repr, unknown))}; "
                             f"valid: {', '.join(sorted(_PROFILE_FIELDS))}")
    twice = sorted(k for k in extra if given.get(k) is not None)
    if twice:
        raise ParameterError(f"{', '.join(twice)} given both as a parameter and in profile_overrides: set it once")
    try:
        return config.get_profile(values.get("profile") or None, **{**given, **extra})
    except ValueError as err:
        raise ParameterError(str(err)) from None


def resolve(stem: str, namespace: dict) -> config.Profile:
    """In a notebook: ``p = params.resolve("02_relevance", globals())`` checks every parameter
    the notebook declares, as the runner does, and returns the profile."""
    return check(stem, {name: namespace[name] for name in NOTEBOOKS[stem] if name in namespace})


def help_text() -> str:
    """Every parameter, the notebooks that take it and what it accepts (for ``--help``)."""
    names: dict[str, list[str]] = {}
    for stem, rules in NOTEBOOKS.items():
        for name, rule in rules.items():
            names.setdefault(f"  {name}: {rule.describe()}", []).append(stem[:2])
    return "\n".join(f"{line} [notebooks {', '.join(nbs)}]" for line, nbs in sorted(names.items()))
