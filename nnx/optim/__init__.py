"""Optimisers and learning-rate schedules for ``MLP.fit`` (PyTorch's formulas and defaults)."""
from .optimizers import OPTIMIZERS, SGD, Adam, AdamW, Optimizer, RMSprop
from .schedules import (SCHEDULES, Constant, Cosine, Exponential, LinearWarmup, Schedule, Sequential, Step,
                        learning_rates)

__all__ = ["OPTIMIZERS", "SCHEDULES", "SGD", "Adam", "AdamW", "Constant", "Cosine", "Exponential", "LinearWarmup",
           "Optimizer", "RMSprop", "Schedule", "Sequential", "Step", "learning_rates"]
