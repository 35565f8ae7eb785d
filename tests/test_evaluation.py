"""sycam eval: methods x metrics x baselines on hand-made batches, and the command."""
import copy
import json

import pytest
import torch
from torch import nn

from sycam.api import CAM
from sycam.cli import main
from sycam.data.batch import Batch
from sycam.evaluation import baseline_maps, evaluate, resolve_metrics


class Spot(nn.Module):
    """Class c's logit is the mean of channel c of the feature map: Grad-CAM points at bright pixels."""

    def __init__(self):
        super().__init__()
        self.feat = nn.Identity()

    def forward(self, x):
        return self.feat(x).mean((2, 3))


def spot_batch():
    # two 3-channel 64x64 images; object of class 0 bright in channel 0 at the top-left,
    # a distractor of class 1 bright in channel 1 at the bottom-right (far beyond 15 px)
    x = torch.zeros(2, 3, 64, 64)
    x[:, 0, 2:10, 2:10] = 1.0
    x[:, 1, 54:62, 54:62] = 1.0
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[:, 2:10, 2:10] = True
    other = torch.zeros(2, 64, 64, dtype=torch.bool)
    other[:, 54:62, 54:62] = True
    boxes = [torch.tensor([[2.0, 2.0, 10.0, 10.0]])] * 2
    return Batch(x, x.clamp(0, 1), torch.tensor([0, 0]), masks, boxes, other, ["a", "b"])


def test_methods_and_baselines_are_scored_per_image():
    model = Spot().eval()
    batch = spot_batch()
    cams = {"hirescam": CAM("hirescam", model, "feat"), "inverse": CAM("relu(sum(-G * A, k))", model, "feat")}
    metrics = resolve_metrics(["pointing_game", "pointing_other", "energy_pointing_game"])
    result = evaluate(cams, metrics, batch, model, baselines=["center"], chunk=1)
    pg, other = result.scores["pointing_game"], result.scores["pointing_other"]
    # HiResCAM of class 0 lights up exactly the object: a hit, and not on the distractor
    assert pg["hirescam"].tolist() == [1.0, 1.0] and other["hirescam"].tolist() == [0.0, 0.0]
    # all its energy is inside the box
    assert torch.allclose(result.scores["energy_pointing_game"]["hirescam"], torch.ones(2))
    # the centre baseline peaks at (32, 32), more than 15 px from either object
    assert pg["center"].tolist() == [0.0, 0.0] and other["center"].tolist() == [0.0, 0.0]
    rows = {r["method"]: r for r in result.rows()}
    assert rows["hirescam"]["pointing_game"] == 1.0 and rows["hirescam"]["pointing_game_class_mean"] == 1.0
    assert 0 <= rows["hirescam"]["pointing_game_low"] <= rows["hirescam"]["pointing_game_high"] <= 1


def test_deletion_curves_are_recorded_and_ordered():
    model = Spot().eval()
    batch = spot_batch()
    cams = {"hirescam": CAM("hirescam", model, "feat")}
    result = evaluate(cams, resolve_metrics(["deletion"]), batch, model, baselines=["random"])
    curve = result.curves["deletion"]["hirescam"]
    assert curve.shape == result.fractions["deletion"].shape
    # deleting the object first destroys the class-0 probability faster than random deletion
    assert result.scores["deletion"]["hirescam"].mean() < result.scores["deletion"]["random"].mean()


