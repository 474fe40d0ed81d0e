"""``unseen`` console script: one subcommand per kind of workflow job.

The Snakemake rules call these; they are usable by hand too, e.g.::

    unseen score --predictions results/seed0/folds/fold0/predictions.npz \\
        --scorer el2n --seed 0 --output /tmp/fold0_el2n.parquet
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from typing import Callable

from unseen import jobs
from unseen.specs import SPECS


def log_job_context() -> None:
    """Log where the job runs; the SLURM job id makes cluster runs traceable.

    ``cuda_visible_devices`` shows which GPU(s) SLURM (or the user) gave the job.
    """
    logging.getLogger("unseen.jobs").info(
        "host=%s pid=%d slurm_job_id=%s cuda_visible_devices=%s",
        platform.node(), os.getpid(), os.environ.get("SLURM_JOB_ID", "none"),
        os.environ.get("CUDA_VISIBLE_DEVICES", "unset"),
    )


def cmd_budget_ablation(args: argparse.Namespace) -> None:
    import pandas as pd

    from unseen.ablation import write_budget_ablation

    metrics = pd.concat([jobs.io.read_table(path) for path in args.metrics], ignore_index=True)
    written = write_budget_ablation(metrics, args.out_dir, args.seeds)
    logging.getLogger("unseen").info("wrote %s", ", ".join(map(str, written.values())))


def cmd_install_profile(args: argparse.Namespace) -> None:
    from unseen.profiles import ProfileError, install_profile

    try:
        target, action = install_profile(args.name, args.source, force=args.force)
    except ProfileError as err:
        sys.exit(f"unseen install-profile: {err}")
    print(f"{action} {target}; use it with: snakemake --profile {args.name}")


def cmd_compare_runs(args: argparse.Namespace) -> None:
    from unseen.compare import EQUAL, IDENTICAL, ONLY_LEFT, ONLY_RIGHT, STATUSES, compare_results

    try:
        table = compare_results(args.left, args.right)
    except FileNotFoundError as err:
        sys.exit(f"unseen compare-runs: {err}")
    if args.shared_only:
        table = table[~table["status"].isin([ONLY_LEFT, ONLY_RIGHT])]
    counts = table["status"].value_counts()
    print(", ".join(f"{counts.get(status, 0)} {status}" for status in STATUSES))
    for row in table[table["status"] != IDENTICAL].itertuples():
        print(f"{row.status}: {row.path}")
    if table.empty:
        sys.exit("unseen compare-runs: neither folder holds a fold, score or coreset file")
    if not table["status"].isin([IDENTICAL, EQUAL]).all():
        sys.exit(1)


def cmd_check_config(args: argparse.Namespace) -> None:
    from unseen.config import ConfigError, validate_config
    from unseen.data import check_dataset
    from unseen.images import DatasetError
    from unseen.preflight import PreflightError, check_config_syntax

    import yaml

    failed = False
    for path in args.files:
        try:
            check_config_syntax(path)
            config = validate_config(yaml.safe_load(open(path)) or {})
            check_dataset(config["dataset"])
        except (ConfigError, DatasetError, PreflightError, OSError) as err:
            # one line per file, no traceback: the message already names the key and the fix
            print(f"{path}: {err}" if str(path) not in str(err) else str(err), file=sys.stderr)
            failed = True
            continue
        print(f"{path}: valid")
    if failed:
        sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unseen", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
        return p

    p = add("check-config", cmd_check_config,
            "check config files: YAML syntax (with file and line) and every key")
    p.add_argument("files", nargs="+", help="config YAML files, e.g. my.yaml")

    # jobs with a typed spec (unseen.specs): options generated from the spec's fields
    for spec in SPECS.values():
        p = add(spec.COMMAND, lambda args, spec=spec: spec.from_args(args).run(), spec.HELP)
        spec.add_arguments(p)

    p = add("budget-ablation", cmd_budget_ablation,
            "scoring-budget x retrain-budget table and figure from several runs' summaries")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")], default=None,
                   help="only these seeds, comma-separated, e.g. 0,1 (those every run has; "
                   "default: all)")
    p.add_argument("metrics", nargs="+",
                   help="results/summary.parquet of each run (the full-data model once)")

    p = add("compare-runs", cmd_compare_runs,
            "compare two runs' folds, score tables and coresets file by file; exit 1 on a difference")
    p.add_argument("left", help="a run's results/ folder")
    p.add_argument("right", help="the other run's results/ folder")
    p.add_argument("--shared-only", action="store_true",
                   help="compare only the outputs both runs have (e.g. a run with fewer scorers)")

    p = add("install-profile", cmd_install_profile,
            "copy a Snakemake profile to where `snakemake --profile NAME` finds it "
            "(~/.config/snakemake/NAME, or $XDG_CONFIG_HOME/snakemake/NAME)")
    p.add_argument("name", help="profile name, e.g. slurm (profiles/slurm of this repository)")
    p.add_argument("--source", default=None,
                   help="install this profile folder under NAME instead of profiles/NAME")
    p.add_argument("--force", action="store_true",
                   help="replace an installed copy that differs (your edits to it are lost)")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    args = build_parser().parse_args(argv)
    log_job_context()
    logging.getLogger("unseen").info("command: unseen %s", " ".join(sys.argv[1:] if argv is None else argv))
    from unseen.resume import EXIT_RESUMABLE, TrainingInterrupted

    joined = _join_ranks(args)
    try:
        args.func(args)
    except TrainingInterrupted as stopped:
        logging.getLogger("unseen").error("%s", stopped)
        return EXIT_RESUMABLE
    finally:
        if joined:
            from unseen import distributed

            distributed.close()
    return 0


def _join_ranks(args: argparse.Namespace) -> bool:
    """Under torchrun or SLURM tasks (:mod:`unseen.distributed`), join the job's data-parallel
    ranks and name the rank in every log line; whether it joined (False: a single process)."""
    from unseen import distributed

    if distributed.launched_ranks() is None:
        return False
    ranks = distributed.init_from_environment(getattr(args, "device", "auto"))
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)s rank {ranks.rank}/{ranks.size} %(name)s: %(message)s"))
    return True


if __name__ == "__main__":
    sys.exit(main())
