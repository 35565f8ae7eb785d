"""``sycam search`` end to end on the default benchmark with the pretrained EfficientNet-Lite0 (small budget)."""
import json
import math

import pytest
import torch

from sycam.api import CAM
from sycam.cli import main
from sycam.data import default_benchmark, split
from sycam.errors import DataError
from sycam.metrics import get_metric
from sycam.models import load_model

pytestmark = pytest.mark.realmodel


def test_search_on_the_default_benchmark_reports_against_every_seed(tmp_path):
    bundle = load_model()
    try:
        batch = default_benchmark(24, bundle=bundle)
    except DataError as err:
        pytest.skip(f"default benchmark material absent: {err}")
    out = tmp_path / "real"
    rc = main(["--threads", "2", "search", "--size", "24", "--metric", "energy_pointing_game", "--budget", "30",
               "--enumerate-size", "3", "--batch", "8", "--study", "real", "--out", str(out)])
    assert rc == 0
    board = json.loads((out / "leaderboard.json").read_text())
    seeds = {r["label"]: r for r in board["leaderboard"] if r["source"] == "seed"}
    # the gradient seeds of the space, and the seeds outside it within the cost cap
    assert {"gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "ssgradcam", "ssgradcampp"} < set(seeds)
    # at the GAP head dS/dA is constant over space: Grad-CAM, XGrad-CAM and HiResCAM give the same map
    held = {k: v["held_energy_pointing_game"] for k, v in seeds.items()}
    assert math.isclose(held["gradcam"], held["hirescam"], abs_tol=1e-4)
    assert math.isclose(held["gradcam"], held["xgradcam"], abs_tol=1e-4)
    verdict = board["verdict"]
    margin = verdict["margin"]["mean"]
    assert verdict["beats_every_seed"] == (margin > 0) and f"{margin:+.4f}" in verdict["message"]

    # the selected expression, recomputed on the held-out rows with the public API
    _, held_batch = split(batch, 0.25, 0)
    best = (out / "best.txt").read_text().strip()
    maps = CAM(best, bundle.model, "head")(held_batch.x, held_batch.labels).detach()
    assert torch.isfinite(maps).all()
    v = get_metric("energy_pointing_game")(maps, held_batch)
    assert math.isclose(float(v[~v.isnan()].mean()), board["leaderboard"][0]["held_energy_pointing_game"], abs_tol=2e-3)
    assert (out / "report.html").stat().st_size > 10_000
