"""Run directories: train, evaluate, predict and compare from a config.

A run directory holds ``config.yaml`` (the resolved config), ``run.json`` (seed, the
config's base directory, versions, label sets), ``vocab.json``, ``best/`` (the selected
weights), ``checkpoints/last`` (for ``--resume``), ``metrics.csv`` (per epoch),
``train_log.csv``, ``results.json`` (final validation and test metrics) and
``manifest.json`` (what every reader checks the other files against; :mod:`.directory`).

One module per job: :mod:`.training`, :mod:`.prediction` (a run read back), :mod:`.comparison`
(multi-task against single-task models) and :mod:`.summary` (means, Δm, intervals).
"""

from .comparison import SEED_RESULT, compare
from .prediction import LoadedRun, load
from .summary import summarise
from .training import TrainResult, count_parameters, train, versions

__all__ = [
    "SEED_RESULT",
    "LoadedRun",
    "TrainResult",
    "compare",
    "count_parameters",
    "load",
    "summarise",
    "train",
    "versions",
]
