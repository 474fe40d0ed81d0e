"""The speed recipe (issue 13) on CPU: the airbench network and the trainer's opt-in options.

Real (tiny) trainings, no mocks. Covers: the airbench network's shapes, size
and whitening layer; that the trainer initialises it from the training data;
that every new training option is off by default (schema and dataclass agree);
the norm learning-rate scale against ``torch.optim.SGD`` with two parameter
groups; lookahead's update rule; alternating flips; test-time flip in
``predict_logits`` and in the retrain job's accuracy; ``torch_compile``
against the eager trainer; and that the preset learns.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from unseen import jobs
from unseen.batches import _Normalizer
from unseen.config import load_schema
from unseen.data import load_dataset, save_cached
from unseen.images import channel_stats
from unseen.models import AirbenchNet, build_model, count_parameters, data_init_samples
from unseen.optim import Lookahead, NesterovSGD
from unseen.seeds import derive_seed
from unseen.subset_training import train_on_subset
from unseen.train import (
    NORM_LAYERS,
    TrainSettings,
    predict_logits,
    seed_everything,
    train_model,
)

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parent.parent
SPEED_OPTIONS = ("alternating_flip", "test_time_flip", "norm_lr_scale", "lookahead",
                 "torch_compile", "cudnn_benchmark")


def _cifar_like(n: int, seed: int = 0, classes: int = 4, size: int = 32):
    """uint8 (n, 3, size, size) images: a coloured, left-right asymmetric class template plus noise."""
    rng = np.random.default_rng(seed)
    templates = np.kron(rng.uniform(0, 255, (classes, 3, 4, 4)), np.ones((size // 4, size // 4)))
    labels = rng.integers(0, classes, n)
    images = templates[labels] + rng.normal(0, 40, (n, 3, size, size))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def test_airbench_maps_cifar_images_to_logits_with_the_intended_size():
    torch.manual_seed(0)
    model = build_model("airbench", (3, 32, 32), 10)
    assert isinstance(model, AirbenchNet)
    assert 1_900_000 < count_parameters(model) < 2_000_000
    with torch.no_grad():
        out = model.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad
    # batch norms learn a shift only
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.weight.requires_grad and m.bias.requires_grad for m in norms)


def test_whitening_layer_decorrelates_training_patches():
    torch.manual_seed(0)
    model = build_model("airbench", (3, 32, 32), 10, width=8)
    mixing = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.4, 0.0], [0.5, 0.5, 0.3]])
    images = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(200, 3, 32, 32))
    model.initialise_from_data(images)
    half = model[0].out_channels // 2
    out = F.conv2d(images, model[0].weight[:half])  # the positive filters
    flat = out.transpose(0, 1).reshape(half, -1)
    covariance = flat @ flat.T / flat.shape[1]
    # no correlation between filters; unit variance along each, shrunk by
    # lambda / (lambda + eps) where an eigenvalue lambda is small
    off_diagonal = covariance - torch.diag(covariance.diagonal())
    assert off_diagonal.abs().max() < 1e-3
    assert ((covariance.diagonal() > 0.95) & (covariance.diagonal() < 1.001)).all()
    torch.testing.assert_close(model[0].weight[half:], -model[0].weight[:half])


def test_trainer_initialises_whitening_from_the_first_training_images():
    images, labels = _cifar_like(96)
    mean, std = channel_stats(images)
    seed_everything(0, threads=1)
    model = build_model("airbench", (3, 32, 32), 4, width=8)
    model.data_init_samples = 40  # fewer than the images: only the first 40 count
    assert data_init_samples(model) == 40
    train_model(model, images, labels, TrainSettings(epochs=1, batch_size=32), 0, CPU, mean, std)
    expected = build_model("airbench", (3, 32, 32), 4, width=8)
    expected.initialise_from_data(_Normalizer(mean, std, CPU)(torch.as_tensor(images[:40])))
    torch.testing.assert_close(model[0].weight, expected[0].weight)  # frozen by training
    assert data_init_samples(build_model("small_cnn", (3, 32, 32), 4)) == 0


def test_schema_lists_every_training_setting_and_the_speed_options_are_off_by_default():
    schema = load_schema()["$defs"]["model"]["properties"]["train"]["properties"]
    fields = {f.name: f.default for f in dataclasses.fields(TrainSettings)}
    assert sorted(schema) == sorted(fields)
    for name in SPEED_OPTIONS:
        assert schema[name]["default"] == fields[name], name
    assert not any(fields[n] for n in ("alternating_flip", "test_time_flip", "lookahead",
                                        "cudnn_benchmark"))
    assert fields["norm_lr_scale"] == 1.0 and fields["torch_compile"] == "none"
    assert schema["torch_compile"]["enum"][0] == "none"


@pytest.mark.parametrize("values,message", [
    ({"torch_compile": "fast"}, "torch_compile"),
    ({"alternating_flip": True}, "alternating_flip needs flip"),
    ({"norm_lr_scale": 0}, "norm_lr_scale"),
])
def test_invalid_speed_options_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        TrainSettings.from_dict(values)


def test_norm_lr_scale_matches_torch_sgd_with_two_parameter_groups():
    torch.manual_seed(0)
    model = build_model("small_cnn", (3, 8, 8), 3, width=4)
    reference = build_model("small_cnn", (3, 8, 8), 3, width=4)
    reference.load_state_dict(model.state_dict())
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 3, (16,))

    def is_norm(module):
        return isinstance(module, NORM_LAYERS)

    norm = [p for m in model.modules() if is_norm(m) for p in m.parameters(recurse=False)]
    ref_norm = [p for m in reference.modules() if is_norm(m) for p in m.parameters(recurse=False)]
    ref_ids = {id(p) for p in ref_norm}
    ref_weights = [p for p in reference.parameters() if id(p) not in ref_ids and p.ndim > 1]
    ref_biases = [p for p in reference.parameters() if id(p) not in ref_ids and p.ndim <= 1]
    lr, scale = 0.1, 8.0
    ours = NesterovSGD(list(model.parameters()), 0.85, 5e-4, True, scaled=norm, scale=scale)
    # torch.optim.SGD: norm parameters at lr * scale without decay; biases without decay
    theirs = torch.optim.SGD(
        [{"params": ref_norm, "lr": lr * scale, "weight_decay": 0.0},
         {"params": ref_weights, "weight_decay": 5e-4},
         {"params": ref_biases, "weight_decay": 0.0}],
        lr=lr, momentum=0.85, nesterov=True,
    )
    for _ in range(3):
        for net, step in ((model, lambda: ours.step(lr)), (reference, theirs.step)):
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # and the scale mattered: without it the norm parameters end elsewhere
    plain = build_model("small_cnn", (3, 8, 8), 3, width=4)
    torch.manual_seed(0)
    plain = build_model("small_cnn", (3, 8, 8), 3, width=4)
    unscaled = NesterovSGD(list(plain.parameters()), 0.85, 5e-4, True)
    for _ in range(3):
        plain.zero_grad(set_to_none=True)
        F.cross_entropy(plain(x), y).backward()
        unscaled.step(lr)
    plain_norm = [p for m in plain.modules() if is_norm(m) for p in m.parameters(recurse=False)]
    assert not all(torch.allclose(a, b) for a, b in zip(norm, plain_norm))


def test_lookahead_pulls_weights_to_a_slow_copy_and_ends_on_it():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    lookahead = Lookahead(model, total_steps=10, period=5, base=0.9)
    with torch.no_grad():
        model.weight.fill_(3.0)
    lookahead.after_step(4)  # not a multiple of the period: nothing happens
    assert torch.equal(model.weight, torch.full((1, 2), 3.0))
    lookahead.after_step(5)
    decay = 0.9**5 * 0.5**3
    slow = decay * 1.0 + (1 - decay) * 3.0
    torch.testing.assert_close(model.weight, torch.full((1, 2), slow))
    with torch.no_grad():
        model.weight.fill_(7.0)
    lookahead.after_step(10)  # the last step: the model takes the slow copy
    torch.testing.assert_close(model.weight, torch.full((1, 2), slow))


class _InputRecorder(torch.nn.Module):
    """A linear classifier that keeps a copy of every training batch it is given."""

    def __init__(self, in_shape, classes):
        super().__init__()
        self.linear = torch.nn.Linear(int(np.prod(in_shape)), classes)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return self.linear(x.flatten(1))


def test_alternating_flip_mirrors_each_sample_in_every_other_epoch():
    n, batch, epochs = 64, 16, 4
    images = np.random.default_rng(1).integers(0, 256, (n, 1, 4, 4), dtype=np.uint8)
    labels = np.arange(n) % 2
    mean, std = channel_stats(images)
    model = _InputRecorder((1, 4, 4), 2)
    settings = TrainSettings(epochs=epochs, batch_size=batch, flip=True, alternating_flip=True)
    train_model(model, images, labels, settings, 0, CPU, mean, std)
    plain = _Normalizer(mean, std, CPU)(torch.as_tensor(images))
    flipped = plain.flip(3)
    per_epoch = torch.cat(model.seen).reshape(epochs, n, 1, 4, 4)
    mirrored = np.zeros((epochs, n), dtype=bool)
    for e in range(epochs):
        for row in per_epoch[e]:
            same = (plain == row).flatten(1).all(1)
            mirror = (flipped == row).flatten(1).all(1)
            assert int(same.sum() + mirror.sum()) == 1  # each view is one sample, exactly
            i = int((same | mirror).nonzero())
            mirrored[e, i] = bool(mirror[i])
    assert (mirrored[1:] != mirrored[:-1]).all()  # every sample alternates
    assert 0.25 < mirrored[0].mean() < 0.75  # epoch 1: a coin toss per sample


def test_test_time_flip_averages_the_logits_of_the_image_and_its_mirror():
    images, _ = _cifar_like(20, classes=3)
    mean, std = channel_stats(images)
    torch.manual_seed(0)
    model = build_model("small_cnn", (3, 32, 32), 3, width=4)
    plain = predict_logits(model, images, mean, std, CPU, batch_size=8)
    mirror = predict_logits(model, images[..., ::-1].copy(), mean, std, CPU, batch_size=8)
    both = predict_logits(model, images, mean, std, CPU, batch_size=8, flip=True)
    np.testing.assert_allclose(both, (plain + mirror) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(both, plain)


def test_retrain_reports_the_test_time_flip_accuracy(tmp_path):
    cache = tmp_path / "dataset.npz"
    save_cached(load_dataset("digits"), cache)
    train = {"epochs": 1, "batch_size": 32, "lr": 0.05, "test_time_flip": True}
    spec = {"arch": "mlp", "options": {"width": 32}}
    labels = {"method": "full", "scorer": "none", "strategy": "none", "pruning_rate": 0.0}
    out = tmp_path / "metrics.json"
    jobs.retrain(str(cache), None, spec, train, 0, "cpu", 1, labels, str(out),
                 str(tmp_path / "metrics.parquet"))
    reported = json.loads(out.read_text())["test_accuracy"]
    # the same training by hand (the retrain's seed), predicted with and without the flip
    data = jobs.load_cached(str(cache))
    result, (mean, std), _, _ = train_on_subset(
        data, data.sample_ids, None, spec, train, [], derive_seed(0, "retrain"), "cpu", 1)
    accuracy = {
        flip: float((predict_logits(result.model, data.test_x, mean, std, CPU, flip=flip)
                     .argmax(1) == data.test_y).mean())
        for flip in (False, True)
    }
    assert accuracy[True] != accuracy[False]  # else this test could not tell them apart
    assert reported == accuracy[True]


def _fashion_shaped(n=256, seed=0):
    images, labels = _cifar_like(n, seed=seed, classes=4, size=8)
    return images[:, :1], labels


def test_torch_compile_trains_like_the_eager_trainer():
    pytest.importorskip("torch._inductor")
    images, labels = _fashion_shaped()
    mean, std = channel_stats(images)
    runs = {}
    for mode in ("none", "default"):
        seed_everything(0, threads=1)
        model = build_model("mlp", (1, 8, 8), 4, width=32)
        settings = TrainSettings(epochs=3, batch_size=32, lr=0.05, crop_padding=1, flip=True,
                                 label_smoothing=0.1, torch_compile=mode)
        runs[mode] = train_model(model, images, labels, settings, 0, CPU, mean, std)
    eager, compiled = runs["none"], runs["default"]
    np.testing.assert_allclose([h["loss"] for h in compiled.history],
                               [h["loss"] for h in eager.history], rtol=1e-4)
    for a, b in zip(compiled.model.parameters(), eager.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    assert eager.history[-1]["loss"] < eager.history[0]["loss"]


def test_speed_preset_learns_and_its_options_are_valid():
    preset = yaml.safe_load((REPO / "config" / "cifar10_speed.yaml").read_text())
    assert preset["scoring_model"]["arch"] == preset["final_model"]["arch"] == "airbench"
    settings = TrainSettings.from_dict(preset["final_model"]["train"])
    assert settings.test_time_flip and settings.alternating_flip and settings.lookahead
    # the preset's recipe at CPU size: narrow net, small batches, a few epochs
    small = dataclasses.replace(settings, epochs=4, batch_size=64, lr=settings.lr / 16)
    images, labels = _cifar_like(512, classes=4)
    test_images, test_labels = _cifar_like(200, seed=1, classes=4)
    mean, std = channel_stats(images)
    seed_everything(0, threads=1)
    model = build_model("airbench", (3, 32, 32), 4, width=8)
    result = train_model(model, images, labels, small, 0, CPU, mean, std)
    logits = predict_logits(result.model, test_images, mean, std, CPU, flip=True)
    assert float((logits.argmax(1) == test_labels).mean()) > 0.6  # chance is 0.25
