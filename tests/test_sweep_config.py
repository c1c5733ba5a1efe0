"""Sweep planning: keys, axes, data sources and the checks that run before any job."""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from sklearn.datasets import make_moons

import nnx
from nnx.sweep import trainers
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


# The settings of the configuration's first version: every job was full-batch gradient descent.
FIRST_FIELDS = ("dataset", "samples", "noise", "data_seed", "data_sha256", "test_size", "hidden", "activation", "lr",
                "l2", "reduction", "seed", "dtype", "backend", "passes")
LATER = {"epochs": None, "batch_size": None, "optimizer": "sgd", "schedule": None}


def test_key_is_the_sha256_of_the_sorted_canonical_json():
    """Plain gradient descent keeps the first version's JSON (so earlier results are found again);
    any other optimiser, batch size, length or schedule adds itself."""
    config = configs_of(hidden=3)[0]
    first = {name: config.as_dict()[name] for name in FIRST_FIELDS}
    expected = json.dumps({"schema": 1, **first}, sort_keys=True, separators=(",", ":"))
    assert config.canonical == expected
    assert config.key == hashlib.sha256(expected.encode()).hexdigest()
    assert JobConfig.from_dict(json.loads(expected)) == config  # a record of the first version
    adam = configs_of(hidden=3, optimizer="adam:amsgrad=True", batch_size=32, epochs=5, schedule="cosine:T_max=35")[0]
    expected = json.dumps({"schema": 1, **adam.as_dict()}, sort_keys=True, separators=(",", ":"))
    assert adam.canonical == expected and '"batch_size":32' in expected and '"passes":null' in expected
    assert adam.key == hashlib.sha256(expected.encode()).hexdigest()
    assert JobConfig.from_dict(json.loads(expected)) == adam


