"""A sweep's axes: every setting is a list of values, and the sweep is their product.

All values are checked here, before any data is made or any job starts, and
each error names the setting and what it accepts.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, fields
from numbers import Integral

from ..backends import AUTO, BACKEND_NAMES
from ..network import DTYPES, HIDDEN_ACTIVATIONS, REDUCTIONS
from ..validation import check_choice, check_count, check_non_negative_finite, check_positive_finite
from . import data, trainers
from .config import PLAIN_OPTIMIZER, TUTORIAL_HIDDEN, TUTORIAL_SETTINGS, JobConfig
from .job import training_samples

BACKENDS = (AUTO, *BACKEND_NAMES)
# The axes in the order the product nests them (the last varies fastest).
PRODUCT_ORDER = ("dataset", "samples", "noise", "data_seed", "backend", "dtype", "passes", "epochs", "optimizer",
                 "lr", "schedule", "batch_size", "l2", "activation", "seed", "hidden")
FULL_BATCH = "full"  # how the command line and the table spell batch_size None


def _values(value, name: str) -> tuple:
    """A scalar or an iterable of values -> a tuple without repeats, in the order given."""
    items = list(value) if isinstance(value, Iterable) and not isinstance(value, (str, bytes)) else [value]
    if not items:
        raise ValueError(f"{name}: give at least one value")
    return tuple(dict.fromkeys(items))


def _each(values: tuple, check) -> tuple:
    return tuple(dict.fromkeys(check(v) for v in values))


def _maybe(check):
    return lambda v: None if v is None else check(v)


def check_batch_size(value) -> int | None:
    """A batch size: a whole number >= 1, or None / 'full' for all training samples at once."""
    if value is None or (isinstance(value, str) and value.strip().lower() == FULL_BATCH):
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"batch size must be an integer >= 1, or {FULL_BATCH!r} for all samples at once; "
                         f"got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Axes:
    """The settings of a sweep; the defaults are tutorial 003's experiment.

    ``lr`` None is no lr given: SGD runs at the tutorial's 0.01, other optimisers
    at their own defaults (``nnx.sweep.trainers``). ``passes`` None is the
    tutorial's 20,000 unless ``epochs`` are given instead.
    """

    hidden: tuple = TUTORIAL_HIDDEN
    lr: tuple = (None,)
    l2: tuple = (TUTORIAL_SETTINGS["l2"],)
    seed: tuple = (TUTORIAL_SETTINGS["seed"],)
    dtype: tuple = (TUTORIAL_SETTINGS["dtype"],)
    backend: tuple = (AUTO,)
    passes: tuple = (None,)
    epochs: tuple = (None,)        # None: the length is passes
    batch_size: tuple = (None,)    # None: full batch
    optimizer: tuple = (PLAIN_OPTIMIZER,)
    schedule: tuple = (None,)      # None: a constant learning rate
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
        """The axes with every value checked and in canonical form (errors name the setting)."""
        def hidden(h):
            return check_count(h, "hidden size (0: no hidden layer)", minimum=0)

        def dataset(name):
            data.parse_dataset(name)
            return name

        epochs = self.epochs
        if epochs != (None,):
            epochs = _each(epochs, lambda v: check_count(v, "epochs", minimum=1))
            if self.passes != (None,):
                raise ValueError("give passes (updates) or epochs (passes over the data), not both")
            passes = (None,)
        else:
            passes = _each(self.passes, lambda v: check_count(TUTORIAL_SETTINGS["passes"] if v is None else v,
                                                              "passes", minimum=1))
        axes = Axes(
            hidden=_each(self.hidden, hidden),
            lr=_each(self.lr, _maybe(lambda v: check_positive_finite(v, "lr"))),
            l2=_each(self.l2, lambda v: check_non_negative_finite(v, "l2")),
            seed=_each(self.seed, lambda v: check_count(v, "seed", minimum=0)),
            dtype=_each(self.dtype, lambda v: check_choice(v, DTYPES, "dtype")),
            backend=_each(self.backend, lambda v: check_choice(v, BACKENDS, "backend")),
            passes=passes,
            epochs=epochs,
            batch_size=_each(self.batch_size, check_batch_size),
            optimizer=_each(self.optimizer, trainers.optimizer_text),
            schedule=_each(self.schedule, trainers.schedule_text),
            activation=_each(self.activation, lambda v: check_choice(v, HIDDEN_ACTIVATIONS, "hidden activation")),
            dataset=_each(self.dataset, dataset),
            samples=_each(self.samples, _maybe(lambda v: check_count(v, "samples", minimum=2))),
            noise=_each(self.noise, _maybe(lambda v: check_non_negative_finite(v, "noise"))),
            data_seed=_each(self.data_seed, lambda v: check_count(v, "data seed", minimum=0)),
            test_size=self.test_size,
            reduction=check_choice(self.reduction, REDUCTIONS, "reduction"),
        )
        axes.trainers()  # every optimiser with every lr: a conflict is refused now
        return axes

    def trainers(self) -> dict[tuple, tuple[str, float]]:
        """(optimizer value, lr value) -> (the job's optimiser text, the lr it runs at)."""
        resolved = {}
        for text, lr in itertools.product(self.optimizer, self.lr):
            optimizer = trainers.resolve_optimizer(text, lr)
            resolved[text, lr] = (trainers.optimizer_spec(optimizer), optimizer.lr)
        return resolved

    def data_specs(self) -> list[data.DataSpec]:
        """Each distinct data set the sweep needs (its settings checked against it)."""
        specs = (data.make_spec(name, samples, noise, seed)
                 for name, samples, noise, seed in itertools.product(self.dataset, self.samples, self.noise,
                                                                     self.data_seed))
        return list(dict.fromkeys(specs))

    def varying(self) -> list[str]:
        """The axes whose jobs take more than one value, hidden size excepted (labels for tables and
        plots); the optimiser and lr as the jobs run them (``adam`` and ``sgd`` differ in lr too)."""
        resolved = self.trainers().values()
        counts = {"optimizer": len({text for text, _ in resolved}), "lr": len({lr for _, lr in resolved})}
        return [name for name in PRODUCT_ORDER
                if name != "hidden" and counts.get(name, len(getattr(self, name))) > 1]

    def expand(self, datasets: dict[data.DataSpec, data.Dataset]) -> list[JobConfig]:
        """The product of the axes as job configurations, in order, without repeats."""
        configs: dict[str, JobConfig] = {}
        resolved = self.trainers()
        for values in itertools.product(*(getattr(self, name) for name in PRODUCT_ORDER)):
            setting = dict(zip(PRODUCT_ORDER, values))
            spec = data.make_spec(setting["dataset"], setting["samples"], setting["noise"], setting["data_seed"])
            dataset = datasets[spec]
            if self.test_size is not None:
                data.test_count(self.test_size, dataset.n_samples)
            optimizer, lr = resolved[setting["optimizer"], setting["lr"]]
            config = JobConfig(
                dataset=spec.name, samples=dataset.n_samples, noise=spec.noise, data_seed=spec.seed,
                data_sha256=dataset.sha256, test_size=self.test_size, hidden=setting["hidden"],
                activation=setting["activation"], lr=lr, l2=setting["l2"], reduction=self.reduction,
                seed=setting["seed"], dtype=setting["dtype"], backend=setting["backend"],
                passes=setting["passes"], epochs=setting["epochs"], batch_size=setting["batch_size"],
                optimizer=optimizer, schedule=setting["schedule"])
            _check_batch_fits(config, dataset)
            configs.setdefault(config.key, config)
        return list(configs.values())


def _check_batch_fits(config: JobConfig, dataset: data.Dataset) -> None:
    """A batch larger than the training samples would silently be full batch in a shuffled order."""
    rows = training_samples(config, dataset)
    if config.batch_size is not None and config.batch_size > rows:
        held = "" if config.test_size is None else f" (after holding out {dataset.n_samples - rows} for testing)"
        raise ValueError(f"batch size {config.batch_size} is larger than the {rows} training samples of "
                         f"{dataset.spec.label}{held}; give a batch size up to {rows}, or {FULL_BATCH!r} for all "
                         "samples at once")
