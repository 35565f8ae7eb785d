"""A sampler wrapper that reads the study once per trial instead of once per parameter.

With ``constant_liar`` Optuna's TPE re-reads every trial of the study for every parameter it
samples (running trials change, so it cannot use its cache). A grammar trial has ~5-15
parameters, and on PostgreSQL each read is a round trip over all unfinished trials: most
of a worker's time. :class:`SnapshotSampler` hands the wrapped sampler a view of the study
whose trial list is a snapshot taken by :meth:`SnapshotSampler.refresh` (the driver calls it
before each trial's suggestions, so the liar still sees every trial asked before, with the
parameters they had then). Everything else is the study itself.
"""
from __future__ import annotations

import copy
from collections.abc import Container
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState


class _Snapshot:
    """The study, except that its trials are a fixed list."""

    def __init__(self, study, trials: list[FrozenTrial]):
        self._snapshot_study = study
        self._snapshot_trials = trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._snapshot_study, name)

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        trials = self._snapshot_trials if states is None else [t for t in self._snapshot_trials if t.state in states]
        return copy.deepcopy(trials) if deepcopy else trials

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy, states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self._get_trials()


class SnapshotSampler(BaseSampler):
    """Delegates to ``base``, answering its trial queries from the last :meth:`refresh`."""

    def __init__(self, base: BaseSampler):
        self.base = base
        self._trials: list[FrozenTrial] | None = None

    def refresh(self, study) -> None:
        self._trials = study.get_trials(deepcopy=False)

    def forget(self) -> None:
        self._trials = None

    def _view(self, study):
        return study if self._trials is None else _Snapshot(study, self._trials)

    def infer_relative_search_space(self, study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.base.infer_relative_search_space(self._view(study), trial)

    def sample_relative(self, study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.base.sample_relative(self._view(study), trial, search_space)

    def sample_independent(self, study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.base.sample_independent(self._view(study), trial, param_name, param_distribution)

    def before_trial(self, study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial: FrozenTrial, state: TrialState, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
