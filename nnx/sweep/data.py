"""Where a sweep's samples come from: nnx's generated data sets or a CSV file.

Each data set is loaded once, in the process that plans the sweep, and hashed
(features, labels and class names): the hash goes into every job's key, so a
changed CSV file never reuses results computed on the old one.
"""
from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from .. import datasets
from .config import canonical_json

GENERATED = ("moons", "spirals", "xor")
# Defaults per generated data set: (samples, noise). Tutorial 003 for moons, tutorial 000 for spirals.
DEFAULTS = {"moons": (200, 0.2), "spirals": (300, 0.2), "xor": (4, None)}
SPIRAL_CLASSES = 3


@dataclass(frozen=True)
class DataSpec:
    """A data set as asked for: a generated one with its settings, or a CSV path."""

    name: str                  # moons, spirals, xor or csv
    samples: int | None = None
    noise: float | None = None
    seed: int = 0
    path: str | None = None    # csv only

    @property
    def label(self) -> str:
        return f"csv:{self.path}" if self.name == "csv" else self.name


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features (float64), class ids 0..C-1, the class names and the hash of all three."""

    spec: DataSpec
    X: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    sha256: str

    @property
    def n_samples(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def split(self, test_size: float | int | None, seed: int):
        """(X_train, y_train, X_test, y_test); the test part is None without ``test_size``.

        The split is a permutation drawn from ``RandomState(seed)``, each part kept
        in the data's own order, so it is the same on every worker.
        """
        if test_size is None:
            return self.X, self.y, None, None
        n_test = test_count(test_size, self.n_samples)
        test = np.zeros(self.n_samples, dtype=bool)
        test[np.random.RandomState(seed).permutation(self.n_samples)[:n_test]] = True
        return self.X[~test], self.y[~test], self.X[test], self.y[test]


def parse_dataset(text: str) -> tuple[str, str | None]:
    """'moons' -> ('moons', None); 'csv:data/points.csv' -> ('csv', 'data/points.csv')."""
    if not isinstance(text, str):
        raise ValueError(f"dataset must be a string (moons, spirals, xor or csv:PATH); got {text!r}")
    if text.startswith("csv:"):
        path = text[4:]
        if not path:
            raise ValueError("csv: needs a file path, e.g. --dataset csv:points.csv")
        return "csv", path
    if text not in GENERATED:
        import difflib
        close = difflib.get_close_matches(text, GENERATED, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown dataset {text!r}.{hint} Expected moons, spirals, xor or csv:PATH "
                         "(a CSV file whose last column is the label)")
    return text, None


def make_spec(dataset: str, samples: int | None, noise: float | None, seed: int) -> DataSpec:
    """Check the data settings against the data set and fill in its defaults."""
    name, path = parse_dataset(dataset)
    if not isinstance(seed, Integral) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"data seed must be an integer >= 0; got {seed!r}")
    if name == "csv":
        if samples is not None or noise is not None:
            raise ValueError(f"--samples and --noise apply to generated data sets (moons, spirals); "
                             f"the CSV file {path} is used whole")
        return DataSpec("csv", seed=int(seed), path=path)
    default_samples, default_noise = DEFAULTS[name]
    if name == "xor":
        if samples not in (None, 4) or noise is not None:
            raise ValueError("the xor data set is its 4-row truth table: it takes no --samples or --noise")
        return DataSpec("xor", 4, None, int(seed))
    samples = default_samples if samples is None else samples
    noise = default_noise if noise is None else noise
    if not isinstance(samples, Integral) or isinstance(samples, bool) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2; got {samples!r}")
    if name == "spirals" and samples % SPIRAL_CLASSES:
        raise ValueError(f"spirals has {SPIRAL_CLASSES} arms of equal size: samples must be a multiple of "
                         f"{SPIRAL_CLASSES}; got {samples} (try {samples - samples % SPIRAL_CLASSES or 3})")
    if isinstance(noise, bool) or not isinstance(noise, Real) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0; got {noise!r}")
    return DataSpec(name, int(samples), float(noise), int(seed))


def test_count(test_size: float | int, n_samples: int) -> int:
    """How many samples a ``test_size`` (fraction in (0, 1) or a count) holds out."""
    if isinstance(test_size, bool) or not isinstance(test_size, Real):
        raise ValueError(f"test size must be a fraction in (0, 1) or a count of samples; got {test_size!r}")
    if isinstance(test_size, Integral):
        count = int(test_size)
    elif 0 < test_size < 1:
        count = int(round(test_size * n_samples))
    else:
        raise ValueError(f"a fractional test size must lie in (0, 1); got {test_size!r}")
    if not 1 <= count <= n_samples - 1:
        raise ValueError(f"test size {test_size!r} holds out {count} of {n_samples} samples; "
                         "at least one must be left for training and one for testing")
    return count


def load(spec: DataSpec) -> Dataset:
    if spec.name == "moons":
        X, y = datasets.moons(spec.samples, noise=spec.noise, seed=spec.seed)
        classes = ("0", "1")
    elif spec.name == "spirals":
        X, y = datasets.spirals(spec.samples // SPIRAL_CLASSES, SPIRAL_CLASSES, noise=spec.noise, seed=spec.seed)
        classes = tuple(str(k) for k in range(SPIRAL_CLASSES))
    elif spec.name == "xor":
        X, y = datasets.xor()
        classes = ("0", "1")
    else:
        X, y, classes = read_csv(Path(spec.path))
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.int64)
    digest = hashlib.sha256(canonical_json({"shape": list(X.shape), "classes": list(classes)}).encode())
    digest.update(X.astype("<f8").tobytes())
    digest.update(y.astype("<i8").tobytes())
    return Dataset(spec, X, y, tuple(classes), digest.hexdigest())


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Features from every column but the last, class labels from the last.

    A first row whose feature cells are not numbers is a header. Labels may be
    any text; classes are numbered in sorted order (numerically when every label
    is a number), so ``0``/``1`` labels keep their ids.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [(number, row) for number, row in enumerate(csv.reader(handle), 1)
                    if any(cell.strip() for cell in row)]
    except OSError as exc:
        raise ValueError(f"cannot read the CSV file {path}: {exc.strerror or exc}") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path} is not a readable CSV text file: {exc}") from exc
    if rows and not all(_is_number(cell) for cell in rows[0][1][:-1]):
        rows = rows[1:]  # header
    if not rows:
        raise ValueError(f"{path} holds no data rows")
    width = len(rows[0][1])
    if width < 2:
        raise ValueError(f"{path}: each row needs at least one feature column and a label column; "
                         f"line {rows[0][0]} has {width} column(s)")
    features, labels = [], []
    for number, row in rows:
        if len(row) != width:
            raise ValueError(f"{path}, line {number}: {len(row)} columns where the first data row has {width}")
        try:
            values = [float(cell) for cell in row[:-1]]
        except ValueError:
            raise ValueError(f"{path}, line {number}: the features (all columns but the last) must be "
                             f"numbers; got {row[:-1]!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{path}, line {number}: features contain NaN or infinity; remove or impute them")
        features.append(values)
        labels.append(row[-1].strip())
    names = sorted(set(labels), key=(lambda s: (float(s), s)) if all(map(_is_number, labels)) else None)
    if len(names) < 2:
        raise ValueError(f"{path}: the label column (the last) holds a single class {names[0]!r}; "
                         "a classifier needs at least two")
    index = {name: k for k, name in enumerate(names)}
    return np.array(features), np.array([index[label] for label in labels]), tuple(names)
