"""MetaCAM: consensus of top-k % pixels, ROAD-adaptive thresholding, Cumulative Residual Effect."""
import pytest
import torch
from tiny import example_input, spatial_model
from torch import nn

from sycam.api import CAM, explain_many, make_cam
from sycam.data.batch import Batch
from sycam.errors import SycamError
from sycam.evaluation import evaluate, resolve_metrics
from sycam.kernels.postprocess import minmax
from sycam.methods import get_meta
from sycam.methods.metacam import (
    MetaCAM,
    _adaptive,
    adaptive_threshold,
    consensus,
    cumulative_residual_effect,
    ensemble_pairs,
    threshold,
)
from sycam.metrics import define_metric, get_metric

# three components, one image, 2x2 pixels
L1 = [[1.0, 0.8], [0.2, 0.0]]
L2 = [[0.9, 0.1], [0.7, 0.3]]
L3 = [[0.0, 0.6], [0.5, 1.0]]
MAPS = torch.tensor([[L1], [L2], [L3]])          # (n=3, b=1, 2, 2)


def close(actual, expected, atol=1e-5):
    expected = torch.as_tensor(expected, dtype=actual.dtype)
    assert torch.allclose(actual, expected, atol=atol), actual


def test_consensus_by_hand():
    # k = 50 %: T1 = {(0,0), (0,1)}, T2 = {(0,0), (1,0)}, T3 = {(1,1), (0,1)}
    raw, votes = consensus(MAPS, 0.5)
    close(votes[0].float(), [[2, 2], [1, 1]])
    close(raw[0], [[(1.0 + 0.9) / 3, (0.8 + 0.6) / 3], [0.7 / 3, 1.0 / 3]])
    raw2, _ = consensus(MAPS, 0.5, min_votes=2)                  # only where two components agree
    close(raw2[0], [[1.9 / 3, 1.4 / 3], [0.0, 0.0]])
    assert not consensus(MAPS, 0.5, min_votes=3)[0].any()        # no pixel in all three top halves
    # k = 100 %: every pixel, except those a component gives 0 (L1 at (1,1), L3 at (0,0))
    close(consensus(MAPS, 1.0)[1][0].float(), [[2, 3], [3, 2]])
    # a component whose map is invalid for the image gives no votes
    close(consensus(MAPS, 0.5, valid=torch.tensor([[True], [False], [True]]))[1][0].float(), [[1, 2], [0, 1]])


def test_threshold_keeps_exact_top_count():
    close(threshold(torch.tensor([[1.0, 0.8, 0.5, 0.2]]).view(1, 2, 2), 0.5), [[[1.0, 0.8], [0.0, 0.0]]])
    with pytest.raises(SycamError, match="fraction"):
        threshold(MAPS, 20)


def _inside_minus_outside(regions, direction="higher"):
    """A metric: sum of the map inside the region minus outside (negated for direction='lower')."""
    sign = 1.0 if direction == "higher" else -1.0

    @define_metric("inside_minus_outside", direction=direction)
    def metric(maps, batch):
        r = regions.to(maps.dtype)
        return sign * ((maps * r).sum((-2, -1)) - (maps * (1 - r)).sum((-2, -1)))
    return metric


@pytest.mark.parametrize("direction", ["higher", "lower"])
def test_adaptive_threshold_picks_the_best_k_per_image_by_hand(direction):
    # one map (values 1, .8, .5, .2); the grid keeps 1, 2, 3 or 4 pixels; after min-max the candidates
    # are [1,0,0,0], [1,.8,0,0], [1,.8,.5,0], [1,.75,.375,0]. Image 0's region is the first two pixels:
    # scores 1, 1.8, 1.3, 1.375 -> k = 0.5; image 1's region the first three: 1, 1.8, 2.3, 2.125 -> k = 0.75
    L = torch.tensor([1.0, 0.8, 0.5, 0.2]).view(1, 2, 2).expand(2, 2, 2)
    regions = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]]).view(2, 2, 2)
    x = torch.zeros(2, 3, 2, 2)
    maps, ks, scores = adaptive_threshold(L, x, torch.tensor([0, 0]), lambda z: torch.zeros(len(z), 2),
                                          grid=(0.25, 0.5, 0.75, 1.0), metric=_inside_minus_outside(regions, direction))
    close(ks, [0.5, 0.75])
    close(scores[:, 0], [1.0, 1.8, 1.3, 1.375])                 # higher is better, whatever the direction
    close(maps, [[[1.0, 0.8], [0.0, 0.0]], [[1.0, 0.8], [0.5, 0.0]]])


