"""Sweep planning: keys, axes, data sources and the checks that run before any job."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from sklearn.datasets import make_moons

import nnx
from nnx.sweep.axes import Axes
from nnx.sweep.config import JobConfig
from nnx.sweep.data import make_spec, load, read_csv
from nnx.sweep.runner import plan


def configs_of(**settings):
    return plan(Axes.of(**settings))[0]


def test_no_arguments_is_tutorial_003s_experiment():
    configs = configs_of()
    assert [c.hidden for c in configs] == [0, 1, 2, 3, 4, 5, 20, 50]
    for c in configs:
        assert (c.dataset, c.samples, c.noise, c.data_seed) == ("moons", 200, 0.2, 0)
        assert (c.passes, c.lr, c.l2, c.reduction, c.activation, c.seed, c.dtype) == \
            (20_000, 0.01, 0.01, "sum", "tanh", 0, "float64")
        assert c.test_size is None and c.backend == "auto"
    # Hidden size 0 is logistic regression: no hidden layer at all.
    assert configs[0].layer_sizes(2, 2) == [2, 2]
    assert configs[3].layer_sizes(2, 2) == [2, 3, 2]


def test_the_data_is_tutorial_003s_moons():
    _, datasets = plan(Axes.of())
    (data,) = datasets.values()
    X, y = make_moons(200, noise=0.2, random_state=0)
    np.testing.assert_array_equal(data.X, X)
    np.testing.assert_array_equal(data.y, y)


def test_key_is_the_sha256_of_the_sorted_canonical_json():
    config = configs_of(hidden=3)[0]
    expected = json.dumps({"schema": 1, **config.as_dict()}, sort_keys=True, separators=(",", ":"))
    assert config.canonical == expected
    assert config.key == hashlib.sha256(expected.encode()).hexdigest()
    assert JobConfig.from_dict(json.loads(expected)) == config


def test_keys_differ_by_every_setting_and_by_the_data_itself():
    base = configs_of(hidden=3, passes=100)[0]
    variants = [configs_of(hidden=4, passes=100), configs_of(hidden=3, passes=101),
                configs_of(hidden=3, passes=100, lr=0.02), configs_of(hidden=3, passes=100, seed=1),
                configs_of(hidden=3, passes=100, noise=0.3), configs_of(hidden=3, passes=100, test_size=0.25),
                configs_of(hidden=3, passes=100, dtype="float32"), configs_of(hidden=3, passes=100, backend="numpy")]
    keys = {base.key} | {v[0].key for v in variants}
    assert len(keys) == 1 + len(variants)
    # Same settings, same key: a rerun finds its results.
    assert configs_of(hidden=3, passes=100)[0].key == base.key


def test_axes_multiply_in_order_without_repeats():
    configs = configs_of(hidden=[3, 1, 3], lr=[0.1, 0.01], seed=[0, 1], passes=10)
    assert len(configs) == 2 * 2 * 2
    assert [(c.lr, c.seed, c.hidden) for c in configs[:4]] == [(0.1, 0, 3), (0.1, 0, 1), (0.1, 1, 3), (0.1, 1, 1)]
    assert Axes.of(lr=[0.1, 0.01], seed=[0, 1]).varying() == ["lr", "seed"]


@pytest.mark.parametrize("settings, message", [
    (dict(hidden=[-1]), "hidden size"),
    (dict(lr=[0.0]), "lr must be a positive"),
    (dict(l2=[-1.0]), "l2 must be"),
    (dict(passes=[0]), "passes must be an integer >= 1"),
    (dict(dtype=["float16"]), "Unknown dtype 'float16'"),
    (dict(backend=["cupi"]), "Did you mean 'cupy'?"),
    (dict(activation=["tahn"]), "Did you mean 'tanh'?"),
    (dict(dataset=["moon"]), "Did you mean 'moons'?"),
    (dict(dataset=["xor"], samples=[10]), "truth table"),
    (dict(dataset=["spirals"], samples=[100]), "multiple of 3"),
    (dict(test_size=1.5), "fractional test size"),
    (dict(test_size=200), "holds out 200 of 200"),
    (dict(hidden=[]), "at least one value"),
])
def test_bad_settings_are_refused_by_name_before_any_work(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("?", r"\?")):
        configs_of(**settings)


def test_test_split_is_seeded_and_disjoint():
    data = load(make_spec("moons", 200, 0.2, 0))
    X, y, Xt, yt = data.split(0.25, seed=3)
    assert len(Xt) == 50 and len(X) == 150
    rows = {tuple(r) for r in data.X}
    assert {tuple(r) for r in X} | {tuple(r) for r in Xt} == rows
    assert not {tuple(r) for r in X} & {tuple(r) for r in Xt}
    again = data.split(0.25, seed=3)
    np.testing.assert_array_equal(again[2], Xt)
    assert not np.array_equal(data.split(0.25, seed=4)[2], Xt)
    assert len(data.split(40, seed=0)[2]) == 40


def test_csv_last_column_is_the_label(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("x,y,z,kind\n0.5,1,2,cat\n1.5,-1,0,dog\n\n2.5,0,1e-3,cat\n")
    X, y, classes = read_csv(path)
    np.testing.assert_array_equal(X, [[0.5, 1, 2], [1.5, -1, 0], [2.5, 0, 1e-3]])
    assert classes == ("cat", "dog") and y.tolist() == [0, 1, 0]
    # Numeric labels are ordered numerically, so 2 < 10.
    path.write_text("0,10\n1,2\n2,10\n")
    assert read_csv(path)[2] == ("2", "10")


def test_csv_hash_changes_with_the_data(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("0,0,0\n1,1,1\n0,1,1\n1,0,0\n")
    first = configs_of(dataset=f"csv:{path}", hidden=2, passes=5)[0]
    assert first.dataset == "csv" and first.samples == 4
    path.write_text("0,0,0\n1,1,1\n0,1,1\n1,0,1\n")
    second = configs_of(dataset=f"csv:{path}", hidden=2, passes=5)[0]
    assert first.data_sha256 != second.data_sha256 and first.key != second.key


@pytest.mark.parametrize("text, message", [
    ("a,b\n", "holds no data rows"),
    ("1,0\n1,0\n", "single class"),
    ("1,2,0\n1,0\n", "line 2: 2 columns"),
    ("1,2,0\n1,x,1\n", "line 2: the features"),
    ("1,nan,0\n2,3,1\n", "NaN or infinity"),
])
def test_bad_csv_files_are_refused_with_the_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        configs_of(dataset=f"csv:{path}")


def test_missing_csv_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot read the CSV file"):
        configs_of(dataset=f"csv:{tmp_path / 'none.csv'}")


def test_spirals_and_xor_sources():
    spirals = configs_of(dataset="spirals", hidden=4, passes=1)[0]
    assert spirals.samples == 300
    _, datasets = plan(Axes.of(dataset="spirals"))
    (data,) = datasets.values()
    X, y = nnx.datasets.spirals(100, 3, noise=0.2, seed=0)
    np.testing.assert_array_equal(data.X, X)
    assert data.n_classes == 3
    xor = configs_of(dataset="xor", hidden=2, passes=1)[0]
    assert xor.samples == 4 and xor.noise is None
