"""How the tests measure agreement: the error relative to each array's largest magnitude."""
from __future__ import annotations

import numpy as np


def scaled_error(actual, reference) -> float:
    """max |a - r| / max |r| over one array (max |a| when the reference is all zeros)."""
    actual = np.asarray(actual, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    scale = np.abs(reference).max()
    return float(np.abs(actual - reference).max() / scale) if scale else float(np.abs(actual).max())


def params_error(got, want) -> float:
    """The worst scaled error over every W and b of two parameter lists."""
    return max(scaled_error(a, r) for pair_a, pair_r in zip(got, want) for a, r in zip(pair_a, pair_r))
