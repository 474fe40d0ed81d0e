"""Scorers against values worked out by hand, and the "higher = keep" direction."""

import math

import numpy as np
import pytest

from unseen import scorers
from unseen.scorers import PredictionRecord, compute_scores

# One sample with p = (0.7, 0.2, 0.1). By hand:
#   entropy = -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1) = 0.249672 + 0.321888 + 0.230259
#   least confidence = 1 - 0.7;  margin = 1 - (0.7 - 0.2)
#   EL2N, label 0 = sqrt(0.3^2 + 0.2^2 + 0.1^2) = sqrt(0.14)
#   EL2N, label 1 = sqrt(0.7^2 + 0.8^2 + 0.1^2) = sqrt(1.14)
P = np.array([[0.7, 0.2, 0.1]])


def test_entropy_by_hand():
    assert scorers.entropy(P)[0] == pytest.approx(0.249672 + 0.321888 + 0.230259, abs=1e-6)
    assert scorers.entropy(np.array([[1.0, 0.0]]))[0] == 0.0
    assert scorers.entropy(np.full((1, 4), 0.25))[0] == pytest.approx(math.log(4))


def test_least_confidence_and_margin_by_hand():
    assert scorers.least_confidence(P)[0] == pytest.approx(0.3)
    assert scorers.margin(P)[0] == pytest.approx(0.5)
    assert scorers.margin(np.array([[0.5, 0.5]]))[0] == pytest.approx(1.0)


def test_el2n_by_hand():
    assert scorers.el2n(P, np.array([0]))[0] == pytest.approx(math.sqrt(0.14))
    assert scorers.el2n(P, np.array([1]))[0] == pytest.approx(math.sqrt(1.14))


def test_cross_entropy_loss_by_hand():
    # logits (ln 2, 0) give p = (2/3, 1/3); the loss of label 1 is ln 3, of label 0 ln 1.5.
    logits = np.array([[math.log(2.0), 0.0], [math.log(2.0), 0.0]])
    loss = scorers.cross_entropy_loss(logits, np.array([1, 0]))
    assert loss == pytest.approx([math.log(3.0), math.log(1.5)])
    # Stable for large logits, where a naive softmax overflows.
    assert scorers.cross_entropy_loss(np.array([[1000.0, 0.0]]), np.array([1]))[0] == pytest.approx(1000.0)


def test_softmax_rows_sum_to_one():
    p = scorers.softmax(np.array([[1.0, 2.0, 3.0], [-50.0, 0.0, 50.0]]))
    assert p.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert p[0] == pytest.approx(np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())


def _record(logits, labels):
    logits = np.asarray(logits, dtype=np.float32)[None]
    n = logits.shape[1]
    return PredictionRecord(
        sample_ids=np.arange(n) * 10, labels=np.asarray(labels), epochs=np.array([5]), logits=logits
    )


@pytest.mark.parametrize("name", ["el2n", "entropy", "least_confidence", "loss", "margin"])
def test_uncertain_or_wrong_sample_scores_higher(name):
    # Sample 0: confident and right. Sample 1: unsure. Sample 2: confident and wrong.
    record = _record([[6.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 6.0, 0.0]], [0, 0, 0])
    s = compute_scores(name, record)
    assert s[1] > s[0], f"{name}: an uncertain sample must rank above a confident one"
    if name in ("el2n", "loss"):
        assert s[2] > s[1], f"{name}: a confidently wrong sample must rank highest"


def test_scorers_use_the_final_recorded_epoch():
    early = [[0.0, 0.0], [0.0, 0.0]]
    final = [[5.0, 0.0], [0.0, 5.0]]
    record = PredictionRecord(
        sample_ids=np.array([0, 1]), labels=np.array([0, 0]), epochs=np.array([1, 2]),
        logits=np.array([early, final], dtype=np.float16),
    )
    loss = compute_scores("loss", record)
    assert loss[1] > loss[0]
    assert loss[0] == pytest.approx(math.log(1 + math.exp(-5.0)), rel=1e-3)


def test_random_scores_depend_on_seed_and_id_only():
    ids = np.array([3, 17, 5, 40])
    a = scorers.random_scores(ids, seed=1)
    b = scorers.random_scores(ids[::-1], seed=1)[::-1]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, scorers.random_scores(ids, seed=2))
    assert np.all((a >= 0) & (a < 1))


def test_unknown_scorer_names_the_choices():
    with pytest.raises(KeyError, match="el2n"):
        compute_scores("nope", _record([[1.0, 0.0]], [0]))
