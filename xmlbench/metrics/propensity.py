"""Label propensities for the propensity-scored metrics (PSP@k, PSnDCG@k).

Jain, Prabhu & Varma, "Extreme Multi-label Loss Functions for Recommendation, Tagging, Ranking & Other
Missing Label Applications", KDD 2016, eq. (2):

    p_l = 1 / (1 + C exp(-A log(N_l + B))),   C = (log N - 1) (B + 1)^A

with N_l the number of training points tagged with label l, N the number of training points and natural
logarithms. The usual constants are A = 0.55, B = 1.5 (A = 0.6, B = 2.6 for Amazon datasets, A = 0.5,
B = 0.4 for Wikipedia ones, as in the paper).
"""

from __future__ import annotations

import numpy as np

from xmlbench.errors import UserError


def inv_propensity(label_counts: np.ndarray, n_train: int, A: float = 0.55, B: float = 1.5) -> np.ndarray:
    """Return 1 / p_l (float64, one per label) from per-label training counts N_l.

    Since exp(-A log(N_l + B)) = (N_l + B)^-A, 1/p_l = 1 + C (N_l + B)^-A. A label never seen in training
    gets the (finite, largest) value at N_l = 0, 1 + C B^-A.
    """
    counts = np.asarray(label_counts, dtype=np.float64).ravel()
    if n_train <= 0:
        raise UserError(f"inv_propensity needs a positive number of training points, got {n_train}")
    if counts.size and counts.min() < 0:
        raise UserError("inv_propensity: label counts must be non-negative")
    if B <= 0:
        raise UserError(f"inv_propensity: B must be > 0 (N_l = 0 would give an infinite weight), got {B}")
    c = (np.log(n_train) - 1.0) * (B + 1.0) ** A
    return 1.0 + c * np.power(counts + B, -A)
