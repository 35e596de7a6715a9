"""The one small interface through which a steering method plugs into the evaluators.

A :class:`Method` is fitted on a task's training items and returns a :class:`FittedMethod`:
either a steer (a :class:`~steerlab.vectors.SteeringVector` or
:class:`~steerlab.interventions.Steer`, with a strength) or a list of
:class:`~steerlab.interventions.Intervention` objects, plus where log-likelihood scoring should
steer (``steer_from``). Evaluators take ``**fitted.eval_kwargs()``; generation takes
``fitted.generate_steer()`` (or ``fitted.adaptive``: FASB). New methods only implement ``fit``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from types import UnionType
from typing import Any, Protocol, Sequence, Union, get_args, get_origin, get_type_hints, runtime_checkable

from ..interventions.add import Steer, SteerFrom
from ..interventions.base import Intervention
from ..interventions.fasb import FASBSteering
from ..models import LoadedModel
from ..vectors import SteeringVector

__all__ = ["FittedMethod", "Method", "config_from_kwargs", "config_to_dict"]


@dataclass(frozen=True)
class FittedMethod:
    """What a fitted method hands the evaluators (and ``generate``).

    ``steer`` + ``strength`` (the evaluators' ``steer=`` / ``strength=``), or ``interventions``;
    ``steer_from`` tells log-likelihood scoring which positions to steer. ``info`` is a small
    JSON-able summary (layers, heads, norms) stored in ``results.json``.
    """

    steer: SteeringVector | Steer | None = None
    strength: float | None = None
    interventions: tuple[Intervention, ...] = ()
    steer_from: SteerFrom = "last_prompt"
    info: dict[str, Any] = field(default_factory=dict)
    #: steering that decides per row (FASB): the evaluators' and ``evaluate_truthfulqa_gen``'s ``adaptive=``
    adaptive: FASBSteering | None = None

    @property
    def steered(self) -> bool:
        return self.steer is not None or bool(self.interventions) or self.adaptive is not None

    def eval_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``evaluate_truthfulqa_mc`` / ``evaluate_prompts`` / ``evaluate_behavior``."""
        kw: dict[str, Any] = {"steer": self.steer, "strength": self.strength,
                              "interventions": tuple(self.interventions), "steer_from": self.steer_from}
        if self.adaptive is not None:
            kw["adaptive"] = self.adaptive
        return kw

    def generate_steer(self, where: str | int = "generated") -> Steer | None:
        """A :class:`Steer` for :func:`steerlab.generate` (``None`` for the baseline)."""
        if self.steer is None:
            return None
        if isinstance(self.steer, Steer):
            return self.steer if self.strength is None else Steer(self.steer.vector, float(self.strength),
                                                                   self.steer.where)
        return Steer(self.steer, 1.0 if self.strength is None else float(self.strength), where)


@runtime_checkable
class Method(Protocol):
    """A steering method: a name, a JSON-able config, and ``fit``.

    ``needs_fit`` is False for methods that ignore the training items (the baseline), so the
    runner can skip fitting. ``fit`` must be deterministic for a given model and items.
    A method may also define ``validate(lm)``, raising ``ValueError`` for options that do not fit
    the model (e.g. a layer it lacks); the runner calls it before it writes or loads anything.
    """

    name: str
    needs_fit: bool

    def config_dict(self) -> dict[str, Any]: ...

    def fit(self, lm: LoadedModel, train_items: Sequence[Any], val_items: Sequence[Any]) -> FittedMethod: ...


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return asdict(cfg) if is_dataclass(cfg) else dict(cfg or {})


def config_from_kwargs(cls: type, method: str, kwargs: dict[str, Any]) -> Any:
    """Build config dataclass ``cls`` from keyword arguments, converting CLI strings to the field types."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(f"unknown option(s) for method '{method}': {', '.join(unknown)} "
                         f"(known: {', '.join(known) or 'none'})")
    types = _field_types(cls)
    return cls(**{k: _coerce(v, types[k], f"{method}.{k}") for k, v in kwargs.items()})


def _field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """The types each field of dataclass ``cls`` accepts (from its annotations, else its default's type)."""
    try:
        hints = get_type_hints(cls)
    except (NameError, TypeError):
        hints = {}
    defaults = cls()
    out: dict[str, tuple[type, ...]] = {}
    for f in fields(cls):
        hint = hints.get(f.name)
        args = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
        types = tuple(a for a in args if isinstance(a, type))
        out[f.name] = types or (type(getattr(defaults, f.name)),)
    return out


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
#: the types a command-line string is converted to, tried in this order
_PARSED = (type(None), bool, int, float, str)


def _parse_as(typ: type, text: str) -> Any:
    """``text`` as a ``typ`` (one of ``_PARSED``); ValueError when it is not one."""
    low = text.lower()
    if typ is type(None) and low == "none":
        return None
    if typ is bool and low in _TRUE + _FALSE:
        return low in _TRUE
    if typ in (int, float, str):
        return typ(text)
    raise ValueError(text)


def _coerce(value: Any, types: tuple[type, ...], name: str) -> Any:
    """A command-line string converted to the first of ``types`` that parses it; other values as given."""
    candidates = [t for t in _PARSED if t in types]
    if not isinstance(value, str) or not candidates or candidates == [str]:
        return value
    for typ in candidates:
        try:
            return _parse_as(typ, value.strip())
        except ValueError:
            continue
    expected = " or ".join("None" if t is type(None) else t.__name__ for t in types)
    raise ValueError(f"bad value {value!r} for {name}: expected {expected}")
