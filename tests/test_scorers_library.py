"""Every scorer against a hand-computed example (value and direction), the two
record formats against each other, GraNd against autograd, and properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import nn

from unseen.config import load_schema
from unseen.dynamics import tdds
from unseen.grand import ScoringModel, grand_scores
from unseen.scorers import (
    MODEL_SCORERS,
    SCORERS,
    STAT_BYTES_PER_SAMPLE_EPOCH,
    PredictionRecord,
    StatisticsRecorder,
    compute_scores,
    scores_from_predictions,
)
from unseen.strategies import STRATEGIES
from unseen.subset_training import RECORD_FORMATS

RECORD_SCORERS = sorted(set(SCORERS) - MODEL_SCORERS)


def record(logits, labels, epochs=None) -> PredictionRecord:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 2:
        z = z[None]
    return PredictionRecord(
        sample_ids=np.arange(z.shape[1]),
        labels=np.asarray(labels, dtype=np.int64),
        epochs=np.arange(1, len(z) + 1) if epochs is None else np.asarray(epochs),
        logits=z,
    )


# --- schema = registry ------------------------------------------------------


def test_schema_scorer_enum_is_exactly_the_registry():
    props = load_schema()["properties"]
    assert props["scorers"]["items"]["enum"] == sorted(SCORERS)


def test_schema_strategy_enum_is_exactly_the_registry():
    props = load_schema()["properties"]["selection"]["properties"]
    # selection.strategy is a list of strategy names (one name is read as a one-item list)
    assert props["strategy"]["type"] == "array"
    assert props["strategy"]["items"]["enum"] == sorted(STRATEGIES)


def test_schema_record_formats_are_the_ones_jobs_know():
    props = load_schema()["properties"]
    assert props["record_format"]["enum"] == list(RECORD_FORMATS)


def test_schema_scorer_options_name_existing_scorers():
    options = load_schema()["properties"]["scorer_options"]["properties"]
    assert set(options) <= set(SCORERS)


# --- final-epoch scorers: p = [0.75, 0.25] (label 0) and [0.5, 0.5] (label 1) ----

LOGITS = [[math.log(3.0), 0.0], [0.0, 0.0]]
LABELS = [0, 1]
FINAL_EPOCH_EXPECTED = {
    "entropy": [-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), math.log(2.0)],
    "least_confidence": [0.25, 0.5],
    "margin": [0.5, 1.0],
    "loss": [-math.log(0.75), math.log(2.0)],
    "el2n": [math.sqrt(2 * 0.25**2), math.sqrt(0.5)],
}


@pytest.mark.parametrize("name", sorted(FINAL_EPOCH_EXPECTED))
def test_final_epoch_scorers_by_hand(name):
    scores = compute_scores(name, record(LOGITS, LABELS))
    np.testing.assert_allclose(scores, FINAL_EPOCH_EXPECTED[name], rtol=1e-12)
    # the 50/50 sample is the harder one, so it must be kept first
    assert scores[1] > scores[0]


def test_final_epoch_scorers_use_only_the_last_epoch():
    early = [[0.0, 5.0], [5.0, 0.0]]
    two_epochs = record([early, LOGITS], LABELS)
    for name, expected in FINAL_EPOCH_EXPECTED.items():
        np.testing.assert_allclose(compute_scores(name, two_epochs), expected, rtol=1e-12)


def test_el2n_avg_by_hand():
    # epoch 1: both samples at [0.5, 0.5]; epoch 2: LOGITS
    rec = record([[[0.0, 0.0], [0.0, 0.0]], LOGITS], LABELS)
    half = math.sqrt(0.5)
    expected = [(half + math.sqrt(2 * 0.25**2)) / 2, half]
    np.testing.assert_allclose(compute_scores("el2n_avg", rec), expected, rtol=1e-12)


def test_el2n_early_averages_only_the_early_epochs():
    # epochs 1 and 2 at [0.5, 0.5], epoch 5 = LOGITS: until_epoch=2 ignores epoch 5
    flat = [[0.0, 0.0], [0.0, 0.0]]
    rec = record([flat, flat, LOGITS], LABELS, epochs=[1, 2, 5])
    np.testing.assert_allclose(compute_scores("el2n_early", rec, options={"until_epoch": 2}),
                               [math.sqrt(0.5)] * 2, rtol=1e-12)
    np.testing.assert_allclose(compute_scores("el2n_early", rec, options={"until_epoch": 5}),
                               compute_scores("el2n_avg", rec), rtol=1e-12)
    with pytest.raises(ValueError, match=r"until_epoch=2 .*recorded: \[5\]"):
        compute_scores("el2n_early", record([LOGITS], LABELS, epochs=[5]), options={"until_epoch": 2})


# --- training dynamics ---------------------------------------------------------

RIGHT, WRONG = [1.0, 0.0], [0.0, 1.0]  # logits for label 0


def test_forgetting_by_hand():
    patterns = [
        [RIGHT, WRONG, RIGHT, WRONG],  # learned, forgotten twice -> 2
        [RIGHT, RIGHT, RIGHT, RIGHT],  # never forgotten -> 0
        [WRONG, WRONG, WRONG, WRONG],  # never learned -> most forgettable: E = 4
        [WRONG, RIGHT, RIGHT, WRONG],  # once -> 1
    ]
    logits = np.array(patterns).transpose(1, 0, 2)  # (E, N, C)
    scores = compute_scores("forgetting", record(logits, [0, 0, 0, 0]))
    np.testing.assert_array_equal(scores, [2, 0, 4, 1])


def test_aum_by_hand():
    # sample 0 margins 1 and -3 (mean -1); sample 1 margins 5 and 4 (mean 4.5)
    logits = np.array([[[2, 1, 0], [5, 0, 0]], [[0, 3, 1], [5, 1, 0]]], dtype=float)
    scores = compute_scores("aum", record(logits, [0, 0]))
    np.testing.assert_allclose(scores, [1.0, -4.5])
    assert scores[0] > scores[1]  # small margin = hard = kept first


def _binary_logits(p0_sequence):
    """Logits (E, 1, 2) with P(class 0) following ``p0_sequence``."""
    return np.array([[[math.log(p / (1 - p)), 0.0]] for p in p0_sequence])


def test_tdds_by_hand():
    fluctuating = [0.5, 0.9, 0.5]
    d1 = abs(0.9 * math.log(0.9 / 0.5)) + abs(0.1 * math.log(0.1 / 0.5))
    d2 = abs(0.5 * math.log(0.5 / 0.9)) + abs(0.5 * math.log(0.5 / 0.1))
    expected = 0.9 * abs(d1 - d2) / math.sqrt(2)  # one window of 2 changes
    logits = np.concatenate([_binary_logits(fluctuating), _binary_logits([0.5] * 3)], axis=1)
    scores = compute_scores("tdds", record(logits, [0, 0]), options={"window": 2, "decay": 0.9})
    np.testing.assert_allclose(scores, [expected, 0.0], rtol=1e-9, atol=1e-12)
    assert scores[0] > scores[1]


def test_tdds_decay_weights_late_windows_more():
    # changes d = (1, 3, 3) vs (3, 3, 1): windows of 2 have variability sqrt(2) or 0
    early = tdds(np.array([[0.0], [1.0], [3.0], [3.0]]), window=2, decay=0.9)
    late = tdds(np.array([[0.0], [3.0], [3.0], [1.0]]), window=2, decay=0.9)
    np.testing.assert_allclose(early, [0.9 * 0.1 * math.sqrt(2)])
    np.testing.assert_allclose(late, [0.9 * math.sqrt(2)])


def test_dyn_unc_by_hand():
    logits = np.concatenate(
        [_binary_logits([0.5, 0.75, 0.5]), _binary_logits([0.75, 0.75, 0.75])], axis=1
    )
    scores = compute_scores("dyn_unc", record(logits, [0, 0]), options={"window": 2})
    np.testing.assert_allclose(scores, [0.125, 0.0], atol=1e-12)
    whole = compute_scores("dyn_unc", record(logits, [0, 0]), options={"window": 3})
    np.testing.assert_allclose(whole[0], np.std([0.5, 0.75, 0.5]), rtol=1e-12)


def test_random_scores_depend_only_on_id_and_seed():
    rec = record(np.zeros((1, 5, 2)), [0] * 5)
    a = compute_scores("random", rec, seed=3)
    b = compute_scores("random", rec, seed=3)
    c = compute_scores("random", rec, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all((a >= 0) & (a < 1))


def test_unknown_options_are_rejected_with_the_scorer_name():
    with pytest.raises(ValueError, match="tdds"):
        compute_scores("tdds", record(LOGITS, LABELS), options={"windw": 3})


def test_model_scorers_need_the_model():
    with pytest.raises(ValueError, match="model"):
        compute_scores("grand_last", record(LOGITS, LABELS))


# --- the two record formats give the same scores ----------------------------------


def _random_record(seed=0, epochs=4, n=40, classes=7):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(epochs, n, classes)) * 3).astype(np.float16)
    labels = rng.integers(0, classes, n)
    return logits, labels


@pytest.mark.parametrize("name", RECORD_SCORERS)
def test_statistics_record_matches_logit_record(name):
    logits, labels = _random_record()
    recorder = StatisticsRecorder(labels)
    for epoch, z in enumerate(logits, start=1):
        recorder(epoch, z.astype(np.float32))
    ids = np.arange(len(labels))
    stats_record = PredictionRecord(
        sample_ids=ids, labels=labels, epochs=np.array(recorder.epochs), stats=recorder.stacked()
    )
    logit_record = PredictionRecord(
        sample_ids=ids, labels=labels, epochs=np.arange(1, 5), logits=logits
    )
    options = {"window": 3} if name in ("tdds", "dyn_unc") else None
    np.testing.assert_allclose(
        compute_scores(name, stats_record, options=options),
        compute_scores(name, logit_record, options=options),
        rtol=1e-5, atol=1e-5,
    )


def test_statistics_record_size_is_fixed():
    logits, labels = _random_record(classes=150)
    recorder = StatisticsRecorder(labels)
    recorder(1, logits[0].astype(np.float32))
    size = sum(v.nbytes for v in recorder.stacked().values())
    assert size == STAT_BYTES_PER_SAMPLE_EPOCH * len(labels) == 33 * len(labels)


# --- plain-array API -----------------------------------------------------------------


@pytest.mark.parametrize("name", RECORD_SCORERS)
def test_probabilities_and_logits_give_the_same_scores(name):
    logits, labels = _random_record(seed=1)
    z = logits.astype(np.float64)
    probs = np.exp(z - z.max(axis=2, keepdims=True))
    probs /= probs.sum(axis=2, keepdims=True)
    from_probs = scores_from_predictions(name, labels, probs=probs)
    from_logits = scores_from_predictions(name, labels, logits=z)
    # log p differs from z by a per-row constant, so even AUM's margins agree
    np.testing.assert_allclose(from_probs, from_logits, rtol=1e-6, atol=1e-9)


def test_scores_from_predictions_accepts_one_epoch():
    scores = scores_from_predictions("least_confidence", LABELS, probs=[[0.75, 0.25], [0.5, 0.5]])
    np.testing.assert_allclose(scores, [0.25, 0.5])


# --- properties ----------------------------------------------------------------------


@st.composite
def logit_records(draw):
    e = draw(st.integers(1, 4))
    n = draw(st.integers(1, 12))
    c = draw(st.integers(2, 5))
    logits = draw(arrays(np.float64, (e, n, c), elements=st.floats(-30, 30)))
    labels = draw(arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    perm = draw(st.permutations(range(n)))
    return logits, labels, np.array(perm, dtype=np.int64)


@settings(max_examples=40, deadline=None)
@given(logit_records())
def test_scores_are_finite_and_independent_of_sample_order(case):
    logits, labels, perm = case
    ids = np.arange(len(labels)) * 7 + 3
    for name in RECORD_SCORERS:
        rec = PredictionRecord(ids, labels, np.arange(1, len(logits) + 1), logits=logits)
        shuffled = PredictionRecord(
            ids[perm], labels[perm], np.arange(1, len(logits) + 1), logits=logits[:, perm]
        )
        scores = compute_scores(name, rec)
        assert np.all(np.isfinite(scores)), name
        np.testing.assert_allclose(compute_scores(name, shuffled), scores[perm], err_msg=name)


# --- GraNd against autograd --------------------------------------------------------------


def _autograd_norms(model, inputs, labels, params):
    norms = []
    for x, y in zip(inputs, labels):
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x[None]), y[None])
        grads = torch.autograd.grad(loss, params)
        norms.append(math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads)))
    return np.array(norms)


def _tiny(bias=True, batch_norm=False):
    torch.manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(4, 6), nn.ReLU(inplace=True)]
    if batch_norm:
        layers.insert(2, nn.BatchNorm1d(6))
    model = nn.Sequential(*layers, nn.Linear(6, 3, bias=bias))
    if batch_norm:  # non-trivial running statistics, as after training
        model.train()
        model(torch.randn(32, 1, 2, 2))
    images = np.random.default_rng(0).integers(0, 256, (9, 1, 2, 2)).astype(np.uint8)
    labels = np.arange(9) % 3
    scoring = ScoringModel(model, images, np.array([0.5], np.float32),
                           np.array([0.25], np.float32), torch.device("cpu"))
    return model, scoring, labels


@pytest.mark.parametrize("bias", [True, False])
def test_grand_last_layer_matches_autograd(bias):
    model, scoring, labels = _tiny(bias=bias)
    head = model[-1]
    expected = _autograd_norms(
        model.eval(), scoring.batch(0, 9), torch.as_tensor(labels),
        [head.weight] + ([head.bias] if bias else []),
    )
    got = grand_scores(scoring, labels, last_layer=True, batch_size=4)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_grand_full_network_matches_autograd(batch_norm):
    model, scoring, labels = _tiny(batch_norm=batch_norm)
    expected = _autograd_norms(
        model.eval(), scoring.batch(0, 9), torch.as_tensor(labels), list(model.parameters())
    )
    got = grand_scores(scoring, labels, last_layer=False, batch_size=4)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    last = grand_scores(scoring, labels, last_layer=True)
    assert np.all(got >= last - 1e-9)  # the head's gradient is part of the full one


def test_grand_scorer_reads_the_model_from_the_record():
    model, scoring, labels = _tiny()
    rec = PredictionRecord(
        sample_ids=np.arange(9), labels=labels, epochs=np.array([1]),
        logits=np.zeros((1, 9, 3)), model=scoring,
    )
    np.testing.assert_allclose(
        compute_scores("grand_last", rec), grand_scores(scoring, labels, last_layer=True)
    )
