"""The optimiser and schedule axes as canonical spec text: what result records and job keys hold.

A job's configuration must be plain JSON with one spelling per meaning, so that
``adam``, ``adam:amsgrad=False`` and ``nnx.optim.Adam()`` name the same job and a
rerun finds it. Specs are ``nnx train``'s (``adam:amsgrad=True``,
``cosine:T_max=2000``; ``nnx.optim.spec``), written back with the settings sorted
and those at their defaults left out. A job's optimiser text never holds the
learning rate: that is the record's ``lr``.

The learning rate follows ``nnx train``: a spec without an lr takes the sweep's lr
value when the sweep was given one; otherwise SGD takes the tutorial's 0.01 and the
other optimisers their own defaults (Adam 1e-3). A spec with its own lr and a
different lr value is an error.
"""
from __future__ import annotations

from dataclasses import MISSING, fields

from ..optim import OPTIMIZERS, SGD, Constant, Optimizer, Schedule, Sequential
from ..optim.schedules import SCHEDULES
from ..optim.spec import parse_optimizer, parse_schedule, parse_spec
from .config import PLAIN_OPTIMIZER, TUTORIAL_SETTINGS

# An lr that every optimiser accepts, to check a spec's other settings before the lr is known.
_CHECK_LR = 1.0


def _defaults(cls: type) -> dict:
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def _render(name: str, settings: dict, defaults: dict, first: tuple[str, ...] = ()) -> str:
    """``name:key=value,...`` with the keys in ``first`` leading, the rest sorted, defaults dropped."""
    keys = [k for k in first if k in settings] + sorted(k for k in settings if k not in first)
    parts = [f"{k}={settings[k]!r}" for k in keys if k not in defaults or settings[k] != defaults[k]]
    return name + (":" + ",".join(parts) if parts else "")


def _named(text: str, exc: Exception, what: str) -> ValueError:
    message = str(exc)
    return ValueError(message if repr(text) in message else f"{what} {text!r}: {message}")


def _check_settings(text: str, cls: type, settings: dict, what: str) -> None:
    """Settings the class does not take are refused with the ones it does."""
    known = [f.name for f in fields(cls)]
    unknown = [k for k in settings if k not in known]
    if unknown:
        raise ValueError(f"{what} {text!r}: {cls.__name__} has no setting {', '.join(map(repr, unknown))}; its "
                         f"settings are {', '.join(known)}")


# ------------------------------------------------------------------ optimisers
def optimizer_spec(optimizer: Optimizer, *, with_lr: bool = False) -> str:
    """The canonical text of an optimiser (its lr only when ``with_lr``)."""
    settings = optimizer.settings()
    if not with_lr:
        settings.pop("lr")
    return _render(optimizer.kind, settings, {k: v for k, v in _defaults(type(optimizer)).items() if k != "lr"},
                   first=("lr",))


def optimizer_text(value) -> str:
    """A value of the optimizer axis (None: plain gradient descent, a spec, an ``nnx.optim`` optimiser)
    as canonical text, holding an lr only where the value sets one. Bad specs are refused here."""
    if value is None:
        return PLAIN_OPTIMIZER
    if isinstance(value, Optimizer):
        return optimizer_spec(value, with_lr=True)
    if not isinstance(value, str):
        raise TypeError(f"optimizer: give a name such as 'adam' or 'sgd:momentum=0.9', or an nnx.optim optimiser; "
                        f"got {type(value).__name__}")
    cls, settings = parse_spec(value, OPTIMIZERS, "optimizer")
    _check_settings(value, cls, settings, "optimizer")
    try:
        optimizer = cls(**{"lr": _CHECK_LR, **settings})
    except (TypeError, ValueError) as exc:
        raise _named(value, exc, "optimizer") from None
    return optimizer_spec(optimizer, with_lr="lr" in settings)


def resolve_optimizer(text: str, lr: float | None) -> Optimizer:
    """The optimiser a canonical ``text`` and an lr value of the sweep (None: none given) stand for."""
    cls, settings = parse_spec(text, OPTIMIZERS, "optimizer")
    if lr is None and cls is SGD and "lr" not in settings:
        lr = TUTORIAL_SETTINGS["lr"]  # PyTorch's SGD has no default lr: the tutorial's applies
    try:
        return parse_optimizer(text, lr)
    except ValueError as exc:
        raise _named(text, exc, "optimizer") from None


def job_optimizer(text: str, lr: float) -> Optimizer:
    """The optimiser of a job: its configuration's optimiser text (no lr in it) at its lr."""
    return parse_optimizer(text, lr)


# ------------------------------------------------------------------- schedules
def schedule_spec(schedule: Schedule) -> str:
    """The canonical text of a schedule; a sequential one lists its parts' own texts."""
    settings = {f.name: getattr(schedule, f.name) for f in fields(schedule)}
    if isinstance(schedule, Sequential):
        settings["schedules"] = tuple(schedule_spec(s) for s in schedule.schedules)
        return _render(schedule.name, settings, {"per": "update"}, first=("schedules", "milestones"))
    return _render(schedule.name, settings, _defaults(type(schedule)))


def build_schedule(text: str) -> Schedule:
    """The schedule a text names, sequential ones included (``sequential:schedules=(...),milestones=(...)``)."""
    cls, settings = parse_spec(text, SCHEDULES, "schedule")
    _check_settings(text, cls, settings, "schedule")
    try:
        return parse_schedule(text)
    except (TypeError, ValueError) as exc:
        raise _named(text, exc, "schedule") from None


def schedule_text(value) -> str | None:
    """A value of the schedule axis (None, a spec or an ``nnx.optim`` schedule) as canonical text;
    None for a constant learning rate, which is what no schedule means."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = build_schedule(value)
        except (TypeError, ValueError) as exc:
            raise _named(value, exc, "schedule") from None
    elif not isinstance(value, Schedule):
        raise TypeError(f"schedule: give a name such as 'cosine:T_max=2000', or an nnx.optim schedule; "
                        f"got {type(value).__name__}")
    return None if isinstance(value, Constant) else schedule_spec(value)


def job_schedule(text: str | None) -> Schedule | None:
    return None if text is None else build_schedule(text)