def test_adaptive_metacam_consensus_by_hand():
    # the three maps above, region = top row: k = .25 -> one pixel per component: (0,0) twice, (1,1) once:
    # mean [[1.9/3, 0], [0, 1/3]] -> minmax [[1, 0], [0, 1/1.9]] -> score 1 - 1/1.9 = 0.474;
    # k = .5 -> minmax of [[1.9, 1.4], [.7, 1]] / 3 -> [[1, .583], [0, .25]] -> 1.583 - .25 = 1.333 (best)
    regions = torch.tensor([[1, 1], [0, 0]]).view(1, 2, 2)
    final, ks, scores, votes = _adaptive(MAPS, torch.zeros(1, 3, 2, 2), torch.tensor([0]),
                                         lambda z: torch.zeros(len(z), 2), (0.25, 0.5), 1,
                                         _inside_minus_outside(regions), None, 8)
    close(scores[:, 0], [1 - 1 / 1.9, 1 + (0.7 / 1.2) - 0.25], atol=1e-4)
    close(ks, [0.5])
    close(final[0], [[1.0, 0.7 / 1.2], [0.0, 0.25]], atol=1e-5)
    close(votes[0].float(), [[2, 2], [1, 1]])


# ------------------------------------------------------------------- ROAD on a toy model
S = 16


def _toy_map():
    """Distinct values decreasing from the centre (no ties)."""
    yy, xx = torch.meshgrid(torch.arange(S) - 7.3, torch.arange(S) - 7.6, indexing="ij")
    return 1 - (yy ** 2 + xx ** 2).sqrt() / 12


class _RegionModel(nn.Module):
    """logit_0 = 16 (mean of channel 0 over region R - 0.75), logit_1 = 0: the score is a known
    function of the pixels in R only."""

    def __init__(self, region):
        super().__init__()
        self.register_buffer("r", region.float())

    def forward(self, x):
        m = (x[:, 0] * self.r).sum((1, 2)) / self.r.sum()
        return torch.stack([16 * (m - 0.75), torch.zeros_like(m)], 1)


@pytest.mark.parametrize("ring, best", [(False, 0.1), (True, 0.25)])
def test_road_selection_picks_the_k_that_keeps_the_evidence(ring, best):
    # the image is 1 on R and 0.75 elsewhere (p(class 0) = 0.98; 0.5 once R looks like the background).
    # R = the map's top 10 %: k = 10 % removes everything for MoRF r >= 10 % (ROAD's ties at 0), while
    # k = 25 % only removes R (imputed from the 0.75 background) at r = 10, 20 %: k = 10 % is better.
    # R = the ring between the top 10 % and 25 %: with k = 10 % LeRF removes R (imputed from the 0.75
    # centre: p drops to ~0.5 at every r); k = 25 % keeps R for LeRF: k = 25 % is better.
    from sycam.metrics.base import top_fraction_mask

    L = _toy_map()
    top10, top25 = top_fraction_mask(L, 0.1), top_fraction_mask(L, 0.25)
    region = top25 & ~top10 if ring else top10
    model = _RegionModel(region).eval()
    x = torch.where(region, 1.0, 0.75).expand(1, 3, S, S).clone()
    grid = (0.1, 0.25)
    maps, ks, scores = adaptive_threshold(L[None], x, torch.tensor([0]), model, grid=grid)
    assert float(ks[0]) == pytest.approx(best)
    road = get_metric("road_combined")
    batch = Batch(x=x, images=x, labels=torch.tensor([0]))
    direct = torch.stack([road(minmax(threshold(L[None], k)), batch, model_fn=model) for k in grid])
    assert torch.allclose(scores, direct, atol=1e-6)           # the selection scores are ROAD itself
    assert float(direct.max() - direct.min()) > 0.02           # a clear choice, not a tie
    assert torch.allclose(maps, minmax(threshold(L[None], best)))


# ------------------------------------------------------------------- Cumulative Residual Effect
def _table_score(values):
    def score(ensembles):
        return torch.tensor([values(e) for e in ensembles], dtype=torch.float64)
    return score


def test_cre_of_additive_scores_is_each_value_times_its_pairs():
    v = [1.0, 2.0, -0.5]
    t = cumulative_residual_effect(["a", "b", "c"], _table_score(lambda e: sum(v[i] for i in e)))
    close(t.pairs.float(), [3, 3, 3])                           # S in {x}, {y}, {x, y}
    close(t.cre, [3.0, 6.0, -1.5])
    close(t.mean, v)
    close(t.improved, [1.0, 1.0, 0.0])
    close(t.alone, v)
    assert t.exhaustive and len(t.ensembles) == 7 and t.best == ("a", "b")
    assert [r["component"] for r in t.rows()] == ["b", "a", "c"]
    assert "Cumulative Residual Effect" in str(t)


