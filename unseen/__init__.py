"""UNSEEN dataset pruning: score each sample only with models that never saw it.

Library (no files, no Snakemake): :mod:`unseen.api` (the notebook entry point),
:mod:`unseen.scorers` and :mod:`unseen.dynamics` (per-sample scores, higher =
keep first), :mod:`unseen.grand` (GraNd gradient scores), :mod:`unseen.selection`
(coreset sizes, top-k order, score aggregation), :mod:`unseen.strategies`
(selection strategies), :mod:`unseen.validation` (the ``validated`` strategy's
choice), :mod:`unseen.coresets`, :mod:`unseen.budget`, :mod:`unseen.folds`,
:mod:`unseen.data`, :mod:`unseen.datasets` and :mod:`unseen.images` (datasets),
:mod:`unseen.models`, :mod:`unseen.train`, :mod:`unseen.batches`,
:mod:`unseen.optim` and :mod:`unseen.subset_training` (training),
:mod:`unseen.diagnostics`, :mod:`unseen.report`, :mod:`unseen.plots` and
:mod:`unseen.ablation` (report). Files and workflow glue: :mod:`unseen.io` and
:mod:`unseen.predictions` (file formats), :mod:`unseen.config`,
:mod:`unseen.preflight`, :mod:`unseen.profiles`, :mod:`unseen.jobs` (one
function per workflow job) and :mod:`unseen.cli`.
"""

__version__ = "0.1.0"