def test_keys_differ_by_every_setting_and_by_the_data_itself():
    base = configs_of(hidden=3, passes=100)[0]
    variants = [configs_of(hidden=4, passes=100), configs_of(hidden=3, passes=101),
                configs_of(hidden=3, passes=100, lr=0.02), configs_of(hidden=3, passes=100, seed=1),
                configs_of(hidden=3, passes=100, noise=0.3), configs_of(hidden=3, passes=100, test_size=0.25),
                configs_of(hidden=3, passes=100, dtype="float32"), configs_of(hidden=3, passes=100, backend="numpy"),
                configs_of(hidden=3, epochs=100), configs_of(hidden=3, passes=100, batch_size=32),
                configs_of(hidden=3, passes=100, optimizer="adam"),
                configs_of(hidden=3, passes=100, optimizer="sgd:momentum=0.9"),
                configs_of(hidden=3, passes=100, schedule="step:step_size=10")]
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
    (dict(optimizer=["adma"]), "unknown optimizer 'adma'; expected one of sgd, adam, adamw, rmsprop. Did you mean 'adam'?"),
    (dict(optimizer=["sgd:momentum=-1"]), "optimizer 'sgd:momentum=-1': SGD momentum must be a finite number"),
    (dict(optimizer=["sgd:nesterov=True"]), "nesterov=True needs momentum > 0"),
    (dict(optimizer=["adam:beta1=0.8"]), "Adam has no setting 'beta1'; its settings are lr, betas, eps"),
    (dict(optimizer=["adam:lr=0.01"], lr=[0.01, 0.1]), "the learning rate is given twice ('adam:lr=0.01' and lr 0.1)"),
    (dict(optimizer=[nnx.optim.RMSprop(lr=0.05)], lr=0.01), "the learning rate is given twice"),
    (dict(schedule=["cosine:T_max=0"]), "schedule 'cosine:T_max=0': Cosine T_max must be a positive integer"),
    (dict(schedule=["cosin"]), "Did you mean 'cosine'?"),
    (dict(schedule=["sequential:schedules=('warmup',),milestones=(5,)"]), "needs 0 milestones for 1 schedules"),
    (dict(batch_size=[32, 0]), "batch size must be an integer >= 1, or 'full'"),
    (dict(batch_size=["all"]), "batch size must be an integer >= 1, or 'full'"),
    (dict(batch_size=[201]), "batch size 201 is larger than the 200 training samples of moons"),
    (dict(batch_size=[160], test_size=0.25), "larger than the 150 training samples of moons (after holding out 50"),
    (dict(epochs=[0]), "epochs must be an integer >= 1"),
    (dict(epochs=[5], passes=[100]), "give passes (updates) or epochs (passes over the data), not both"),
])
def test_bad_settings_are_refused_by_name_before_any_work(settings, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        configs_of(**settings)


def test_optimizer_and_schedule_values_of_the_wrong_type_are_refused():
    with pytest.raises(TypeError, match="optimizer: give a name such as 'adam'"):
        configs_of(optimizer=[nnx.optim.Cosine(T_max=5)])
    with pytest.raises(TypeError, match="schedule: give a name such as 'cosine:T_max=2000'"):
        configs_of(schedule=[nnx.optim.Adam()])


# PyTorch's default learning rates (torch.optim documentation); SGD has none, so the tutorial's 0.01.
OWN_LR = {"sgd": 0.01, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-2}


def test_lr_follows_nnx_trains_rule():
    """A spec without lr runs at each lr given; with no lr given, SGD at the tutorial's 0.01 and the
    others at their own defaults; a spec's own lr stands alone or must agree with the lr given."""
    trained = {(c.optimizer, c.lr) for c in configs_of(hidden=1, passes=5, optimizer=list(OWN_LR))}
    assert trained == set(OWN_LR.items())
    trained = [(c.optimizer, c.lr) for c in configs_of(hidden=1, passes=5, optimizer=["sgd", "adam"], lr=[0.1, 0.5])]
    assert trained == [("sgd", 0.1), ("sgd", 0.5), ("adam", 0.1), ("adam", 0.5)]
    own = configs_of(hidden=1, passes=5, optimizer=["adam:lr=0.003", nnx.optim.SGD(0.2, momentum=0.5)])
    assert [(c.optimizer, c.lr) for c in own] == [("adam", 0.003), ("sgd:momentum=0.5", 0.2)]
    (agreed,) = configs_of(hidden=1, passes=5, optimizer="adam:lr=0.003", lr=0.003)
    assert (agreed.optimizer, agreed.lr) == ("adam", 0.003)


def test_one_optimiser_spelled_many_ways_is_one_job():
    """Canonical text: settings sorted, defaults dropped, the lr apart; plain SGD is the default job."""
    default = configs_of(hidden=3, passes=50)
    for plain in ("sgd", "SGD", "sgd:momentum=0", "sgd:momentum=0.0,nesterov=False", None, nnx.optim.SGD(0.01)):
        assert configs_of(hidden=3, passes=50, optimizer=[plain]) == default
    adams = configs_of(hidden=3, passes=50, optimizer=["adam", "adam:amsgrad=False,eps=1e-8", nnx.optim.Adam(),
                                                       "adam:betas=(0.9, 0.999)", " adam "])
    assert len(adams) == 1 and adams[0].optimizer == "adam" and adams[0].lr == 1e-3
    (spec,) = configs_of(hidden=3, passes=50, optimizer="sgd:weight_decay=1e-4,nesterov=True,momentum=0.9")
    assert spec.optimizer == "sgd:momentum=0.9,nesterov=True,weight_decay=0.0001"
    (betas,) = configs_of(hidden=3, passes=50, optimizer=nnx.optim.AdamW(lr=0.01, betas=[0.8, 0.99]))
    assert (betas.optimizer, betas.lr) == ("adamw:betas=(0.8, 0.99)", 0.01)
    # A constant schedule is no schedule; full batch is None, spelled 'full' too.
    assert configs_of(hidden=3, passes=50, schedule="constant", batch_size="full") == default


@pytest.mark.parametrize("schedule", [
    nnx.optim.Step(step_size=5, gamma=0.5), nnx.optim.Exponential(gamma=0.9, per="epoch"),
    nnx.optim.Cosine(T_max=100, eta_min=1e-4), nnx.optim.LinearWarmup(total_iters=10),
    nnx.optim.Sequential([nnx.optim.LinearWarmup(start_factor=0.1, total_iters=10), nnx.optim.Cosine(T_max=90)],
                         milestones=[10]),
])
def test_schedules_travel_to_the_job_as_text_and_come_back_equal(schedule):
    (config,) = configs_of(hidden=3, passes=50, schedule=schedule)
    assert isinstance(config.schedule, str)
    assert trainers.job_schedule(config.schedule) == schedule
    # The text is a schedule value too, naming the same job.
    assert configs_of(hidden=3, passes=50, schedule=config.schedule) == [config]


def test_new_axes_multiply_in_the_documented_order():
    """epochs, optimizer, lr, schedule, batch size, ..., hidden: the last varies fastest."""
    configs = configs_of(hidden=[1, 3], optimizer=["sgd", "adam"], batch_size=[None, 32], epochs=[2, 4],
                         schedule=[None, "cosine:T_max=10"])
    got = [(c.epochs, c.optimizer, c.schedule, c.batch_size, c.hidden) for c in configs]
    expected = [(e, o, s, b, h) for e in (2, 4) for o in ("sgd", "adam") for s in (None, "cosine:T_max=10")
                for b in (None, 32) for h in (1, 3)]
    assert got == expected
    assert all(c.passes is None for c in configs)


def test_varying_names_the_settings_the_jobs_differ_in():
    assert Axes.of(optimizer=["sgd", "adam"]).varying() == ["optimizer", "lr"]  # 0.01 and 0.001
    assert Axes.of(optimizer=["sgd", "sgd:momentum=0.9"], batch_size=[None, 32]).varying() == \
        ["optimizer", "batch_size"]
    assert Axes.of(optimizer=["adam:lr=0.01", "adam:lr=0.1"]).varying() == ["lr"]
    assert Axes.of(epochs=[1, 2], schedule=[None, "step:step_size=3"]).varying() == ["epochs", "schedule"]


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


def test_memory_check_counts_the_batch_and_the_optimiser_state():
    """A minibatch needs its rows' activations, not all samples'; Adam keeps two arrays per parameter."""
    from nnx.sweep.job import network, optimizer_slots
    from nnx.sweep.preflight import memory_needs

    configs, datasets = plan(Axes.of(hidden=4096, samples=4096, passes=1, backend="numpy",
                                     optimizer=["sgd", "adam"], batch_size=[None, 32]))
    jobs = [(c.key, "numpy", network(c, datasets[c.data_sha256]), c.samples, c.batch_size, optimizer_slots(c))
            for c in configs]
    needs = {(c.optimizer, c.batch_size): memory_needs(jobs)[c.key]["need"] for c in configs}
    assert [optimizer_slots(c) for c in configs] == [0, 0, 2, 2]
    params = (2 * 4096 + 4096) + (4096 * 2 + 2)
    for optimizer in ("sgd", "adam"):
        # The N x H activations of full batch against 32 x H: at least (4096 - 32) x 4096 float64 apart.
        assert needs[optimizer, None] - needs[optimizer, 32] >= (4096 - 32) * 4096 * 8
    for batch in (None, 32):
        assert needs["adam", batch] - needs["sgd", batch] >= 2 * params * 8  # two moments, float64
