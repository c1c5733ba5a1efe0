"""Saving and loading models as ``.npz`` files: plain arrays, no pickles.

One path convention everywhere (``MLP.save``, ``nnx.load``, ``nnx train --save``):
a name that does not end in ``.npz`` gets ``.npz`` appended, as NumPy does, and
``save`` returns the path it wrote.

Saves go through ``atomic_write``, so a failed save leaves the previous file
as it was. Loading treats the file as untrusted: each field's ``.npy`` header is
checked (dtype, shape, size against the bytes actually present) before its data
is read, and every value is checked (range, consistency, parameter shapes
against ``layer_sizes``, finiteness) before a model is built. Any problem is a
``ValueError`` naming the file and the field; nothing is allocated beyond what
the file itself holds (or, for a deflated member, can expand to).
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .fileio import atomic_write
from .initializers import INITIALIZERS
from .network import DTYPES, HIDDEN_ACTIVATIONS, OUTPUT_HEADS, Network
from .optim import OPTIMIZERS
from .training_state import OptimizerState, new_generator

FORMAT_NAME = "nnx-mlp"
# 2: the training state (optimiser settings, step, slots; minibatch generator and epoch
# position) and the validation history, so a loaded model's next fit continues exactly.
FORMAT_VERSION = 2
SUFFIX = ".npz"

_TEXT_FIELDS = {"format": None, "hidden": HIDDEN_ACTIVATIONS, "output": OUTPUT_HEADS, "init": INITIALIZERS,
                "dtype": DTYPES}
_INT_FIELDS = ("format_version", "seed", "updates")
# Text and integer scalars are a few hundred bytes; anything bigger is not one of them.
_SCALAR_MAX_BYTES = 4096
# Deflate cannot expand data by more than about 1032:1.
_DEFLATE_MAX_RATIO = 1032


def model_path(path: str | os.PathLike) -> Path:
    """The file a model named ``path`` lives in: ``path`` if it ends in ``.npz``, else ``path`` + ``.npz``."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"a model path must be a str or os.PathLike; got {type(path).__name__}")
    text = os.fspath(path)
    target = Path(text)
    if target.name in ("", ".", "..") or text.endswith(("/", os.sep)):
        raise ValueError(f"{os.fspath(path)!r} names a folder, not a model file; add a file name such as "
                         "'model.npz'")
    return target if target.name.endswith(SUFFIX) else target.with_name(target.name + SUFFIX)


