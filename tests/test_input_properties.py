"""Whatever a user passes as X and y: it trains exactly like its clean float64 equivalent, or it is
refused with a ValueError naming the problem before any work, with the model and the data unchanged.

Hypothesis draws shapes (one row, one feature, very wide; empty), dtypes (bool, integers,
float16/32/64, complex, object, text), NaN, infinity and values beyond float32 anywhere in X or y,
and containers and layouts (Fortran order, strided views, read-only and memory-mapped arrays,
nested lists, pandas objects where pandas is installed). Values are drawn on a grid of quarters,
exact in every float dtype, so "the same numbers" means bit for bit.
"""
from __future__ import annotations

import collections
import copy
import os
import re
import tempfile
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnx

try:
    import pandas as pd
except ImportError:  # pandas is an optional extra; its cases are then not drawn
    pd = None

X_DTYPES = ("bool", "int8", "uint8", "int64", "float16", "float32", "float64", "complex128", "object", "str")
Y_KINDS = ("int64", "int32", "uint8", "bool", "float64", "fractional", "list")
CONTAINERS = ("C", "F", "strided", "readonly", "memmap", "list") + (("pandas",) if pd is not None else ())
POISONS = (None, None, None, "nan", "inf", "-inf", "huge")

SETTINGS = settings(max_examples=250, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

CASES: collections.Counter = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def report_case_count(request):
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None and CASES:
        outcome = ", ".join(f"{k}: {v}" for k, v in sorted(CASES.items()))
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\ntests/test_input_properties.py: {sum(CASES.values())} input cases ran "
                                f"({outcome})")


@st.composite
def cases(draw):
    head = draw(st.sampled_from(["softmax", "identity"]))
    n_out = draw(st.sampled_from([2, 3])) if head == "softmax" else 1
    n = draw(st.sampled_from([0, 1, 1, 2, 3, 5]))
    d = draw(st.sampled_from([1, 1, 2, 3, 300]))
    x_dtype = draw(st.sampled_from(X_DTYPES))
    container = draw(st.sampled_from(CONTAINERS))
    y_kind = draw(st.sampled_from(Y_KINDS if head == "softmax" and n_out == 2 else
                                  [k for k in Y_KINDS if k != "bool"]))
    poison = draw(st.sampled_from(POISONS))
    poison_in = draw(st.sampled_from(["X", "y"]))
    seed = draw(st.integers(0, 2**16))
    model_dtype = draw(st.sampled_from(["float64", "float32"]))
    return dict(head=head, n_out=n_out, n=n, d=d, x_dtype=x_dtype, container=container, y_kind=y_kind,
                poison=poison, poison_in=poison_in, seed=seed, model_dtype=model_dtype)


POISON_VALUES = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "huge": 1e39}
NON_FINITE = r"{} contains 1 non-finite value\(s\)"
BEYOND = r"{} has values beyond float32's range"