def test_cre_of_max_scores_by_hand():
    # s(E) = max of the members' values (1, 2, 0.5):
    # a: {b} 2-2, {c} 1-.5, {b,c} 2-2 -> 0.5;  b: {a} 2-1, {c} 2-.5, {a,c} 2-1 -> 3.5;  c: 0 + 0 + 0
    v = [1.0, 2.0, 0.5]
    t = cumulative_residual_effect(["a", "b", "c"], _table_score(lambda e: max(v[i] for i in e)))
    close(t.cre, [0.5, 3.5, 0.0])
    close(t.improved, [1 / 3, 1.0, 0.0])


def test_cre_samples_ensembles_for_many_components():
    n = 12
    v = torch.linspace(-1, 1, n).tolist()
    pairs, exhaustive = ensemble_pairs(n, samples=20, seed=3)
    assert not exhaustive and pairs and all(c not in s and 0 < len(s) < n for c, s in pairs)
    t = cumulative_residual_effect([f"m{i}" for i in range(n)], _table_score(lambda e: sum(v[i] for i in e)),
                                   samples=20, seed=3)
    assert not t.exhaustive and int(t.pairs.sum()) == len(pairs)
    close(t.mean[t.pairs > 0], torch.tensor(v, dtype=torch.float64)[t.pairs > 0])   # additive: mean = own value
    again = cumulative_residual_effect([f"m{i}" for i in range(n)], _table_score(lambda e: sum(v[i] for i in e)),
                                       samples=20, seed=3)
    assert torch.equal(t.cre, again.cre)                         # seeded


