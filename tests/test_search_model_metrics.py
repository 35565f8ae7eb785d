"""``sycam search`` with objectives that run the model on every candidate map (deletion, ROAD),
end to end on the toy problem: the held-out scores of the selected expression are the metric's
own scores of its maps, recomputed here through the public API."""
import json
import math

import pytest

from sycam.api import CAM
from sycam.cli import main
from sycam.data import split
from sycam.metrics import get_metric
from sycam.search.toy import toy_problem

SIZE = 12


@pytest.mark.parametrize("objective, name, params", [
    ("deletion:steps=5", "deletion", {"steps": 5}),
    ("road_combined", "road_combined", {}),
])
def test_search_with_a_model_metric_objective_end_to_end(tmp_path, capsys, objective, name, params):
    out = tmp_path / "out"
    rc = main(["--threads", "1", "search", "--model", "toy", "--data", "toy", "--size", str(SIZE),
               "--metric", objective, "--budget", "12", "--enumerate-size", "2", "--fidelity", "3",
               "--study", "t", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["objectives"] == [objective]
    best = board["best"]
    assert best["source"] != "seed" and (out / "best.txt").stat().st_size > 0
    # held-out scores of the selected expression and of a seed: the metric on their maps, recomputed here
    model, batch, layer = toy_problem(SIZE)
    _, held = split(batch, board["settings"]["split"]["held_out"], board["settings"]["split"]["seed"])
    seed = next(r for r in board["leaderboard"] if r.get("label") == "gradcam")
    for row in (best, seed):
        maps = CAM(row["expression"], model, [layer])(held.x, held.labels).detach()
        values = get_metric(name, **params)(maps, held, model_fn=model)
        assert math.isclose(row[f"held_{objective}"], float(values.mean()), abs_tol=2e-3), row["label"]
    # every seed is compared with it on the same images
    assert {c["seed"] for c in board["comparisons"]} == {r["label"] for r in board["leaderboard"]
                                                         if r["source"] == "seed"}