def check_destination(path: str | os.PathLike) -> Path:
    """The file ``save`` would write for ``path``, after checking it can be written there.

    Run before any work (the CLI calls it before training), so a typo in the
    destination never costs a finished run.
    """
    target = model_path(path)
    folder = target.parent
    if not folder.exists():
        raise ValueError(f"cannot save to {target}: the folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise ValueError(f"cannot save to {target}: {folder} is a file, not a folder")
    if target.is_dir():
        raise ValueError(f"cannot save to {target}: it is a folder; give a file name inside it")
    try:  # the only reliable test of writability (permissions, read-only mounts, ACLs)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(f"cannot save to {target}: the folder {folder} is not writable ({exc.strerror})") from exc
    return target


def save_model(model, path: str | os.PathLike) -> Path:
    """Write ``model`` atomically to ``model_path(path)`` and return that path."""
    target = check_destination(path)
    arrays = {
        "format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "layer_sizes": np.array(model.layer_sizes, dtype=np.int64),
        "hidden": np.array(model.hidden),
        "output": np.array(model.output),
        "init": np.array(model.init),
        "seed": np.array(-1 if model.seed is None else model.seed, dtype=np.int64),
        "dtype": np.array(model.dtype),
        "updates": np.array(model.updates, dtype=np.int64),
        "history_updates": np.array(list(model.history.keys()), dtype=np.int64),
        "history_loss": np.array(list(model.history.values()), dtype=np.float64),
    }
    for layer, (W, b) in enumerate(model.params):
        arrays[f"W{layer}"] = W
        arrays[f"b{layer}"] = b
    arrays.update(_training_arrays(model))
    with atomic_write(target) as handle:
        np.savez(handle, **arrays)
    return target


def _training_arrays(model) -> dict[str, np.ndarray]:
    """The fields a resumed fit needs: optimiser, step, slots, generator and epoch, validation history."""
    training: OptimizerState = model.training
    opt = training.optimizer
    arrays = {
        "optimizer": np.array("" if opt is None else json.dumps({"kind": opt.kind, **opt.settings()})),
        "step": np.array(training.step, dtype=np.int64),
        "rng_state": np.array(json.dumps(training.rng.bit_generator.state)),
        "epoch_order": (np.empty(0, np.int64) if training.permutation is None
                        else np.asarray(training.permutation, np.int64)),
        "epoch_position": np.array(training.position, dtype=np.int64),
    }
    for name, pairs in training.slots.items():
        for layer, (W, b) in enumerate(pairs):
            arrays[f"slot_{name}_W{layer}"] = W
            arrays[f"slot_{name}_b{layer}"] = b
    for key, values in model.validation_history.items():
        arrays[f"val_{key}_updates"] = np.array(list(values.keys()), dtype=np.int64)
        arrays[f"val_{key}"] = np.array(list(values.values()), dtype=np.float64)
    return arrays


class _Invalid(Exception):
    """A problem with one field, turned into a ValueError naming the file by ``load``."""

    def __init__(self, field: str, problem: str):
        super().__init__(field, problem)
        self.field, self.problem = field, problem


class _NewerFormat(Exception):
    """The file's format version is newer than this nnx reads."""

    def __init__(self, version: int):
        super().__init__(version)
        self.version = version


class _Archive:
    """The fields of an ``.npz`` archive, each read only after its header checks out."""

    def __init__(self, zf: zipfile.ZipFile, file_size: int):
        self.zf = zf
        self.file_size = file_size
        self.members = {}
        for info in zf.infolist():
            field = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            self.members[field] = info

    def fields(self) -> set[str]:
        return set(self.members)

    def read(self, field: str, *, kinds: str, ndim: int | None = None, shape: tuple[int, ...] | None = None,
             max_bytes: int | None = None) -> np.ndarray:
        """The array stored as ``field``, after checking its dtype kind, rank or shape and size."""
        info = self.members.get(field)
        if info is None:
            raise _Invalid(field, "is missing")
        self._check_member_size(field, info, max_bytes)
        try:
            with self.zf.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    declared, fortran, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    declared, fortran, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
                header_bytes = member.tell()
                self._check_header(field, dtype, declared, kinds, ndim, shape)
                n_bytes = math.prod(declared) * dtype.itemsize
                if header_bytes + n_bytes != info.file_size:
                    raise _Invalid(field, f"holds {info.file_size - header_bytes} data bytes, but its header "
                                          f"declares shape {declared} of {dtype} ({n_bytes} bytes)")
                data = member.read(n_bytes)
                member.read()  # reaching the end makes zipfile verify the CRC
                if len(data) != n_bytes:
                    raise _Invalid(field, f"is truncated ({len(data)} of {n_bytes} data bytes)")
                array = np.frombuffer(data, dtype=dtype, count=math.prod(declared))
                array = array.reshape(declared, order="F" if fortran else "C")
                return np.array(array, dtype=dtype.newbyteorder("="), order="C")  # native, writeable, own copy
        except _Invalid:
            raise
        except Exception as exc:  # noqa: BLE001 - zipfile and the .npy parser raise many types on bad bytes
            raise _Invalid(field, f"is unreadable ({type(exc).__name__}: {exc})") from exc

    def _check_member_size(self, field: str, info: zipfile.ZipInfo, max_bytes: int | None) -> None:
        if info.compress_type == zipfile.ZIP_STORED:
            readable = min(info.compress_size, self.file_size)
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            readable = min(info.compress_size, self.file_size) * _DEFLATE_MAX_RATIO
        else:
            raise _Invalid(field, f"uses zip compression method {info.compress_type}; nnx reads stored or "
                                  "deflated members only")
        if info.file_size > readable:
            raise _Invalid(field, f"declares {info.file_size} bytes, more than the file can hold")
        if max_bytes is not None and info.file_size > max_bytes:
            raise _Invalid(field, f"is {info.file_size} bytes, larger than this field can be ({max_bytes})")

    @staticmethod
    def _check_header(field, dtype: np.dtype, declared, kinds: str, ndim, shape) -> None:
        if dtype.hasobject:
            raise _Invalid(field, "holds Python objects (dtype object); nnx model files hold plain numbers and "
                                  "text only, and never unpickle")
        if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
            names = {"U": "text", "i": "integers", "u": "integers", "f": "floating-point numbers"}
            expected = " or ".join(dict.fromkeys(names[k] for k in kinds))
            raise _Invalid(field, f"has dtype {dtype}; expected {expected}")
        if shape is not None and tuple(declared) != tuple(shape):
            raise _Invalid(field, f"has shape {tuple(declared)}; expected {tuple(shape)}")
        if ndim is not None and len(declared) != ndim:
            raise _Invalid(field, f"has shape {tuple(declared)}; expected a {ndim}-D array")


def _text(archive: _Archive, field: str) -> str:
    value = str(archive.read(field, kinds="U", shape=(), max_bytes=_SCALAR_MAX_BYTES)[()])
    valid = _TEXT_FIELDS[field]
    if valid is not None and value not in valid:
        raise _Invalid(field, f"is {value!r}; expected one of {', '.join(map(repr, valid))}")
    return value


def _integer(archive: _Archive, field: str, low: int, high: int) -> int:
    value = int(archive.read(field, kinds="iu", shape=(), max_bytes=_SCALAR_MAX_BYTES)[()])
    if not low <= value <= high:
        raise _Invalid(field, f"is {value}; expected an integer from {low} to {high}")
    return value


def _read_model(archive: _Archive):
    from .model import MLP

    if "format" not in archive.fields():
        raise _Invalid("format", f"is missing (no '{FORMAT_NAME}' format marker)")
    if _text(archive, "format") != FORMAT_NAME:
        raise _Invalid("format", f"is not '{FORMAT_NAME}'")
    version = int(archive.read("format_version", kinds="iu", shape=(), max_bytes=_SCALAR_MAX_BYTES)[()])
    if version > FORMAT_VERSION:
        raise _NewerFormat(version)
    if version < 1:
        raise _Invalid("format_version", f"is {version}; expected an integer from 1 to {FORMAT_VERSION}")

    sizes = archive.read("layer_sizes", kinds="iu", ndim=1)
    if sizes.size < 2 or (sizes < 1).any():
        raise _Invalid("layer_sizes", f"is {sizes.tolist()}; expected at least two positive integers")
    net = Network(tuple(int(s) for s in sizes), _text(archive, "hidden"), _text(archive, "output"),
                  _text(archive, "dtype"))
    if net.output == "softmax" and net.n_outputs < 2:
        raise _Invalid("layer_sizes", f"is {list(net.layer_sizes)}: a softmax head needs at least 2 outputs")
    init = _text(archive, "init")
    seed = _integer(archive, "seed", -1, 2**32 - 1)
    updates = _integer(archive, "updates", 0, np.iinfo(np.int64).max)

    expected = {"format", "format_version", "layer_sizes", "hidden", "output", "init", "seed", "dtype",
                "updates", "history_updates", "history_loss"}
    expected |= {f"{p}{layer}" for layer in range(net.n_layers) for p in "Wb"}
    training = optimizer = None
    if version >= 2:
        optimizer = _read_optimizer(archive)
        expected |= _TRAINING_FIELDS | {f"slot_{name}_{p}{layer}" for name in (optimizer.slots() if optimizer else ())
                                        for layer in range(net.n_layers) for p in "Wb"}
    unknown = sorted(archive.fields() - expected)
    if unknown:
        raise _Invalid(unknown[0], f"is not a field of an nnx model file (format version {version})")

    steps = archive.read("history_updates", kinds="iu", ndim=1)
    losses = archive.read("history_loss", kinds="f", shape=steps.shape)
    if steps.size and (steps.min() < 0 or steps.max() > updates or (np.diff(steps) <= 0).any()):
        raise _Invalid("history_updates", f"must increase strictly within [0, updates={updates}]")
    if not np.isfinite(losses).all():
        raise _Invalid("history_loss", "contains NaN or infinity")

    params = []
    for layer, (fan_in, fan_out) in enumerate(net.layer_shapes()):
        pair = []
        for name, shape in ((f"W{layer}", (fan_in, fan_out)), (f"b{layer}", (fan_out,))):
            value = archive.read(name, kinds="f", shape=shape)
            if value.dtype != net.np_dtype:
                raise _Invalid(name, f"has dtype {value.dtype}, but the model's dtype is {net.dtype}")
            if not np.isfinite(value).all():
                raise _Invalid(name, "contains NaN or infinity")
            pair.append(value)
        params.append(tuple(pair))
    validation = None
    if version >= 2:
        training = _read_training(archive, net, optimizer, seed)
        validation = {key: _read_series(archive, f"val_{key}", updates) for key in ("loss", "accuracy")}
    return MLP._restore(net, init, None if seed < 0 else seed, params, updates,
                        dict(zip(steps.tolist(), losses.tolist())), training, validation)


_TRAINING_FIELDS = {"optimizer", "step", "rng_state", "epoch_order", "epoch_position", "val_loss_updates", "val_loss",
                    "val_accuracy_updates", "val_accuracy"}


def _json_text(archive: _Archive, field: str, max_bytes: int = _SCALAR_MAX_BYTES):
    text = str(archive.read(field, kinds="U", shape=(), max_bytes=max_bytes)[()])
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Invalid(field, f"is not valid JSON ({exc})") from exc


def _read_optimizer(archive: _Archive):
    spec = _json_text(archive, "optimizer")
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("kind") not in OPTIMIZERS:
        raise _Invalid("optimizer", f"names no known optimiser (expected kind one of {', '.join(OPTIMIZERS)})")
    settings = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k != "kind"}
    try:
        return OPTIMIZERS[spec["kind"]](**settings)
    except (TypeError, ValueError) as exc:
        raise _Invalid("optimizer", f"holds invalid settings ({exc})") from exc


