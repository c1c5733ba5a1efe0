"""Loss figures in the exact forms the from-scratch tutorials print."""
from __future__ import annotations

import numpy as np


def clipped_cross_entropy(probs, labels, eps: float = 1e-8) -> float:
    """``-mean(onehot * log(probs + eps))`` over all N*C entries.

    This is the figure tutorial 000 prints. nnx's own ``loss`` is the
    cross-entropy per sample from the logits; use this one only to compare
    with code that prints the clipped form.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    onehot = labels.astype(np.float64) if labels.ndim == 2 else np.eye(probs.shape[1])[labels]
    return float(-np.mean(onehot * np.log(probs + eps)))
