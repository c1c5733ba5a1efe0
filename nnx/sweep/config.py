"""One sweep job's settings, their canonical JSON and the SHA-256 key that names the job.

A job is a pure function of its configuration, so the key of the canonical JSON
(sorted keys, no whitespace, floats as Python's shortest repr, the data's own
SHA-256 included) names its result: a rerun finds finished jobs by key, and two
sweeps that share a job share its result.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

# Bump when what a job computes changes, so results of the old meaning are not reused.
SCHEMA = 1

# Tutorial 003's experiment: what `nnx sweep` runs with no arguments.
TUTORIAL_HIDDEN = (0, 1, 2, 3, 4, 5, 20, 50)
TUTORIAL_SETTINGS = dict(dataset="moons", samples=200, noise=0.2, data_seed=0, lr=0.01, l2=0.01,
                         reduction="sum", activation="tanh", seed=0, passes=20_000, dtype="float64")
# The tutorials' plain gradient descent (SGD without momentum) as the optimizer axis spells it.
PLAIN_OPTIMIZER = "sgd"
# Settings that joined the configuration after its first version, at the values every job had
# before: left out of the canonical JSON at these values (so the keys of earlier results stand)
# and filled in to records written before they existed.
LATER_DEFAULTS = dict(epochs=None, batch_size=None, optimizer=PLAIN_OPTIMIZER, schedule=None)


def canonical_json(value) -> str:
    """The one text a value has: sorted keys, no spaces, no NaN (it has no JSON form)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


@dataclass(frozen=True)
class JobConfig:
    """Everything that determines one fit's result.

    ``hidden`` 0 means no hidden layer (``MLP([features, classes])``: logistic
    regression). ``backend`` is the requested name (``auto`` included); the
    record says which backend ran. The length is ``passes`` (updates) or
    ``epochs`` (passes over the training samples), never both. ``optimizer`` and
    ``schedule`` are canonical spec text (``nnx.sweep.trainers``); ``lr`` is the
    learning rate the optimiser runs at, and ``batch_size`` None is full batch.
    """

    dataset: str            # moons, spirals, xor or csv
    samples: int            # samples in the whole data set, before any test split
    noise: float | None
    data_seed: int          # draws the generated data and the train/test split
    data_sha256: str        # the data's own hash (features, labels and classes)
    test_size: float | int | None  # a fraction of the samples, or a count; None: train on everything
    hidden: int
    activation: str
    lr: float
    l2: float
    reduction: str
    seed: int               # initialisation seed
    dtype: str
    backend: str
    passes: int | None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str = PLAIN_OPTIMIZER
    schedule: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def canonical(self) -> str:
        values = {k: v for k, v in self.as_dict().items() if k not in LATER_DEFAULTS or v != LATER_DEFAULTS[k]}
        return canonical_json({"schema": SCHEMA, **values})

    @property
    def key(self) -> str:
        return hashlib.sha256(self.canonical.encode("ascii")).hexdigest()

    def layer_sizes(self, n_features: int, n_classes: int) -> list[int]:
        return [n_features, n_classes] if self.hidden == 0 else [n_features, self.hidden, n_classes]

    @classmethod
    def from_dict(cls, values: dict) -> "JobConfig":
        """The configuration of a record, one written before the later settings existed included."""
        return cls(**{f.name: values[f.name] if f.name in values else LATER_DEFAULTS[f.name] for f in fields(cls)})


def upgrade_record(record: dict) -> dict:
    """A stored record with the settings that joined later filled in at the values its job ran with."""
    for name, value in LATER_DEFAULTS.items():
        record.setdefault(name, value)
    return record


CONFIG_FIELDS = tuple(f.name for f in fields(JobConfig))
