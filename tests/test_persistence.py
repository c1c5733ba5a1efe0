"""Model files: one path convention, saves that survive failures, and loads that trust nothing."""
from __future__ import annotations

import errno
import io
import os
import re
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile

import numpy as np
import pytest

import nnx

FIELDS = {"format", "format_version", "layer_sizes", "hidden", "output", "init", "seed", "dtype", "updates",
          "history_updates", "history_loss", "W0", "b0", "W1", "b1",
          # format 2: the training state a resumed fit continues
          "optimizer", "step", "rng_state", "epoch_order", "epoch_position", "val_loss_updates", "val_loss",
          "val_accuracy_updates", "val_accuracy"}


@pytest.fixture
def trained():
    X, y = nnx.datasets.moons(60, noise=0.2, seed=2)
    with nnx.use_backend("numpy"):
        return nnx.MLP([2, 4, 2], seed=3).fit(X, y, passes=40, lr=0.1, log_every=10)


def arrays_of(path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {name: f[name] for name in f.files}


def write_npz(path, arrays) -> None:
    """A test-only writer (allow_pickle stays NumPy's default, so object fields can be planted)."""
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def same_model(a, b) -> bool:
    return ((a.layer_sizes, a.hidden, a.output, a.init, a.seed, a.dtype, a.updates, a.history)
            == (b.layer_sizes, b.hidden, b.output, b.init, b.seed, b.dtype, b.updates, b.history)
            and all(np.array_equal(p, q) for pa, pb in zip(a.params, b.params) for p, q in zip(pa, pb)))


# ------------------------------------------------------------- path convention
@pytest.mark.parametrize("given, written", [("model", "model.npz"), ("model.npz", "model.npz"),
                                            ("model.bin", "model.bin.npz"), ("v1.2", "v1.2.npz")])
def test_save_appends_npz_when_missing_and_load_takes_the_same_spelling(tmp_path, trained, given, written):
    returned = trained.save(tmp_path / given)
    assert returned == tmp_path / written
    assert sorted(p.name for p in tmp_path.iterdir()) == [written]
    assert same_model(nnx.load(tmp_path / given), trained)
    assert same_model(nnx.load(str(tmp_path / written)), trained)


def test_load_of_a_missing_file_names_the_path_it_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent.npz"))):
        nnx.load(tmp_path / "absent")


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing" / "m.npz", r"the folder .*missing does not exist; create it first"),
    (lambda tmp: tmp / "file.txt" / "m.npz", r"file.txt is a file, not a folder"),
    (lambda tmp: tmp / "folder.npz", r"folder.npz: it is a folder"),
    (lambda tmp: str(tmp / "sub") + "/", r"names a folder, not a model file"),
])
def test_save_refuses_a_destination_it_cannot_write_before_writing(tmp_path, trained, make, message):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "folder.npz").mkdir()
    (tmp_path / "sub").mkdir()
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match=message):
        trained.save(make(tmp_path))
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_save_refuses_a_read_only_folder(tmp_path, trained):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ValueError, match=r"is not writable"):
            trained.save(folder / "m")
    finally:
        folder.chmod(0o755)


# ------------------------------------------------------------- failed saves
def test_a_save_failing_midway_leaves_the_old_file_loadable(tmp_path, trained, monkeypatch):
    path = tmp_path / "keep.npz"
    old = nnx.MLP([2, 4, 2], seed=9)
    old.save(path)
    real_write = np.lib.format.write_array
    calls = []

    def failing_write(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # five fields in: the archive is half written
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing_write)
    with pytest.raises(OSError, match="No space left"):
        trained.save(path)
    assert len(calls) == 5
    monkeypatch.undo()
    assert same_model(nnx.load(path), old)
    assert os.listdir(tmp_path) == ["keep.npz"]  # no temporary file left behind


def test_ctrl_c_during_a_save_leaves_the_old_file_loadable(tmp_path, trained, monkeypatch):
    path = tmp_path / "keep.npz"
    old = nnx.MLP([2, 4, 2], seed=9)
    old.save(path)

    def interrupted_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        trained.save(path)
    monkeypatch.undo()
    assert same_model(nnx.load(path), old)
    assert os.listdir(tmp_path) == ["keep.npz"]