def build(case, workdir):
    """(X as passed, y as passed, clean float64 X, clean y, the problems of which one must be named)."""
    rs = np.random.RandomState(case["seed"])
    n, d, kind, container = case["n"], case["d"], case["x_dtype"], case["container"]
    poison = case["poison"]
    if poison == "huge" and case["model_dtype"] == "float64":
        poison = None  # 1e39 fits float64; only a float32 model must refuse it
    problems = []

    # X: values on a grid of quarters (integers for integer dtypes), in the drawn dtype
    grid = rs.randint(-8, 9, size=(n, d))
    numbers = {"bool": grid > 0, "uint8": np.abs(grid).astype(np.uint8), "int8": grid.astype(np.int8),
               "int64": grid.astype(np.int64)}.get(kind)
    if numbers is None:
        numbers = grid / 4.0
    if poison and case["poison_in"] == "X" and n and kind in ("float16", "float32", "float64", "complex128",
                                                               "object"):
        numbers[rs.randint(n), rs.randint(d)] = POISON_VALUES[poison]
        # 1e39 is already infinity in float16 and float32 X; in wider X it only overflows the model
        problems.append((BEYOND if poison == "huge" and kind not in ("float16", "float32") else NON_FINITE)
                        .format("X"))
    with np.errstate(over="ignore"):
        if kind == "object":
            typed = numbers.astype(object)
        elif kind == "str":
            typed = numbers.astype(str)
        else:
            typed = numbers.astype(kind)
    clean_X = None if kind in ("complex128", "str") else np.array(typed, dtype=np.float64)
    if kind == "complex128":
        problems.append(r"X must be real-valued")
    elif kind == "str" or (kind == "object" and container != "list"):  # a list holds plain numbers
        problems.append(r"X must be numeric \(bool, integer or float\)")
    if n == 0:
        problems.append(r"X is empty|X must be 2-D")

    # y: class ids in the drawn form (softmax) or quarter values (identity)
    if case["head"] == "softmax":
        ids = rs.randint(0, case["n_out"], size=n)
        clean_y = ids.astype(np.int64)
        y = {"int64": ids.astype(np.int64), "int32": ids.astype(np.int32), "uint8": ids.astype(np.uint8),
             "bool": ids.astype(bool), "float64": ids.astype(np.float64), "fractional": ids + 0.5,
             "list": ids.tolist()}[case["y_kind"]]
        if case["y_kind"] == "fractional":
            problems.append(r"labels must be integer class ids")
    else:
        clean_y = rs.randint(-8, 9, size=n) / 4.0
        y = clean_y.tolist() if case["y_kind"] == "list" else clean_y.copy()
    if poison and case["poison_in"] == "y" and n and not isinstance(y, list):
        y = np.array(y, dtype=np.float64)
        y[rs.randint(n)] = POISON_VALUES[poison]
        problems.append((BEYOND if poison == "huge" else NON_FINITE).format("y"))

    if container == "memmap" and kind in ("object", "str"):
        container = "C"  # memory maps hold plain data only
    if container == "F":
        X = np.asfortranarray(typed)
    elif container == "strided":  # every other row and column of a bigger array filled with junk
        big = np.full((2 * n, 2 * d), typed.dtype.type(7) if kind != "str" else "7", dtype=typed.dtype)
        big[::2, ::2] = typed
        X = big[::2, ::2]
    elif container == "readonly":
        X = typed.copy()
        X.setflags(write=False)
    elif container == "memmap" and typed.size:
        path = os.path.join(workdir, "X.dat")
        writer = np.memmap(path, dtype=typed.dtype, mode="w+", shape=typed.shape)
        writer[...] = typed
        writer.flush()
        del writer
        X = np.memmap(path, dtype=typed.dtype, mode="r", shape=typed.shape)
    elif container == "list":
        X = typed.tolist()
    elif container == "pandas":
        X = pd.DataFrame(typed)
        y = y if isinstance(y, list) else pd.Series(y)
    else:
        X = typed
    return X, y, clean_X, clean_y, problems


def snapshot(obj):
    if pd is not None and isinstance(obj, (pd.DataFrame, pd.Series)):
        return obj.copy(deep=True)
    if isinstance(obj, np.ndarray):
        return np.array(obj, copy=True)
    return copy.deepcopy(obj)


def unchanged(before, after) -> bool:
    if pd is not None and isinstance(after, (pd.DataFrame, pd.Series)):
        return before.equals(after)
    if isinstance(after, np.ndarray) and after.dtype.kind not in "OU":
        return np.array_equal(before, after, equal_nan=True)
    if isinstance(after, np.ndarray):  # objects and text: NaN == NaN by their printed form
        return before.dtype == after.dtype and repr(before.tolist()) == repr(after.tolist())
    return repr(before) == repr(after)


