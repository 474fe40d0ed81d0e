"""UNSEEN dataset pruning: score each sample only with models that never saw it.

Submodules: :mod:`unseen.scorers` (per-sample scores, higher = keep first),
:mod:`unseen.grand` (GraNd gradient scores),
:mod:`unseen.selection` (coreset sizes, selection strategies), :mod:`unseen.folds`,
:mod:`unseen.data`, :mod:`unseen.models`, :mod:`unseen.train`, :mod:`unseen.io`,
:mod:`unseen.jobs` (one function per workflow job) and :mod:`unseen.cli`.
"""

__version__ = "0.1.0"
