"""Golden values: every optimiser and schedule against PyTorch's formulas, written here from
PyTorch's documentation and ``torch.optim``'s single-tensor code (not from nnx's), 3 updates
in float64 on every backend; and against ``torch.optim`` itself where torch is installed.

The model is a linear least-squares layer (identity head, mean reduction), whose gradient
the reference computes itself: dW = X^T (X W + b - T) / N, db = sum(X W + b - T) / N.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import nnx
from nnx.optim import (SGD, Adam, AdamW, Constant, Cosine, Exponential, LinearWarmup, RMSprop, Sequential, Step,
                       learning_rates)

RTOL = 1e-12
STEPS = 3

rng = np.random.default_rng(7)
X = rng.normal(size=(16, 3))
T = rng.normal(size=(16, 2))
W0 = rng.normal(size=(3, 2))
b0 = rng.normal(size=2)


def gradient(W, b, l2=0.0):
    D = (X @ W + b - T) / X.shape[0]
    return X.T @ D + l2 * W, D.sum(axis=0)


def reference(kind: str, settings: dict, lrs, l2=0.0):
    """PyTorch's algorithm boxes (torch.optim docs) on two tensors, W and b."""
    W, b = W0.copy(), b0.copy()
    state = [{}, {}]
    for t, lr in enumerate(lrs, start=1):
        gW, gb = gradient(W, b, l2)
        new = []
        for p, g, st in ((W, gW, state[0]), (b, gb, state[1])):
            p, g = p.copy(), g.copy()
            if kind == "sgd":
                mom, damp, nest, wd = (settings.get(k, d) for k, d in
                                       (("momentum", 0.0), ("dampening", 0.0), ("nesterov", False),
                                        ("weight_decay", 0.0)))
                if wd:
                    g = g + wd * p
                if mom:
                    st["b"] = g.copy() if t == 1 else mom * st["b"] + (1 - damp) * g
                    g = g + mom * st["b"] if nest else st["b"]
                p = p - lr * g
            elif kind in ("adam", "adamw"):
                b1, b2 = settings.get("betas", (0.9, 0.999))
                eps = settings.get("eps", 1e-8)
                wd = settings.get("weight_decay", 0.0 if kind == "adam" else 1e-2)
                if kind == "adamw":
                    p = p * (1 - lr * wd)
                elif wd:
                    g = g + wd * p
                st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
                st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
                v = st["v"]
                if settings.get("amsgrad"):  # torch.optim keeps the max of the raw second moment
                    st["vmax"] = np.maximum(st.get("vmax", 0.0), st["v"])
                    v = st["vmax"]
                m_hat = st["m"] / (1 - b1 ** t)
                p = p - lr * m_hat / (np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps)
            elif kind == "rmsprop":
                alpha, eps = settings.get("alpha", 0.99), settings.get("eps", 1e-8)
                wd, mom = settings.get("weight_decay", 0.0), settings.get("momentum", 0.0)
                if wd:
                    g = g + wd * p
                st["v"] = alpha * st.get("v", 0.0) + (1 - alpha) * g * g
                v = st["v"]
                if settings.get("centered"):
                    st["g"] = alpha * st.get("g", 0.0) + (1 - alpha) * g
                    v = v - st["g"] ** 2
                if mom:
                    st["b"] = mom * st.get("b", 0.0) + g / (np.sqrt(v) + eps)
                    p = p - lr * st["b"]
                else:
                    p = p - lr * g / (np.sqrt(v) + eps)
            new.append(p)
        W, b = new
    return W, b


CASES = [
    ("sgd", SGD, {"lr": 0.1}),
    ("sgd", SGD, {"lr": 0.1, "momentum": 0.9}),
    ("sgd", SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.05}),
    ("sgd", SGD, {"lr": 0.1, "momentum": 0.8, "nesterov": True}),
    ("adam", Adam, {"lr": 0.05}),
    ("adam", Adam, {"lr": 0.05, "betas": (0.8, 0.9), "eps": 1e-6, "weight_decay": 0.1}),
    ("adam", Adam, {"lr": 0.05, "amsgrad": True}),
    ("adamw", AdamW, {"lr": 0.05}),
    ("adamw", AdamW, {"lr": 0.05, "weight_decay": 0.3, "amsgrad": True}),
    ("rmsprop", RMSprop, {"lr": 0.01}),
    ("rmsprop", RMSprop, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.02}),
    ("rmsprop", RMSprop, {"lr": 0.01, "centered": True, "alpha": 0.9}),
    ("rmsprop", RMSprop, {"lr": 0.01, "centered": True, "momentum": 0.5, "eps": 1e-4}),
]


def _ids(case):
    kind, _, settings = case
    return kind + "-" + "-".join(f"{k}={v}" for k, v in settings.items() if k != "lr")


