"""The few private parts of Optuna that sycam relies on, checked against the installed version.

pyproject.toml pins Optuna to the tested range; when a new Optuna changes one of these, this
file fails instead of the search silently slowing down or mis-pruning:

* ``sycam.search.sampling.SnapshotSampler`` answers the wrapped sampler's reads of the study's
  trials from a snapshot by standing in for ``Study._get_trials`` (TPE with ``constant_liar``
  calls it once per parameter);
* ``sycam.search.pruning.WilcoxonPruner`` keeps Optuna's decision rule and reads its
  ``_p_threshold`` and ``_n_startup_steps``.
"""
import inspect
import warnings

import optuna

from sycam.search import sampling
from sycam.search.pruning import WilcoxonPruner
from sycam.search.sampling import SnapshotSampler


def test_study_get_trials_has_the_signature_the_snapshot_stands_in_for():
    params = list(inspect.signature(optuna.Study._get_trials).parameters)
    assert params[:4] == ["self", "deepcopy", "states", "use_cache"]


def test_tpe_reads_the_trials_through_the_snapshot(monkeypatch):
    calls = []
    original = sampling._Snapshot._get_trials

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(sampling._Snapshot, "_get_trials", counted)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = SnapshotSampler(optuna.samplers.TPESampler(seed=0, constant_liar=True, n_startup_trials=2))
    study = optuna.create_study(sampler=sampler)
    for _ in range(6):
        trial = study.ask()
        sampler.refresh(study)
        x = trial.suggest_float("x", -1, 1)
        trial.suggest_categorical("c", ["a", "b"])
        study.tell(trial, x * x)
    assert calls, "TPE no longer reads the study's trials through Study._get_trials"


def test_the_wilcoxon_pruner_keeps_its_settings_where_sycam_reads_them():
    pruner = WilcoxonPruner(p_threshold=0.07, n_startup_steps=3)
    assert pruner._p_threshold == 0.07 and pruner._n_startup_steps == 3
