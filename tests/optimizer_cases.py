"""The optimiser settings and networks the backend parity tests share (NumPy against the Numba
backend, the CuPy backend and the emulated CUDA programs): one table, so every backend is held to
the same cases."""
from __future__ import annotations

from nnx.optim import SGD, Adam, AdamW, RMSprop

# factories: each test gets fresh optimiser objects
OPTIMIZERS = {
    "sgd": lambda: SGD(0.05),
    "momentum": lambda: SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda: Adam(0.01),
    "adamw": lambda: AdamW(0.01, amsgrad=True),
    "rmsprop": lambda: RMSprop(0.005, momentum=0.5, centered=True),
}
# tutorial 003's network and a 3-hidden-layer ReLU one: (layer sizes, hidden activation)
NETS = {"tutorial003": ([2, 3, 2], "tanh"), "relu3": ([2, 16, 16, 16, 2], "relu")}
