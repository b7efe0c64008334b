"""Which trial states count as finished: complete or pruned (failed trials are retried, and never
count toward ``--trials``)."""

from __future__ import annotations

from optuna.trial import TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
