"""Training-dynamics scores: functions of per-sample statistics over the recorded epochs.

Inputs are float (E, N) arrays over the E recorded epochs of a scoring model,
oldest first (what :meth:`unseen.scorers.PredictionRecord.stat` returns); each
function returns float64 (N,) with the package convention, higher = more
important to keep. The registry :data:`unseen.scorers.SCORERS` maps config
names (``forgetting``, ``aum``, ``tdds``, ``dyn_unc``, ``el2n_avg``) to them.
"""

from __future__ import annotations

import numpy as np


def forgetting(correct: np.ndarray) -> np.ndarray:
    """Forgetting events (Toneva et al., ICLR 2019), counted over recorded epochs.

    ``correct`` is bool (E, N): was the sample classified correctly at each
    recorded epoch. The score is the number of transitions correct -> incorrect
    between consecutive recorded epochs; a sample never classified correctly
    is "unforgettable in the other sense" and, as in Toneva et al., counts as
    most forgettable: it gets ``E``, more than any reachable count (at most E // 2).
    Higher = forgotten more often = keep first. Range [0, E].
    """
    c = np.asarray(correct, dtype=bool)
    events = (c[:-1] & ~c[1:]).sum(axis=0).astype(np.float64)
    return np.where(c.any(axis=0), events, float(len(c)))


def area_under_margin(target_logit: np.ndarray, max_other_logit: np.ndarray) -> np.ndarray:
    """Negative AUM (Pleiss et al., NeurIPS 2020): ``-mean_t (z_y,t - max_{c!=y} z_c,t)``.

    Inputs are float (E, N) logits over the recorded epochs. A low (negative)
    area under the margin marks hard or mislabelled samples, so the score is its
    negative: higher = smaller margin = keep first. Unit: logits.
    """
    margins = np.asarray(target_logit, np.float64) - np.asarray(max_other_logit, np.float64)
    return -margins.mean(axis=0)


def _window_length(window: int, available: int) -> int:
    if window < 2:
        raise ValueError(f"window must be at least 2, got {window}")
    return max(1, min(window, available))


def tdds(change: np.ndarray, window: int = 10, decay: float = 0.9) -> np.ndarray:
    """TDDS, Temporal Dual-Depth Scoring (Zhang et al., CVPR 2024).

    ``change`` is float (E, N): ``d_t = sum_c |p_t,c (log p_t,c - log p_{t-1},c)|``,
    the KL-like change of the probability vector between consecutive recorded
    epochs (row 0, which has no predecessor, is ignored). With ``m = E - 1``
    changes and window ``w`` (clipped to ``m``; the paper uses 10 epochs and
    records every epoch), window ``k`` (k = 0 .. m - w) covers ``d_{k+1..k+w}``
    and contributes its variability ``V_k = ||d - mean(d)||_2`` over the
    window, weighted by an exponential decay that favours late windows::

        TDDS = sum_k  decay * (1 - decay) ** (m - w - k) * V_k

    (as the authors' code: ``decay`` is the weight of the newest window).
    Higher = the prediction keeps changing irregularly = keep first. With fewer
    than 2 recorded epochs every score is 0.
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must lie in (0, 1], got {decay}")
    d = np.asarray(change, dtype=np.float64)[1:]
    m = len(d)
    if m == 0:
        return np.zeros(d.shape[1])
    w = _window_length(window, m)
    total = np.zeros(d.shape[1])
    for k in range(m - w + 1):
        block = d[k : k + w]
        variability = np.sqrt(((block - block.mean(axis=0)) ** 2).sum(axis=0))
        total += decay * (1.0 - decay) ** (m - w - k) * variability
    return total


def dynamic_uncertainty(target_prob: np.ndarray, window: int = 10) -> np.ndarray:
    """Dyn-Unc (He et al., CVPR 2024, "Large-scale dataset pruning with dynamic uncertainty").

    ``target_prob`` is float (E, N), the probability of the true class at each
    recorded epoch. Mean over the sliding windows of ``window`` consecutive
    recorded epochs (clipped to E; the paper uses 10) of the population standard
    deviation of the target probability in the window. Higher = the
    prediction fluctuates = keep first. Range [0, 0.5].
    """
    p = np.asarray(target_prob, dtype=np.float64)
    w = _window_length(window, len(p))
    stds = [p[k : k + w].std(axis=0) for k in range(len(p) - w + 1)]
    return np.mean(stds, axis=0)


def mean_over_epochs(values: np.ndarray) -> np.ndarray:
    """Mean of a float (E, N) per-epoch score over the recorded epochs; (N,)."""
    return np.asarray(values, dtype=np.float64).mean(axis=0)
