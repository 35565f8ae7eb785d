"""``sycam search`` end to end with objectives that re-explain (noise robustness, flip equivariance,
the cascading sanity check, two objectives), and a resume that re-creates the same noise samples."""
import json
import math

import optuna
import pytest

from sycam.cli import main
from sycam.data import split
from sycam.metrics import get_metric
from sycam.search.ledger import SETTINGS
from sycam.search.reexplain import transform_digest
from sycam.search.storage import open_store
from sycam.search.toy import toy_problem

TOY = ["--model", "toy", "--data", "toy", "--size", "24"]
SMALL = ["--budget", "16", "--enumerate-size", "2", "--batch", "4", "--fidelity", "0", "--seed", "0",
         "--held-out", "0.25", "--split-seed", "3", "--top", "3"]


def run_search(tmp_path, *extra, study="r"):
    return main(["--threads", "1", "search", *TOY, "--study", study, "--out", str(tmp_path / "out"), *extra])


def board_of(tmp_path):
    return json.loads((tmp_path / "out" / "leaderboard.json").read_text())


@pytest.mark.parametrize("metric", ["noise_robustness", "equivariance_flip", "sanity_cascading"])
def test_search_with_an_objective_that_re_explains(tmp_path, metric):
    assert run_search(tmp_path, "--metric", metric, *SMALL) == 0
    board = board_of(tmp_path)
    top = board["leaderboard"][0]
    assert math.isfinite(top[f"held_{metric}"]) and math.isfinite(top[f"train_{metric}"])
    # the study stores the fingerprint of the noisy copies / flipped images / randomised models
    model, batch, _ = toy_problem(24)
    train, _ = split(batch, 0.25, 3)
    assert board["settings"]["transforms"] == {metric: transform_digest(get_metric(metric), train, model)}


def test_two_objectives_localisation_and_equivariance(tmp_path):
    assert run_search(tmp_path, "--metric", "energy_pointing_game", "--metric", "equivariance_flip", *SMALL) == 0
    top = board_of(tmp_path)["leaderboard"][0]
    assert math.isfinite(top["held_energy_pointing_game"]) and math.isfinite(top["held_equivariance_flip"])


def test_resume_of_a_robustness_search_uses_the_same_noise_samples(tmp_path, capsys):
    args = ["--metric", "noise_robustness:samples=2", *SMALL, "--no-report"]
    assert run_search(tmp_path, *args) == 0
    store = open_store(f"journal:{tmp_path / 'out' / 'study.journal'}")
    study = optuna.load_study(study_name="r", storage=store.optuna)
    stored = study.user_attrs[SETTINGS]["transforms"]["noise_robustness:samples=2"]
    capsys.readouterr()
    assert run_search(tmp_path, *[a if a != "16" else "24" for a in args]) == 0      # resumes, more budget
    assert "resuming study" in capsys.readouterr().out
    assert study.user_attrs[SETTINGS]["transforms"]["noise_robustness:samples=2"] == stored
    # noise that is not re-created identically (here: a stored digest of other samples) is refused
    settings = dict(study.user_attrs[SETTINGS])
    settings["transforms"] = {"noise_robustness:samples=2": "0" * 32}
    study.set_user_attr(SETTINGS, settings)
    assert run_search(tmp_path, *args) == 2
    assert "transforms" in capsys.readouterr().err


def test_an_objective_that_cannot_be_searched_fails_before_any_work(tmp_path, capsys):
    assert run_search(tmp_path, "--metric", "target_pearson", *SMALL) == 2
    assert "reference maps" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("objective, message", [
    ("noise_robustness:samples=0", "samples must be a whole number >= 1"),
    ("noise_robustness:level=-1", "noise level must be >= 0"),
    ("noise_robustness:noise=pink", "unknown noise 'pink'"),
    ("equivariance_flip:transform=twist", "unknown transform 'twist'"),
    ("sanity_cascading:stages=0", "stages must be >= 1"),
])
def test_an_empty_or_unknown_transform_list_is_an_error_before_any_model_work(tmp_path, capsys, monkeypatch,
                                                                              objective, message):
    """No noisy copies, an unknown noise or transform, no randomisation stage: refused when the
    objective is parsed, before the model is loaded."""
    import sycam.commands.problem as problem

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(problem, "load_problem", no_model)
    monkeypatch.setattr("sycam.commands.search.load_problem", no_model)
    rc = main(["search", "--model", "toy", "--data", "toy", "--budget", "5", "--metric", objective,
               "--out", str(tmp_path / "out")])
    assert rc == 2
    assert message in capsys.readouterr().err