@SETTINGS
@given(case=cases())
def test_any_input_trains_like_its_clean_equivalent_or_is_refused_first(backend, case):
    sizes = [case["d"], 3, case["n_out"]]
    fit = dict(passes=2, log_every=1, lr=0.1)
    with tempfile.TemporaryDirectory() as workdir:
        X, y, clean_X, clean_y, problems = build(case, workdir)
        X_before, y_before = snapshot(X), snapshot(y)
        model = nnx.MLP(sizes, output=case["head"], seed=1, dtype=case["model_dtype"])
        fresh = model.params
        with mock.patch.object(backend, "prepare_data", wraps=backend.prepare_data) as prepare:
            if problems:
                with pytest.raises(ValueError) as info:
                    model.fit(X, y, **fit)
                assert any(re.search(p, str(info.value)) for p in problems), (str(info.value), problems)
                assert prepare.call_count == 0, "work started before the input was refused"
                assert model.updates == 0 and model.history == {} and not model.interrupted
                assert all(np.array_equal(W, W0) and np.array_equal(b, b0)
                           for (W, b), (W0, b0) in zip(model.params, fresh))
                CASES[f"refused on {backend.name}"] += 1
            else:
                model.fit(X, y, **fit)
                twin = nnx.MLP(sizes, output=case["head"], seed=1, dtype=case["model_dtype"])
                twin.fit(clean_X, clean_y, **fit)
                assert model.history == twin.history
                assert all(np.array_equal(W, W0) and np.array_equal(b, b0)
                           for (W, b), (W0, b0) in zip(model.params, twin.params))
                CASES[f"trained on {backend.name}"] += 1
        assert unchanged(X_before, X) and unchanged(y_before, y)
        del X  # release a memory map before its folder goes


def test_read_only_C_contiguous_X_compiles_no_second_numba_specialisation():
    if nnx.available_backends()["numba"] is not None:
        pytest.skip("numba unavailable here")
    from nnx.kernels import cpu_train

    X, y = nnx.datasets.moons(64, seed=0)
    fit = dict(passes=2, log_every=1)
    with nnx.use_backend("numba"):
        # [2, 32, 32, 2] has a BLAS-path layer, so X goes to cpu_train.train_passes_fused_head as it is
        writeable = nnx.MLP([2, 32, 32, 2]).fit(X, y, **fit)
        compiled = len(cpu_train.train_passes_fused_head.signatures)
        read_only = X.copy()
        read_only.setflags(write=False)
        model = nnx.MLP([2, 32, 32, 2]).fit(read_only, y, **fit)
        assert len(cpu_train.train_passes_fused_head.signatures) == compiled
    assert all(np.array_equal(W, W0) for (W, _), (W0, _) in zip(model.params, writeable.params))


def test_data_handed_to_the_backend_is_writeable_and_copied_only_when_needed(backend):
    net = nnx.MLP([2, 3, 2]).net
    X, y = nnx.datasets.moons(16, seed=0)
    T = np.eye(2)[y]
    if backend.xp is not np:
        pytest.skip("device arrays have no read-only flag")
    given = backend.prepare_data(net, X, T)
    assert given.X is X  # already right: no copy
    read_only = X.copy()
    read_only.setflags(write=False)
    data = backend.prepare_data(net, read_only, T)
    assert data.X.flags.writeable and data.X.flags.c_contiguous and np.array_equal(data.X, X)
    assert not read_only.flags.writeable  # the caller's array is left as it was


def test_pandas_objects():
    pd = pytest.importorskip("pandas")
    X, y = nnx.datasets.moons(30, seed=2)
    frame = pd.DataFrame({"a": X[:, 0], "b": (X[:, 1] * 4).round().astype(int)})
    clean = np.column_stack([X[:, 0], (X[:, 1] * 4).round()])
    labels = pd.Series(y.astype(bool))
    model = nnx.MLP([2, 3, 2]).fit(frame, labels, passes=3)
    twin = nnx.MLP([2, 3, 2]).fit(clean, y, passes=3)
    assert all(np.array_equal(W, W0) for (W, _), (W0, _) in zip(model.params, twin.params))
    with_na = frame.astype({"b": "Int64"})
    with_na.loc[3, "b"] = pd.NA
    with pytest.raises(ValueError, match=r"X must be numeric"):
        nnx.MLP([2, 3, 2]).fit(with_na, y, passes=1)
    text = pd.DataFrame({"a": ["x"] * 30, "b": X[:, 1]})
    with pytest.raises(ValueError, match=r"X must be numeric"):
        nnx.MLP([2, 3, 2]).fit(text, y, passes=1)