def _fit(optimizer, steps=STEPS, schedule=None, l2=0.0):
    model = nnx.MLP([3, 2], output="identity", seed=0)
    model.set_params([(W0, b0)])
    model.fit(X, T, passes=steps, optimizer=optimizer, schedule=schedule, l2=l2, log_every=steps, verbose=0)
    return model.params[0]


def _close(got, want):
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=RTOL * np.abs(w).max())


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_optimiser_matches_pytorchs_formulas(backend, case):
    kind, cls, settings = case
    _close(_fit(cls(**settings)), reference(kind, settings, [settings["lr"]] * STEPS))


@pytest.mark.parametrize("kind,cls,settings", [("sgd", SGD, {"lr": 0.1}), ("adam", Adam, {"lr": 0.05, "betas": (0.8, 0.9)})],
                         ids=["sgd", "adam"])
def test_tutorial_l2_adds_to_the_weight_gradient_only_with_any_optimiser(backend, kind, cls, settings):
    _close(_fit(cls(**settings), l2=0.1), reference(kind, settings, [settings["lr"]] * STEPS, l2=0.1))


SCHEDULES = [
    (Constant(), lambda t: 1.0),
    (Step(step_size=2, gamma=0.5), lambda t: 0.5 ** (t // 2)),
    (Exponential(gamma=0.7), lambda t: 0.7 ** t),
    (Cosine(T_max=4, eta_min=0.01), lambda t: (0.01 + (0.2 - 0.01) * (1 + math.cos(math.pi * t / 4)) / 2) / 0.2),
    (LinearWarmup(), lambda t: 1 / 3 + (1 - 1 / 3) * min(t, 5) / 5),
    (LinearWarmup(start_factor=0.1, end_factor=0.5, total_iters=2), lambda t: 0.1 + 0.4 * min(t, 2) / 2),
    (Sequential([LinearWarmup(total_iters=2), Exponential(gamma=0.5)], milestones=[2]),
     lambda t: 1 / 3 + (2 / 3) * t / 2 if t < 2 else 0.5 ** (t - 2)),
]


@pytest.mark.parametrize("schedule,factor", SCHEDULES, ids=[type(s).__name__ + str(i) for i, (s, _) in
                                                             enumerate(SCHEDULES)])
def test_schedules_are_pytorchs_closed_forms(schedule, factor):
    got = learning_rates(schedule, 0.2, 0, 12, 1)
    want = np.array([0.2 * factor(t) for t in range(12)])
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)
    # the same values from any starting step (a resumed fit)
    np.testing.assert_allclose(learning_rates(schedule, 0.2, 5, 7, 1), want[5:], rtol=RTOL, atol=0)


def test_per_epoch_schedules_count_whole_epochs():
    got = learning_rates(Step(step_size=1, gamma=0.5, per="epoch"), 1.0, 0, 9, 4)
    np.testing.assert_array_equal(got, [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25])


@pytest.mark.parametrize("schedule,factor", SCHEDULES[1:5], ids=["step", "exponential", "cosine", "warmup"])
def test_scheduled_updates_match_the_reference_on_every_backend(backend, schedule, factor):
    settings = {"lr": 0.2, "momentum": 0.5}
    lrs = [0.2 * factor(t) for t in range(STEPS)]
    _close(_fit(SGD(**settings), schedule=schedule), reference("sgd", settings, lrs))


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_optimiser_matches_torch_optim(case):
    torch = pytest.importorskip("torch")
    kind, cls, settings = case
    W = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(b0, dtype=torch.float64, requires_grad=True)
    Xt, Tt = torch.tensor(X), torch.tensor(T)
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
           "rmsprop": torch.optim.RMSprop}[kind]([W, b], **settings)
    for _ in range(STEPS):
        opt.zero_grad()
        (0.5 * ((Xt @ W + b - Tt) ** 2).sum() / X.shape[0]).backward()
        opt.step()
    _close(_fit(cls(**settings)), (W.detach().numpy(), b.detach().numpy()))


def test_torch_schedulers_agree_with_the_closed_forms():
    torch = pytest.importorskip("torch")
    p = torch.zeros(1, requires_grad=True)
    pairs = [(Step(step_size=2, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.5)),
             (Exponential(gamma=0.7), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.7)),
             (Cosine(T_max=4, eta_min=0.01), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 4, 0.01)),
             (LinearWarmup(), lambda o: torch.optim.lr_scheduler.LinearLR(o))]
    for schedule, make in pairs:
        opt = torch.optim.SGD([p], lr=0.2)
        sched = make(opt)
        want = []
        for _ in range(8):
            want.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        np.testing.assert_allclose(learning_rates(schedule, 0.2, 0, 8, 1), want, rtol=1e-12)


def test_bad_optimiser_settings_are_refused_with_the_setting_named():
    with pytest.raises(ValueError, match="nesterov"):
        SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta1"):
        Adam(betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="lr"):
        RMSprop(lr=-1)
    with pytest.raises(ValueError, match="milestones"):
        Sequential([Constant(), Constant()], milestones=[])