def _read_series(archive: _Archive, field: str, updates: int) -> dict[int, float]:
    steps = archive.read(f"{field}_updates", kinds="iu", ndim=1)
    values = archive.read(field, kinds="f", shape=steps.shape)
    if steps.size and (steps.min() < 0 or steps.max() > updates or (np.diff(steps) <= 0).any()):
        raise _Invalid(f"{field}_updates", f"must increase strictly within [0, updates={updates}]")
    if not np.isfinite(values).all():
        raise _Invalid(field, "contains NaN or infinity")
    return dict(zip(steps.tolist(), values.tolist()))


def _read_training(archive: _Archive, net: Network, optimizer, seed: int) -> OptimizerState:
    step = _integer(archive, "step", 0, np.iinfo(np.int64).max)
    rng = new_generator(None)
    state = _json_text(archive, "rng_state")
    try:
        rng.bit_generator.state = state
    except (TypeError, ValueError, KeyError) as exc:
        raise _Invalid("rng_state", f"is not a PCG64 generator state ({exc})") from exc
    order = archive.read("epoch_order", kinds="iu", ndim=1)
    position = _integer(archive, "epoch_position", 0, order.size)
    if order.size and not np.array_equal(np.sort(order), np.arange(order.size)):
        raise _Invalid("epoch_order", "is not a permutation of the sample indices")
    slots = {}
    for name in (optimizer.slots() if optimizer else ()):
        pairs = []
        for layer, (fan_in, fan_out) in enumerate(net.layer_shapes()):
            pair = []
            for field, shape in ((f"slot_{name}_W{layer}", (fan_in, fan_out)), (f"slot_{name}_b{layer}", (fan_out,))):
                value = archive.read(field, kinds="f", shape=shape)
                if value.dtype != net.np_dtype or not np.isfinite(value).all():
                    raise _Invalid(field, f"must hold finite {net.dtype} values")
                pair.append(value)
            pairs.append(tuple(pair))
        slots[name] = pairs
    return OptimizerState(optimizer, step, slots, rng, order.astype(np.int64) if order.size else None,
                          position if order.size else 0)


