"""The benchmark scripts run end to end at tiny size on CPU and write their JSON results.

Timings are only recorded, never asserted. The data are small synthetic image
trees and the embedded digits; nothing needs ../shared.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import benchmark_script as _script

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory) -> Path:
    """ImageFolder tree: 3 classes of 32x32 RGB PNGs, 24 train and 6 test each, class-coloured."""
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    colours = rng.uniform(0, 255, (3, 3))
    for split, n in (("train", 24), ("test", 6)):
        for c, name in enumerate(("cat", "dog", "frog")):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = colours[c] + rng.normal(0, 30, (32, 32, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
                    root / split / name / f"{i}.png")
    return root


def test_busy_fraction_counts_overlapping_intervals_once():
    common = _script("common")
    assert common.busy_fraction([]) is None
    assert common.busy_fraction([(0, 10), (5, 15), (20, 30)]) == pytest.approx(25 / 30)
    assert common.busy_fraction([(0, 10), (2, 3)]) == 1.0
    trace = {"traceEvents": [{"cat": "kernel", "ts": 0, "dur": 4}, {"cat": "cpu_op", "ts": 4, "dur": 6},
                             {"cat": "gpu_memcpy", "ts": 8, "dur": 2}]}
    assert common.gpu_intervals_from_trace(trace) == [(0.0, 4.0), (8.0, 10.0)]


def test_speedrun_writes_accuracy_time_and_device(image_tree, tmp_path):
    speedrun = _script("speedrun")
    out = speedrun.main([
        "--root", str(image_tree), "--dataset-label", "synthetic 3-class tree",
        "--epochs", "2", "--batch-size", "16", "--width", "8", "--runs", "2",
        "--warmup-steps", "3", "--device", "cpu", "--threads", "1",
        "--results-dir", str(tmp_path),
    ])
    assert out == tmp_path / "speedrun_cpu.json"
    result = json.loads(out.read_text())
    assert result["dataset"] == "synthetic 3-class tree"
    assert result["n_train"] == 72 and result["n_test"] == 18 and result["model"] == "airbench"
    assert 0.0 <= result["test_accuracy"] <= 1.0 and result["train_seconds"] > 0
    assert [r["seed"] for r in result["runs"]] == [0, 1] and result["warmup_excluded"]
    assert result["settings"]["epochs"] == 2 and result["settings"]["test_time_flip"]
    assert result["machine"]["device"] == "cpu" and result["machine"]["torch"]
    assert "speedrun" in result["command"] and result["goal"]["test_accuracy"] == 0.94
    # different seeds, different trainings
    assert result["runs"][0]["final_train_loss"] != result["runs"][1]["final_train_loss"]


def test_trainer_throughput_compares_our_trainer_with_the_plain_loop(tmp_path):
    throughput = _script("trainer_throughput")
    (tmp_path / "b.md").write_text(f"old table\n{throughput.GENERATED_END}\n## Checklist\nkeep me\n")
    proc = __import__("subprocess").run(
        [sys.executable, str(BENCHMARKS / "trainer_throughput.py"), "--dataset", "digits",
         "--root", "unused", "--model", "mlp", "--n-train", "256", "--n-test", "100",
         "--epochs", "1", "--batch-size", "32", "--rounds", "1", "--plain-workers", "0",
         "--device", "cpu", "--results-dir", str(tmp_path), "--markdown", str(tmp_path / "b.md")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "trainer_throughput_cpu.json").read_text())
    ours, plain = result["methods"]["unseen trainer"], result["methods"][
        "plain DataLoader loop (0 workers)"]
    assert ours["train_samples_per_s"] > 0 and plain["speedup_vs_plain"] == 1.0
    assert ours["gpu_busy_fraction_train"] is None  # CPU: no GPU to be busy
    assert "trainer_throughput.py" in result["command"]
    markdown = (tmp_path / "b.md").read_text()
    assert "| unseen trainer |" in markdown and "old table" not in markdown
    assert markdown.endswith(f"{throughput.GENERATED_END}\n## Checklist\nkeep me\n")


@pytest.mark.workflow
def test_pipeline_times_a_whole_seed_through_snakemake(tmp_path):
    # the smallest whole seed: the full-data model and the random baseline
    config = {
        "dataset": {"name": "digits"}, "seeds": [0],
        "final_model": {"arch": "mlp", "options": {"width": 32},
                        "train": {"epochs": 3, "batch_size": 64, "test_time_flip": True}},
        "methods": ["full", "random"], "pruning_rates": [0.5], "device": "cpu",
    }
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(__import__("yaml").safe_dump(config))
    pipeline = _script("pipeline")
    out = pipeline.main(["--config", str(config_file), "--workdir", str(tmp_path / "run"),
                         "--cores", "2", "--gpu-slots", "2", "--device", "cpu",
                         "--startup-repeats", "1", "--results-dir", str(tmp_path)])
    result = json.loads(out.read_text())
    assert out.name == "pipeline_cpu.json" and result["machine"]["device"] == "cpu"
    per_rule = result["jobs_per_rule"]
    assert per_rule["retrain_full"] == 1 and per_rule["retrain"] == 1
    assert per_rule["select_random_coreset"] == 1 and "prepare_data" not in per_rule  # timed apart
    assert result["jobs"] == sum(per_rule.values()) and result["training_jobs"] == 2
    assert result["wall_seconds_per_seed"] == result["wall_seconds"] > 0
    assert result["total_seconds"] == pytest.approx(result["wall_seconds"] + result["data_seconds"], abs=0.11)
    assert result["job_startup_seconds"] > 0 and result["knobs"]["gpu_slots"] == 2
    assert "pipeline.py" in result["command"] and result["seeds"] == [0]
    assert len(list((tmp_path / "run" / "results" / "seed0" / "retrain").rglob("metrics.json"))) == 2


def test_optimizer_startup_times_both_optimizers_in_fresh_interpreters(tmp_path):
    out = _script("optimizer_startup").main(["--repeats", "1", "--results-dir", str(tmp_path)])
    result = json.loads(out.read_text())
    assert out.name == "optimizer_startup_cpu.json"
    medians = result["median_seconds_to_first_step"]
    assert set(medians) == {"unseen NesterovSGD", "torch.optim.SGD"} and min(medians.values()) > 0
    assert result["torch_optim_extra_seconds"] == pytest.approx(
        medians["torch.optim.SGD"] - medians["unseen NesterovSGD"], abs=1e-3)


def test_imagenet_data_path_measures_decoding_records_and_extrapolates(tmp_path):
    bench = _script("imagenet_data_path")
    # config/imagenet.yaml with small models, so the checkpoint sizes are quick to take
    config = yaml.safe_load((REPO / "config/imagenet.yaml").read_text())
    config["scoring_model"]["arch"], config["final_model"]["arch"] = "small_cnn", "small_cnn"
    config["record_epochs"] = [10, 20]
    (tmp_path / "imagenet.yaml").write_text(yaml.safe_dump(config))
    out = bench.main([
        "--classes", "3", "--train-per-class", "4", "--images", "6", "--workers", "1",
        "--threads", "2", "--rounds", "1", "--record-per-class", "2", "--config", str(tmp_path / "imagenet.yaml"),
        "--results-dir", str(tmp_path)])
    result = json.loads(out.read_text())
    assert out.name == "imagenet_data_path_cpu.json"
    assert "imagenet_data_path.py" in result["command"]
    decode = result["decode"]
    assert decode["images"] == 6 and decode["image_size"] == 224  # 6 of the 12, spread out
    assert 250 * 300 <= decode["mean_pixels"] <= 450 * 500 and decode["mean_jpeg_bytes"] > 10_000
    assert decode["one_process"]["images"] == 6 and decode["images_per_cpu_s_per_worker"] > 0
    [loader] = decode["dataloader"]
    assert loader["workers"] == 1 and loader["images"] == 6 and loader["workers_cpu_seconds"] > 0
    [threads] = decode["in_memory_threads"]
    assert threads["threads"] == 2 and threads["image_size"] == 64 and threads["images"] == 6
    # the files a real scoring job wrote at 1,000 classes: statistics (33 bytes per sample
    # and recorded epoch) in the default format, float16 logits (2 bytes per class) otherwise
    records = result["records"]
    assert records["classes"] == 1000 and records["scored_samples"] == 1000
    stats, logits = records["formats"]["auto"], records["formats"]["logits"]
    assert stats["stored"] == "stats" and logits["stored"] == "logits"
    from unseen.scorers import STAT_BYTES_PER_SAMPLE_EPOCH

    assert stats["recorded_bytes_per_scored_sample_and_epoch"] == STAT_BYTES_PER_SAMPLE_EPOCH
    assert logits["recorded_bytes_per_scored_sample_and_epoch"] == 2 * 1000
    for record in (stats, logits):  # a second recorded epoch adds just that to the file
        assert record["bytes_per_scored_sample_per_recorded_epoch"] == pytest.approx(
            record["recorded_bytes_per_scored_sample_and_epoch"], abs=0.05)
        assert record["id_bytes_per_scored_sample"] == 16 and record["bytes_per_train_id"] == 8
        assert 0 < record["fixed_bytes"] < 20_000
    assert result["checkpoints"]["small_cnn"] > 8 * result["checkpoint_train_ids"]
    # ImageNet, extrapolated for the config: K = 5 fold models of 1/5 of the images each, with
    # the fitting model's SGD steps (budget.scoring 1.0), recording 3 epochs on the other 4/5
    ext = result["imagenet_extrapolated"]
    fold = ext["fold_model"]
    assert fold["trained_samples"] == round(1_281_167 / 5)
    assert fold["scored_samples"] == 1_281_167 - fold["trained_samples"]
    assert fold["sgd_steps"] == 1_281_167 // 256 * 30 and fold["recorded_epochs"] == 3
    assert fold["images_decoded"] == (fold["sgd_steps"] * 256 + 3 * fold["scored_samples"]
                                      + fold["trained_samples"])
    assert fold["decode_worker_hours"] == pytest.approx(
        fold["images_decoded"] / decode["images_per_cpu_s_per_worker"] / 3600)
    assert fold["decode_bound_wall_hours_at_workers"] == pytest.approx(
        fold["decode_worker_hours"] / 12)
    assert fold["predictions_npz_bytes"] == pytest.approx(
        stats["fixed_bytes"] + fold["scored_samples"] * (
            16 + 3 * stats["bytes_per_scored_sample_per_recorded_epoch"])
        + 8 * fold["trained_samples"])
    assert ext["k_fold_models"]["images_decoded"] == 5 * fold["images_decoded"]
    # a real training state (weights, momentum, generators, the epoch's order of 16 samples)
    state = result["training_states"]["small_cnn"]
    assert state > 0 and result["training_state_samples"] == 16
    assert fold["training_state_bytes"] == state + 8 * (fold["trained_samples"] - 16)
