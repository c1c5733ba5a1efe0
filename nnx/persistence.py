"""Saving and loading models as ``.npz`` files: plain arrays, no pickles."""
from __future__ import annotations

import zipfile
from os import PathLike

import numpy as np

FORMAT_NAME = "nnx-mlp"
FORMAT_VERSION = 1


def save_model(model, path: str | PathLike) -> None:
    arrays = {
        "format": np.array(FORMAT_NAME),
        "format_version": np.array(FORMAT_VERSION),
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
    np.savez(path, **arrays)


def load(path: str | PathLike):
    """Read a model written by ``MLP.save``; anything else is a clear ``ValueError``."""
    from .model import MLP

    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable nnx model file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} holds a single array, not an nnx model file")
    try:
        with archive as f:
            if "format" not in f.files or str(f["format"]) != FORMAT_NAME:
                raise ValueError(f"{path} is not an nnx model file (no '{FORMAT_NAME}' format marker)")
            version = int(f["format_version"])
            if version > FORMAT_VERSION:
                raise ValueError(f"{path} was written by a newer nnx (format version {version}); "
                                 f"this nnx reads up to version {FORMAT_VERSION}: upgrade nnx")
            seed = int(f["seed"])
            model = MLP([int(s) for s in f["layer_sizes"]], hidden=str(f["hidden"]), output=str(f["output"]),
                        init=str(f["init"]), seed=None if seed < 0 else seed, dtype=str(f["dtype"]))
            model.set_params([(f[f"W{i}"], f[f"b{i}"]) for i in range(len(model.layer_sizes) - 1)])
            model.updates = int(f["updates"])
            model.history = dict(zip(f["history_updates"].tolist(), f["history_loss"].tolist()))
    except (zipfile.BadZipFile, KeyError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is a damaged nnx model file ({type(exc).__name__}: {exc})") from exc
    return model