def load(path: str | os.PathLike):
    """Read a model written by ``MLP.save`` (same path convention); anything else is a ``ValueError``.

    A missing file is ``FileNotFoundError``, as for ``open``.
    """
    target = model_path(path)
    with open(target, "rb") as handle:
        head = handle.read(6)
        handle.seek(0)
        if head == b"\x93NUMPY":
            raise ValueError(f"{target} holds a single .npy array, not an nnx model file")
        try:
            zf = zipfile.ZipFile(handle)
        except Exception as exc:  # noqa: BLE001 - BadZipFile, EOFError, OSError, ValueError on damaged bytes
            raise ValueError(f"{target} is not a readable nnx model file (not a valid .npz zip archive: "
                             f"{type(exc).__name__}: {exc})") from exc
        with zf:
            try:
                return _read_model(_Archive(zf, os.fstat(handle.fileno()).st_size))
            except _NewerFormat as newer:
                raise ValueError(f"{target} was written by a newer nnx (field 'format_version' is "
                                 f"{newer.version}); this nnx reads up to version {FORMAT_VERSION}: upgrade nnx"
                                 ) from None
            except _Invalid as bad:
                kind = "an nnx model file" if bad.field == "format" else "a valid nnx model file"
                raise ValueError(f"{target} is not {kind}: field '{bad.field}' {bad.problem}") from bad.__cause__