# ------------------------------------------------------------------- the method end to end
class _ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                                      nn.ReLU())
        self.fc = nn.Linear(8 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def test_metacam_maps_are_the_consensus_of_its_components_sharing_one_capture(monkeypatch):
    import sycam.methods.cam as cam_module

    calls = []
    real = cam_module.capture
    monkeypatch.setattr(cam_module, "capture", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = spatial_model()
    mc = MetaCAM(["gradcam", "hirescam", "layercam"], model, "feat", k=0.5)
    exp = mc.explain(example_input(), [0])
    assert len(calls) == 1                                       # one capture for the three gradient seeds
    comps = torch.stack([CAM(n, model, "feat")(example_input(), [0]) for n in ("gradcam", "hirescam", "layercam")])
    assert torch.allclose(exp.maps, minmax(consensus(comps, 0.5)[0]))
    assert torch.allclose(exp.components["hirescam"], comps[1]) and exp.k.tolist() == [0.5]
    assert torch.allclose(exp.logits, model(example_input()))
    assert "metacam(gradcam, hirescam, layercam; k=0.5" in mc.text


def test_metacam_adaptive_and_cre_with_road_on_a_tiny_model():
    torch.manual_seed(0)
    model = _ConvNet().eval()
    x = torch.randn(2, 3, 8, 8)
    fractions = {"fractions": (0.3, 0.7)}                       # ROAD at two removed shares: a fast test
    mc = MetaCAM(["gradcam", "layercam", "eigencam"], model, "features", adaptive=True, grid=(0.2, 0.5),
                 metric_params=fractions)
    exp = mc.explain(x)
    labels = model(x).argmax(1)
    assert torch.equal(exp.labels, labels) and exp.grid_scores.shape == (2, 2)
    comps = torch.stack(list(exp.components.values()))
    road = get_metric("road_combined", **fractions)
    batch = Batch(x=x, images=x, labels=labels)
    direct = torch.stack([road(minmax(consensus(comps, k)[0]), batch, model_fn=model) for k in (0.2, 0.5)])
    assert torch.allclose(exp.grid_scores, direct, atol=1e-6)
    assert torch.equal(exp.k, torch.tensor([0.2, 0.5])[direct.argmax(0)])
    # CRE: every ensemble scored as the method scores itself (best k per image, mean over images)
    table = mc.cre(x)
    assert table.exhaustive and len(table.ensembles) == 7 and table.metric == "road_combined"
    sub = comps[[0, 2]]
    want = torch.stack([road(minmax(consensus(sub, k)[0]), batch, model_fn=model) for k in (0.2, 0.5)])
    assert table.ensembles[("gradcam", "eigencam")] == pytest.approx(float(want.amax(0).mean()), abs=1e-6)
    d = table.ensembles[("gradcam", "layercam", "eigencam")] - table.ensembles[("gradcam", "eigencam")]
    d += table.ensembles[("gradcam", "layercam")] - table.ensembles[("gradcam",)]
    d += table.ensembles[("layercam", "eigencam")] - table.ensembles[("eigencam",)]
    assert float(table.cre[1]) == pytest.approx(d, abs=1e-9)


def test_registry_api_and_evaluation():
    assert get_meta("MetaCAM").name == "metacam" and get_meta("adaptive-gradcam").name == "adaptivegradcam"
    model = _ConvNet().eval()
    mc = make_cam("metacam", model, "features", options={"max_batch": 8}, preprocess=object())
    assert isinstance(mc, MetaCAM) and mc.adaptive and list(mc.cams) == list(
        ("gradcam", "gradcampp", "xgradcam", "layercam", "eigencam", "relevancecam"))
    single = make_cam("adaptivegradcam", model, "features")
    assert list(single.cams) == ["gradcam"] and single.adaptive
    with pytest.raises(SycamError, match="meta-method"):
        CAM("metacam", model, "features")
    fixed = MetaCAM(["gradcam", "relevancecam"], model, "features", k=0.3)
    x = torch.randn(2, 3, 8, 8)
    out = explain_many({"metacam": fixed, "gradcam": CAM("gradcam", model, "features")}, x, torch.tensor([0, 2]))
    assert out["metacam"].maps.shape == (2, 8, 8) and bool(out["metacam"].valid.all())
    batch = Batch(x=x, images=torch.rand(2, 3, 8, 8), labels=torch.tensor([0, 2]))
    result = evaluate({"metacam": fixed}, resolve_metrics(["road_combined", "sanity_cascading"]), batch, model)
    assert result.scores["road_combined"]["metacam"].shape == (2,)
    other = fixed.with_model(_ConvNet().eval())
    assert other.text == fixed.text and other.model is not model


def test_bad_parameters_are_clear_errors():
    model = spatial_model()
    with pytest.raises(SycamError, match="min_votes"):
        MetaCAM(["gradcam", "hirescam"], model, "feat", min_votes=3)
    with pytest.raises(SycamError, match="fraction"):
        MetaCAM(["gradcam"], model, "feat", k=20)
    with pytest.raises(SycamError, match="twice"):
        MetaCAM(["gradcam", "gradcam"], model, "feat")
    with pytest.raises(SycamError, match="class"):
        MetaCAM(["gradcam"], model, "feat", adaptive=True)(example_input(), lambda logits: logits[:, 0])
    with pytest.raises(SycamError, match="2 components"):
        MetaCAM(["gradcam"], model, "feat").cre(example_input(), [0])


def test_seeds_command_lists_relevancecam_and_metacam(capsys, monkeypatch):
    from sycam.cli import main
    from sycam.commands.common import console

    monkeypatch.setattr(console, "width", 400)                  # no folded cells

    assert main(["seeds"]) == 0
    out = capsys.readouterr().out
    assert "Relevance-CAM" in out and "relevancecam" in out and "metacam" in out and "2307.16863" in out
    assert "adaptivegradcam" in out


def _png(tmp_path, name="img.png"):
    from PIL import Image

    p = tmp_path / name
    Image.fromarray((torch.rand(40, 48, 3) * 255).byte().numpy()).save(p)
    return str(p)


def test_cli_explain_and_eval_metacam_and_relevancecam(tmp_path, monkeypatch):
    import dataclasses
    import json

    from sycam.cli import main
    from sycam.methods import META_METHODS

    # the registered method with a one-value grid and ROAD at one removed share (the full defaults
    # cost ~10 x 19 forwards and 162 imputations per image at 224 px; see benchmarks/relevance_metacam.py)
    cheap = {**META_METHODS["metacam"].params, "grid": (0.3,), "metric_params": {"fractions": (0.5,)}}
    monkeypatch.setitem(META_METHODS, "metacam", dataclasses.replace(META_METHODS["metacam"], params=cheap))

    out = tmp_path / "out"
    assert main(["explain", "--model", "resnet18", "--layer", "layer4", "--method", "metacam", "--method",
                 "relevancecam", "--device", "cpu", "--out", str(out), _png(tmp_path)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["methods"]["metacam"].startswith("metacam(gradcam, gradcampp")
    assert [r["method"] for r in result["rows"]] == ["metacam", "relevancecam"] and all(
        r["valid"] for r in result["rows"])
    data = tmp_path / "data"
    data.mkdir()
    _png(data, "a.png")
    (data / "boxes.csv").write_text("file,label,x0,y0,x1,y1\na.png,tabby,5,5,30,30\n")
    assert main(["eval", "metacam", "--model", "resnet18", "--layer", "layer4", "--data", str(data), "--device",
                 "cpu", "--metric", "pointing_game", "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "results.json").read_text())["summary"]
    assert summary[0]["method"] == "metacam" and 0 <= summary[0]["pointing_game"] <= 1
