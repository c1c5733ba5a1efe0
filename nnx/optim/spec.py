"""Optimisers and schedules named on the command line: ``adam``, ``adam:lr=0.01,amsgrad=True``,
``cosine:T_max=2000``, ``sequential:schedules=('warmup:total_iters=100','cosine:T_max=900'),milestones=(100,)``.
Values are Python literals; the names are those of ``OPTIMIZERS`` and ``SCHEDULES``."""
from __future__ import annotations

import ast
import difflib

from .optimizers import OPTIMIZERS, Optimizer
from .schedules import SCHEDULES, Schedule, Sequential


def parse_spec(text: str, table: dict, what: str) -> tuple[type, dict]:
    """The class ``text`` names in ``table`` and its settings, unchecked (``what`` names it in errors)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} must be a name such as {next(iter(table))!r}, optionally with settings "
                         f"name:key=value,...; got {text!r}")
    name, _, rest = text.strip().partition(":")
    key = name.strip().lower()
    if key not in table:
        close = difflib.get_close_matches(key, table, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown {what} {name!r}; expected one of {', '.join(table)}.{hint}")
    try:
        call = ast.parse(f"f({rest})", mode="eval").body
        if call.args:
            raise ValueError("settings must be given as key=value")
        settings = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError) as exc:
        raise ValueError(f"cannot read the settings of {what} {text!r} ({exc}); write them as "
                         f"{key}:key=value,key=value") from None
    return table[key], settings


def parse_optimizer(text: str, default_lr: float | None = None) -> Optimizer:
    """The optimiser ``text`` names; ``default_lr`` applies when the text sets no lr."""
    cls, settings = parse_spec(text, OPTIMIZERS, "optimizer")
    if default_lr is not None:
        if "lr" in settings and settings["lr"] != default_lr:
            raise ValueError(f"the learning rate is given twice ({text!r} and lr {default_lr:g}); give it once")
        settings["lr"] = default_lr
    try:
        return cls(**settings)
    except TypeError as exc:
        raise ValueError(f"optimizer {text!r}: {exc}") from None


def parse_schedule(text: str) -> Schedule:
    """The schedule ``text`` names; a sequential one lists its parts as texts."""
    cls, settings = parse_spec(text, SCHEDULES, "schedule")
    if cls is Sequential:
        parts = settings.get("schedules", ())
        if not isinstance(parts, (tuple, list)) or not all(isinstance(p, str) for p in parts):
            raise ValueError(f"schedule {text!r}: schedules must be a list of schedule texts, such as "
                             "('warmup:total_iters=100', 'cosine:T_max=900')")
        settings["schedules"] = tuple(parse_schedule(p) for p in parts)
    try:
        return cls(**settings)
    except TypeError as exc:
        raise ValueError(f"schedule {text!r}: {exc}") from None