def test_sanity_cascading_rebuilds_each_seed_with_its_own_target():
    """The randomised model is explained by the same method: Finer-CAM with its contrastive target (not
    Grad-CAM's logit), Score-CAM with the probability of the masked inputs (not the logit)."""
    from sycam.metrics.sanity import CascadingRandomisation, randomise_
    from sycam.metrics.similarity import spearman

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()
    x = torch.randn(2, 3, 12, 12)
    batch = Batch(x, x.clamp(0, 1), torch.tensor([1, 3]))
    cams = {name: CAM(name, model, "3") for name in ("finercam", "scorecam")}
    metric = CascadingRandomisation(stages=["6"])        # re-initialise the classifier only
    got = evaluate(cams, {"sanity_cascading": metric}, batch, model).scores["sanity_cascading"]
    randomised = copy.deepcopy(model)
    randomise_(randomised[6], metric.seed)
    with torch.no_grad():
        for name, wrong in (("finercam", "gradcam"), ("scorecam", "relu(sum(score * A, k))")):
            before = CAM(name, model, "3")(x, batch.labels)
            want = spearman(before, CAM(name, randomised, "3")(x, batch.labels))
            assert torch.allclose(got[name], want, atol=1e-5), (name, got[name], want)
            # what a rebuild that drops the seed's target scores instead
            assert not torch.allclose(spearman(before, CAM(wrong, randomised, "3")(x, batch.labels)), want, atol=1e-3)


def test_cam_with_model_keeps_everything_but_the_model():
    model = Spot().eval()
    cam = CAM("finercam", model, "feat", output=None, fuse="max", options={"ablation_value": -1.0}, gamma=0.5)
    other = Spot().eval()
    new = cam.with_model(other)
    assert new.model is other and cam.model is model and new.seed is cam.seed
    assert [r.name for r in new.layers] == ["feat"] and new.layers[0].module is other.feat
    assert (new.target_params, new.fusion, new.options) == (cam.target_params, cam.fusion, cam.options)
    assert new.target_params["gamma"] == 0.5


def test_baseline_maps():
    center = baseline_maps("center", 2, (9, 9), "cpu")
    assert center[0].flatten().argmax() == 40  # the middle pixel
    with pytest.raises(Exception, match="unknown baseline"):
        baseline_maps("median", 1, (4, 4), "cpu")


@pytest.mark.realmodel
def test_eval_command_on_the_bundled_photos(tmp_path, capsys):
    code = main(["eval", "gradcam", "relu(sum(G * A, k))", "--data", "fallback", "--metric", "pointing_game",
                 "--metric", "gini", "--baseline", "center", "--out", str(tmp_path)])
    assert code == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert {r["method"] for r in result["summary"]} == {"gradcam", "relu(sum(G * A, k))", "center"}
    assert len(result["per_image"]["pointing_game"]["gradcam"]) == 6
    assert (tmp_path / "grid.png").exists() and (tmp_path / "results.csv").exists()


def test_eval_rejects_unknown_metric_before_work(tmp_path, capsys):
    assert main(["eval", "gradcam", "--model", "resnet18", "--metric", "pointing_gme", "--out", str(tmp_path)]) == 2
    assert "pointing_game" in capsys.readouterr().err


def test_pointing_other_is_lower_is_better_without_touching_the_pointing_game():
    from sycam.metrics.base import Direction

    metrics = resolve_metrics(["pointing_game", "pointing_other"])
    assert metrics["pointing_other"].direction is Direction.LOWER      # a peak on the other object is a miss
    assert metrics["pointing_game"].direction is Direction.HIGHER
    assert resolve_metrics(["pointing_game"])["pointing_game"].direction is Direction.HIGHER


def test_intervals_of_scores_in_the_unit_range_stay_in_it():
    from sycam.evaluation import Evaluation

    # energy pointing game on 6 images: a t-interval would reach past 1
    epg = torch.tensor([1.0, 1.0, 0.98, 1.0, 0.35, 1.0])
    ev = Evaluation(methods=["m"], metrics={}, scores={"energy_pointing_game": {"m": epg}},
                    labels=torch.zeros(6, dtype=torch.long), names=[str(i) for i in range(6)])
    s = ev.summary("energy_pointing_game", "m")
    assert s.method == "bootstrap" and 0.0 <= float(s.low) <= float(s.high) <= 1.0
    assert float(s.mean) == pytest.approx(float(epg.mean()))
