"""A sweep's axes: every setting is a list of values, and the sweep is their product.

All values are checked here, before any data is made or any job starts, and
each error names the setting and what it accepts.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, fields

from ..backends import AUTO, BACKEND_NAMES
from ..network import DTYPES, HIDDEN_ACTIVATIONS, REDUCTIONS
from ..validation import check_choice, check_count, check_non_negative_finite, check_positive_finite
from . import data
from .config import TUTORIAL_HIDDEN, TUTORIAL_SETTINGS, JobConfig

BACKENDS = (AUTO, *BACKEND_NAMES)
# The axes in the order the product nests them (the last varies fastest).
PRODUCT_ORDER = ("dataset", "samples", "noise", "data_seed", "backend", "dtype", "passes", "lr", "l2",
                 "activation", "seed", "hidden")


def _values(value, name: str) -> tuple:
    """A scalar or an iterable of values -> a tuple without repeats, in the order given."""
    items = list(value) if isinstance(value, Iterable) and not isinstance(value, (str, bytes)) else [value]
    if not items:
        raise ValueError(f"{name}: give at least one value")
    return tuple(dict.fromkeys(items))


def _each(values: tuple, check) -> tuple:
    return tuple(dict.fromkeys(check(v) for v in values))


@dataclass(frozen=True)
class Axes:
    """The settings of a sweep; the defaults are tutorial 003's experiment."""

    hidden: tuple = TUTORIAL_HIDDEN
    lr: tuple = (TUTORIAL_SETTINGS["lr"],)
    l2: tuple = (TUTORIAL_SETTINGS["l2"],)
    seed: tuple = (TUTORIAL_SETTINGS["seed"],)
    dtype: tuple = (TUTORIAL_SETTINGS["dtype"],)
    backend: tuple = (AUTO,)
    passes: tuple = (TUTORIAL_SETTINGS["passes"],)
    activation: tuple = (TUTORIAL_SETTINGS["activation"],)
    dataset: tuple = (TUTORIAL_SETTINGS["dataset"],)
    samples: tuple = (None,)       # None: the data set's default (moons 200, spirals 300)
    noise: tuple = (None,)         # None: the data set's default (0.2 for moons and spirals)
    data_seed: tuple = (TUTORIAL_SETTINGS["data_seed"],)
    test_size: float | int | None = None
    reduction: str = TUTORIAL_SETTINGS["reduction"]

    @classmethod
    def of(cls, **settings) -> "Axes":
        """Axes from scalars or lists (``hidden=[1, 3]``, ``lr=0.1``); None keeps the default."""
        unknown = set(settings) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown sweep setting(s): {', '.join(sorted(unknown))}")
        given = {k: v for k, v in settings.items() if v is not None}
        axes = cls(**{k: (v if k in ("test_size", "reduction") else _values(v, k)) for k, v in given.items()})
        return axes.checked()

    def checked(self) -> "Axes":
        def hidden(h):
            return check_count(h, "hidden size (0: no hidden layer)", minimum=0)

        def dataset(name):
            data.parse_dataset(name)
            return name

        def maybe(check):
            return lambda v: None if v is None else check(v)

        return Axes(
            hidden=_each(self.hidden, hidden),
            lr=_each(self.lr, lambda v: check_positive_finite(v, "lr")),
            l2=_each(self.l2, lambda v: check_non_negative_finite(v, "l2")),
            seed=_each(self.seed, lambda v: check_count(v, "seed", minimum=0)),
            dtype=_each(self.dtype, lambda v: check_choice(v, DTYPES, "dtype")),
            backend=_each(self.backend, lambda v: check_choice(v, BACKENDS, "backend")),
            passes=_each(self.passes, lambda v: check_count(v, "passes", minimum=1)),
            activation=_each(self.activation, lambda v: check_choice(v, HIDDEN_ACTIVATIONS, "hidden activation")),
            dataset=_each(self.dataset, dataset),
            samples=_each(self.samples, maybe(lambda v: check_count(v, "samples", minimum=2))),
            noise=_each(self.noise, maybe(lambda v: check_non_negative_finite(v, "noise"))),
            data_seed=_each(self.data_seed, lambda v: check_count(v, "data seed", minimum=0)),
            test_size=self.test_size,
            reduction=check_choice(self.reduction, REDUCTIONS, "reduction"),
        )

    def data_specs(self) -> list[data.DataSpec]:
        """Each distinct data set the sweep needs (its settings checked against it)."""
        specs = (data.make_spec(name, samples, noise, seed)
                 for name, samples, noise, seed in itertools.product(self.dataset, self.samples, self.noise,
                                                                     self.data_seed))
        return list(dict.fromkeys(specs))

    def varying(self) -> list[str]:
        """The axes with more than one value, hidden size excepted (labels for tables and plots)."""
        return [name for name in PRODUCT_ORDER if name != "hidden" and len(getattr(self, name)) > 1]

    def expand(self, datasets: dict[data.DataSpec, data.Dataset]) -> list[JobConfig]:
        """The product of the axes as job configurations, in order, without repeats."""
        configs: dict[str, JobConfig] = {}
        for values in itertools.product(*(getattr(self, name) for name in PRODUCT_ORDER)):
            setting = dict(zip(PRODUCT_ORDER, values))
            spec = data.make_spec(setting["dataset"], setting["samples"], setting["noise"], setting["data_seed"])
            dataset = datasets[spec]
            if self.test_size is not None:
                data.test_count(self.test_size, dataset.n_samples)
            config = JobConfig(
                dataset=spec.name, samples=dataset.n_samples, noise=spec.noise, data_seed=spec.seed,
                data_sha256=dataset.sha256, test_size=self.test_size, hidden=setting["hidden"],
                activation=setting["activation"], lr=setting["lr"], l2=setting["l2"], reduction=self.reduction,
                seed=setting["seed"], dtype=setting["dtype"], backend=setting["backend"],
                passes=setting["passes"])
            configs.setdefault(config.key, config)
        return list(configs.values())
