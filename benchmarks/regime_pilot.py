"""Pilot for a converged protocol: how well does the fitting model fit its data?

Trains the fitting model (all of a stratified training subset) and one fold
model (1/K of it, the same number of SGD steps: budget.scoring 1.0) for each
candidate (subset size, epochs, weight decay), and reports the training
accuracy on the un-augmented training images, the training-set mean loss,
the fold model's accuracy on the samples it never saw, and the wall time.
The chosen protocol is the cheapest candidate whose fitting model reaches
``--target`` training accuracy (issue 18: 0.99).

    python benchmarks/regime_pilot.py --root /usr/share/datasets/fashion-mnist \
        --subsets 2000 3000 --epochs 20 30 --weight-decay 0.0005 0

Writes benchmarks/results/regime_pilot_cpu.json (machine, command, rows). The
under-fitted contrast (the Fashion-MNIST `validated` matrix's models):

    python benchmarks/regime_pilot.py --subsets 15000 --epochs 8 --batch-size 128 \
        --crop-padding 2 --name regime_underfitted
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import torch

from common import command_line, write_result
from unseen.data import load_dataset
from unseen.folds import assign_folds, fold_training_mask
from unseen.regime import fit_statistics
from unseen.subset_training import train_on_subset
from unseen.train import predict_logits


def fit_of(result, data, ids, norm, device):
    logits = predict_logits(result.model, data.train_x[ids], *norm, device)
    return fit_statistics(logits, data.train_y[ids])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--subsets", type=int, nargs="+", default=[2000])
    parser.add_argument("--epochs", type=int, nargs="+", default=[30, 40])
    parser.add_argument("--weight-decay", type=float, nargs="+", default=[5e-4])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--crop-padding", type=int, default=0)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--results-dir", default=None)
    parser.add_argument("--name", default="regime_pilot",
                        help="results file <name>_cpu.json (another name keeps the pilot's file)")
    args = parser.parse_args(argv)

    device = torch.device("cpu")
    model = {"arch": "small_cnn", "options": {"width": args.width}}
    rows = []
    for subset, epochs, wd in itertools.product(args.subsets, args.epochs, args.weight_decay):
        data = load_dataset({"name": args.dataset, "root": args.root, "subset": subset})
        train = {"epochs": epochs, "batch_size": args.batch_size, "lr": args.lr,
                 "weight_decay": wd, "crop_padding": args.crop_padding, "schedule": "onecycle"}
        every = np.arange(len(data.train_y))
        t0 = time.perf_counter()
        fitting, norm, _, _ = train_on_subset(data, every, None, model, train, [], 0, "cpu", 1)
        fitting_seconds = time.perf_counter() - t0
        fit = fit_of(fitting, data, every, norm, device)
        folds = assign_folds(data.train_y, args.k, 0)
        trains = fold_training_mask(folds, 0, "paper")
        steps = dict(train, iterations=int(fitting.steps))
        fold, fold_norm, _, _ = train_on_subset(data, every[trains], None, model, steps, [], 1, "cpu", 1)
        fold_train = fit_of(fold, data, every[trains], fold_norm, device)
        fold_scored = fit_of(fold, data, every[~trains], fold_norm, device)
        row = {
            "subset": subset, "epochs": epochs, "weight_decay": wd,
            "fitting_train_accuracy": fit["accuracy"], "fitting_train_loss": fit["mean_loss"],
            "fold_train_accuracy": fold_train["accuracy"],
            "fold_scored_accuracy": fold_scored["accuracy"],
            "sample_steps": int(fitting.samples_seen), "fitting_wall_seconds": fitting_seconds,
            "reaches_target": fit["accuracy"] >= args.target,
        }
        print(row, flush=True)
        rows.append(row)
    result = {"dataset": args.dataset, "root": args.root, "model": model, "target": args.target,
              "crop_padding": args.crop_padding, "lr": args.lr, "batch_size": args.batch_size,
              "threads": 1, "rows": rows}
    kwargs = {"results_dir": args.results_dir} if args.results_dir else {}
    print(write_result(args.name, device, result, command_line(__file__, argv), **kwargs))


if __name__ == "__main__":
    main()