def test_a_file_size_limit_in_the_middle_of_a_save_leaves_the_old_file_loadable(tmp_path):
    """The issue's reproduction: `ulimit -f 50`, then saving a bigger model over keep.npz."""
    path = tmp_path / "keep.npz"
    nnx.MLP([2, 3, 2], seed=5).save(path)
    script = textwrap.dedent(f"""
        import errno, resource, sys
        import nnx
        big = nnx.MLP([2, 4000, 2])  # ~130 KB of parameters
        resource.setrlimit(resource.RLIMIT_FSIZE, (50 * 1024, 50 * 1024))
        try:
            big.save({str(path)!r})
        except OSError as exc:
            sys.exit(3 if exc.errno == errno.EFBIG else 4)
        sys.exit(0)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert same_model(nnx.load(path), nnx.MLP([2, 3, 2], seed=5))
    assert os.listdir(tmp_path) == ["keep.npz"]


# ------------------------------------------------------------- load: each field checked
def test_round_trip_keeps_everything_for_fresh_and_float32_models(tmp_path, trained):
    for model in (nnx.MLP([3, 5, 4, 1], hidden="relu", output="sigmoid", init="he", seed=None),
                  nnx.MLP([2, 2], output="identity", dtype="float32", seed=2**32 - 1), trained):
        path = model.save(tmp_path / "m")
        assert same_model(nnx.load(path), model)


def _edit(arrays, **changes):
    out = dict(arrays)
    for name, value in changes.items():
        if value is None:
            del out[name]
        else:
            out[name] = value
    return out


BAD_FIELDS = {
    "version 0": ({"format_version": np.array(0)}, "format_version", r"is 0; expected an integer from 1 to 2"),
    "version -5": ({"format_version": np.array(-5)}, "format_version", r"is -5"),
    "version as a list": ({"format_version": np.array([1, 1])}, "format_version", r"has shape \(2,\)"),
    "version as text": ({"format_version": np.array("1")}, "format_version", r"has dtype <U1; expected integers"),
    "version as float": ({"format_version": np.array(1.0)}, "format_version", r"expected integers"),
    "updates -7": ({"updates": np.array(-7)}, "updates", r"is -7"),
    "seed too large": ({"seed": np.array(2**40)}, "seed", r"expected an integer from -1 to 4294967295"),
    "history longer than its steps": ({"history_loss": np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5])},
                                      "history_loss", r"has shape \(6,\); expected \(5,\)"),
    "history steps beyond updates": ({"history_updates": np.array([0, 10, 20, 30, 99])}, "history_updates",
                                     r"within \[0, updates=40\]"),
    "history steps not increasing": ({"history_updates": np.array([0, 20, 10, 30, 40])}, "history_updates",
                                     r"increase strictly"),
    "NaN in history": ({"history_loss": np.array([1.0, np.nan, 0.8, 0.7, 0.6])}, "history_loss", r"NaN"),
    "layer_sizes 2-D": ({"layer_sizes": np.array([[2, 4, 2]])}, "layer_sizes", r"expected a 1-D array"),
    "layer_sizes scalar": ({"layer_sizes": np.array(3)}, "layer_sizes", r"expected a 1-D array"),
    "layer_sizes with 0": ({"layer_sizes": np.array([2, 0, 2])}, "layer_sizes", r"at least two positive"),
    "layer_sizes float": ({"layer_sizes": np.array([2.0, 4.0, 2.0])}, "layer_sizes", r"expected integers"),
    "layer_sizes vs W0": ({"layer_sizes": np.array([2, 5, 2])}, "W0", r"has shape \(2, 4\); expected \(2, 5\)"),
    "one softmax output": ({"layer_sizes": np.array([2, 4, 1]), "W1": np.zeros((4, 1)), "b1": np.zeros(1)},
                           "layer_sizes", r"softmax head needs at least 2 outputs"),
    "unknown hidden": ({"hidden": np.array("swish")}, "hidden", r"is 'swish'; expected one of 'sigmoid'"),
    "unknown dtype": ({"dtype": np.array("float16")}, "dtype", r"is 'float16'"),
    "unknown init": ({"init": np.array("xavier")}, "init", r"is 'xavier'"),
    "W transposed": ({"W1": np.zeros((2, 4))}, "W1", r"has shape \(2, 4\); expected \(4, 2\)"),
    "b 2-D": ({"b0": np.zeros((1, 4))}, "b0", r"has shape \(1, 4\); expected \(4,\)"),
    "NaN weight": ({"W0": np.full((2, 4), np.nan)}, "W0", r"contains NaN or infinity"),
    "inf bias": ({"b1": np.array([np.inf, 0.0])}, "b1", r"contains NaN or infinity"),
    "float32 W in a float64 model": ({"W0": np.zeros((2, 4), np.float32)}, "W0", r"dtype float32, but the model"),
    "integer W": ({"W0": np.zeros((2, 4), np.int64)}, "W0", r"expected floating-point numbers"),
    "missing b1": ({"b1": None}, "b1", r"is missing"),
    "extra field": ({"W2": np.zeros((2, 2))}, "W2", r"is not a field of an nnx model file"),
    "object field": ({"hidden": np.array(["tanh"], dtype=object)}, "hidden", r"holds Python objects"),
}


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_load_checks_every_field_and_names_file_and_field(tmp_path, trained, case):
    changes, field, problem = BAD_FIELDS[case]
    good = trained.save(tmp_path / "good")
    bad = tmp_path / "bad.npz"
    write_npz(bad, _edit(arrays_of(good), **changes))
    with pytest.raises(ValueError) as info:
        nnx.load(bad)
    message = str(info.value)
    assert str(bad) in message and f"field '{field}'" in message, message
    assert re.search(problem, message), message
    assert "allow_pickle" not in message


def test_newer_format_says_upgrade(tmp_path, trained):
    path = trained.save(tmp_path / "m")
    write_npz(path, _edit(arrays_of(path), format_version=np.array(nnx.persistence.FORMAT_VERSION + 1)))
    with pytest.raises(ValueError, match=r"m.npz was written by a newer nnx.*format_version.*upgrade nnx"):
        nnx.load(path)


def test_random_bytes_and_foreign_files_are_value_errors_without_numpy_advice(tmp_path):
    cases = {"random.npz": np.random.RandomState(0).bytes(3000), "empty.npz": b"",
             "zipish.npz": b"PK\x03\x04" + bytes(200), "npy.npz": b"\x93NUMPY" + bytes(100)}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError) as info:
            nnx.load(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "allow_pickle" not in str(info.value)
    np.save(tmp_path / "single.npy", np.ones(3))
    os.replace(tmp_path / "single.npy", tmp_path / "single.npz")
    with pytest.raises(ValueError, match=r"single.npz holds a single .npy array, not an nnx model file"):
        nnx.load(tmp_path / "single.npz")


def _npy_with_header(shape, dtype="<f8", data=b"") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + data


@pytest.mark.parametrize("sizes, lying_field, shape", [
    ([2, 10**12, 2], "W0", (2, 10**12)),        # header agrees with layer_sizes; the bytes are not there
    ([2, 4, 2], "history_updates", (10**12,)),  # a history declaring a terabyte
    ([2, 4, 2], "layer_sizes", (10**11,)),
])
def test_declared_shapes_are_checked_before_anything_is_allocated(tmp_path, trained, sizes, lying_field, shape):
    good = trained.save(tmp_path / "good")
    bad = tmp_path / "bad.npz"
    arrays = arrays_of(good)
    arrays["layer_sizes"] = np.array(sizes)
    with zipfile.ZipFile(bad, "w") as zf:
        for name, value in arrays.items():
            if name == lying_field:
                dtype = "<i8" if lying_field != "W0" else "<f8"
                zf.writestr(name + ".npy", _npy_with_header(shape, dtype, bytes(64)))
            else:
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, value)
                zf.writestr(name + ".npy", buffer.getvalue())
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            nnx.load(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**22, f"load allocated {peak} bytes for a {bad.stat().st_size}-byte file"
    assert str(bad) in str(info.value) and f"field '{lying_field}'" in str(info.value)


# ------------------------------------------------------------- fuzz
FIELD_NAMED = re.compile(r"field '(\w+)'")


def _load_outcome(path):
    """The loaded model, or the ValueError; any other exception fails the test."""
    try:
        return nnx.load(path)
    except ValueError as exc:
        assert str(path) in str(exc), str(exc)
        return exc


def test_fuzz_truncations_are_value_errors_naming_the_file(tmp_path, trained):
    original = trained.save(tmp_path / "good").read_bytes()
    path = tmp_path / "cut.npz"
    cuts = sorted(set(range(0, len(original), 7)) | {len(original) - k for k in range(1, 30)})
    for cut in cuts:
        path.write_bytes(original[:cut])
        assert isinstance(_load_outcome(path), ValueError), cut
    print(f"{len(cuts)} truncations")


def test_fuzz_bit_flips_either_load_the_same_model_or_are_value_errors(tmp_path, trained):
    original = trained.save(tmp_path / "good").read_bytes()
    path = tmp_path / "flipped.npz"
    rs = np.random.RandomState(12)
    outcomes = {"error": 0, "same": 0}
    # every third byte of the archive (headers, data, central directory), at a random bit, plus
    # random multi-bit damage
    flips = [[(i, int(rs.randint(8)))] for i in range(0, len(original), 3)]
    flips += [[(int(rs.randint(len(original))), int(rs.randint(8))) for _ in range(rs.randint(2, 9))]
              for _ in range(300)]
    for flip in flips:
        damaged = bytearray(original)
        for index, bit in flip:
            damaged[index] ^= 1 << bit
        path.write_bytes(bytes(damaged))
        outcome = _load_outcome(path)
        if isinstance(outcome, ValueError):
            outcomes["error"] += 1
        else:  # a flip in bytes zipfile ignores (timestamps, attributes): the model must be intact
            assert same_model(outcome, trained), flip
            outcomes["same"] += 1
    assert outcomes["error"] > len(flips) // 2
    print(f"{len(flips)} bit-flip cases: {outcomes}")


def test_fuzz_field_swaps_and_garbage_members_are_value_errors_naming_a_field(tmp_path, trained):
    good = trained.save(tmp_path / "good")
    arrays = arrays_of(good)
    path = tmp_path / "swapped.npz"
    names = sorted(arrays)
    count = 0
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            swapped = dict(arrays, **{a: arrays[b], b: arrays[a]})
            write_npz(path, swapped)
            outcome = _load_outcome(path)
            count += 1
            if isinstance(outcome, ValueError):
                named = FIELD_NAMED.search(str(outcome))
                assert named and named.group(1) in FIELDS, str(outcome)
            else:  # both fields valid either way round (e.g. seed and updates): loads what is written
                assert outcome.seed == int(swapped["seed"]) and outcome.updates == int(swapped["updates"])
    rs = np.random.RandomState(5)
    for name in names:
        for content in (rs.bytes(int(rs.randint(0, 300))), _npy_with_header((3,), "<f8", rs.bytes(24)),
                        _npy_with_header((), "|O", b"")):
            with zipfile.ZipFile(path, "w") as zf:
                for other, value in arrays.items():
                    buffer = io.BytesIO()
                    np.lib.format.write_array(buffer, value)
                    zf.writestr(other + ".npy", content if other == name else buffer.getvalue())
            outcome = _load_outcome(path)
            count += 1
            assert isinstance(outcome, ValueError), name
            named = FIELD_NAMED.search(str(outcome))
            assert named and named.group(1) in FIELDS, str(outcome)
    print(f"{count} swap and garbage-member cases")


def test_format_1_files_still_load_with_fresh_training_state(tmp_path, trained):
    path = trained.save(tmp_path / "m")
    v2_only = {"optimizer", "step", "rng_state", "epoch_order", "epoch_position", "val_loss_updates", "val_loss",
               "val_accuracy_updates", "val_accuracy"}
    arrays = {k: v for k, v in arrays_of(path).items() if k not in v2_only}
    write_npz(path, _edit(arrays, format_version=np.array(1)))
    old = nnx.load(path)
    assert old.updates == trained.updates and old.training.optimizer is None and old.training.step == 0
    for (W, b), (W0, b0) in zip(old.params, trained.params):
        assert np.array_equal(W, W0) and np.array_equal(b, b0)


def test_training_state_fields_are_checked(tmp_path):
    X, y = nnx.datasets.moons(50, 0.2, 0)
    with nnx.use_backend("numpy"):
        model = nnx.MLP([2, 3, 2]).fit(X, y, epochs=2, batch_size=16, optimizer=nnx.optim.Adam(0.01), verbose=0,
                                       log_every=3)
    path = model.save(tmp_path / "m")
    arrays = arrays_of(path)
    cases = {
        "optimizer": (np.array('{"kind": "adagrad"}'), "names no known optimiser"),
        "rng_state": (np.array('{"bit_generator": "MT19937"}'), "is not a PCG64 generator state"),
        "epoch_order": (np.zeros(50, np.int64), "is not a permutation"),
        "slot_exp_avg_W0": (np.full((2, 3), np.nan), "must hold finite float64 values"),
    }
    for field, (value, message) in cases.items():
        write_npz(path, _edit(arrays, **{field: value}))
        with pytest.raises(ValueError, match=f"field '{field}' {message}"):
            nnx.load(path)
