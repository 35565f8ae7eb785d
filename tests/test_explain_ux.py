"""What a user meets first (issue 14): ``sycam explain``'s pictures, labels, warnings and progress, and
the public Python API (``sycam.overlay`` / ``load_model`` / ``read_image``, class names as targets,
numpy images, ``cam.last`` after the block). Random-weight resnet18 and tiny models: fast."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import sycam
from sycam.api import CAM, make_cam
from sycam.cli import main
from sycam.commands import explain as explain_command
from sycam.errors import SycamError
from sycam.models import Preprocess, RandomWeightsWarning, load_model
from sycam.report.overlay import OUTSIDE


def _save(path, h, w, seed):
    arr = (torch.rand(h, w, 3, generator=torch.Generator().manual_seed(seed)) * 255).byte().numpy()
    Image.fromarray(arr).save(path)
    return str(path), arr


@pytest.fixture
def two_images(tmp_path):
    """Two pictures of different sizes and aspect ratios."""
    return [_save(tmp_path / "wide.png", 40, 96, 1), _save(tmp_path / "tall.png", 72, 36, 2)]


def _explain(out, paths, *extra):
    return main(["explain", "--model", "resnet18", "--layer", "layer3", "--device", "cpu", "--out", str(out),
                 "--method", "gradcam", "--method", "relu(sum(G * A, k))", *extra, *paths])


@pytest.fixture
def target_run(tmp_path, two_images, monkeypatch, capsys):
    """One explain run with --target "Egyptian cat" (the grid's row titles recorded)."""
    import sycam.report.overlay as overlay_module

    titles = []
    real = overlay_module.save_grid

    def recording(path, images, maps, **kwargs):
        titles.extend(kwargs.get("row_titles", ()))
        return real(path, images, maps, **kwargs)

    monkeypatch.setattr(overlay_module, "save_grid", recording)
    torch.manual_seed(1)                 # the global seed differs from the second run's below
    out = tmp_path / "out"
    assert _explain(out, [p for p, _ in two_images], "--target", "Egyptian cat") == 0
    return out, json.loads((out / "results.json").read_text()), titles, capsys.readouterr().out


# ---------------------------------------------------------------------- explain
def test_every_label_names_the_explained_class_with_its_probability(target_run):
    out, result, titles, text = target_run
    rows = result["rows"]
    assert len(rows) == 4 and result["target"] == "Egyptian cat"
    assert {r["predicted"] for r in rows} != {"Egyptian cat"}       # the top-1 class is another one
    for r in rows:
        assert r["explained_class"] == "Egyptian cat"
        assert r["label"] == f"Egyptian cat {r['explained_probability']:.2f} · {r['method']}"
    assert len(titles) == 2 and all(": Egyptian cat " in t and "(top-1: " in t for t in titles)
    assert "explained class" in text and text.count("Egyptian cat") >= 2


def test_overlays_are_at_the_image_size_with_the_crop_outlined_and_a_colour_bar(target_run, two_images):
    out, result, _, _ = target_run
    sizes = {r["image"]: tuple(r["size"]) for r in result["inputs"]}
    assert sizes == {"wide": (96, 40), "tall": (36, 72)}
    for row in result["rows"]:
        png = np.asarray(Image.open(out / row["overlay"]).convert("RGB"))
        assert png.shape[:2] == sizes[row["image"]][::-1]
    # wide.png: the model saw its centre (resize to 256 on the short side, crop 224); the sides are dimmed
    top, left, height, width = Preprocess().crop_box((40, 96))
    assert [round(v, 2) for v in (top, left, height, width)] == next(
        r["model_crop"] for r in result["inputs"] if r["image"] == "wide")
    png = np.asarray(Image.open(out / "overlays/wide__gradcam.png").convert("RGB")).astype(float)
    image = two_images[0][1].astype(float)
    y = 30                                         # below the label, left of the crop
    assert left > 15 and np.abs(png[y, :8] - image[y, :8] * OUTSIDE).max() <= 1.5
    inside = png[y, int(left) + 4:int(left + width) - 4]
    assert np.abs(inside - image[y, int(left) + 4:int(left + width) - 4] * OUTSIDE).max() > 5   # coloured
    assert (png[y, round(left)] > 200).all()      # the white outline at the crop's left edge
    bar = png[int(0.2 * 40) + 1:int(0.8 * 40) - 1, 96 - 5]     # the inset colour bar: red on top, blue below
    assert bar[0, 0] > bar[0, 2] + 100 and bar[-1, 2] > bar[-1, 0] + 100
    assert (out / "grid.png").stat().st_size > 0


def test_random_weights_are_announced_and_the_same_each_run(target_run, tmp_path, two_images, capsys):
    _, first, _, text = target_run
    assert "warning:" in text and "random weights" in text and "--weights" in text
    assert first["random_weights"] is True
    torch.manual_seed(12345)
    assert _explain(tmp_path / "again", [p for p, _ in two_images], "--target", "Egyptian cat") == 0
    second = json.loads((tmp_path / "again/results.json").read_text())
    keys = ("image", "method", "predicted", "probability", "explained_probability")
    assert [[r[k] for k in keys] for r in first["rows"]] == [[r[k] for k in keys] for r in second["rows"]]
    for r in first["rows"]:
        a = np.asarray(Image.open(tmp_path / "out" / r["overlay"]))
        assert np.array_equal(a, np.asarray(Image.open(tmp_path / "again" / r["overlay"])))
    capsys.readouterr()
    # a weights file: no warning
    weights = tmp_path / "resnet18.pt"
    with pytest.warns(RandomWeightsWarning):
        torch.save(load_model("resnet18").model.state_dict(), weights)
    assert _explain(tmp_path / "weights", [two_images[0][0]], "--weights", str(weights)) == 0
    text = capsys.readouterr().out
    assert "random weights" not in text
    assert json.loads((tmp_path / "weights/results.json").read_text())["random_weights"] is False


def test_load_model_seeds_random_weights_without_touching_the_global_generator():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights"):
        a = load_model("resnet18")
    assert torch.equal(torch.rand(3), expected)
    with pytest.warns(RandomWeightsWarning):
        b = load_model("resnet18")
    assert a.random_weights and torch.equal(a.model.fc.weight, b.model.fc.weight)


class _Recorder:
    """Stands in for rich.progress.Progress and records its updates."""

    log: list = []

    def __init__(self, *columns, **kwargs):
        self.columns = columns
        _Recorder.columns = [type(c).__name__ for c in columns]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def add_task(self, description, total=None, **fields):
        _Recorder.log.append(("total", total))
        return 0

    def update(self, task, advance=None, description=None, **fields):
        _Recorder.log.append(("update", advance, description, fields.get("image")))


class _Conv(nn.Module):
    def __init__(self):
        super().__init__()
        self.feat = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.feat(x).mean((2, 3)))


def test_progress_moves_for_each_image_with_the_time_left(monkeypatch):
    monkeypatch.setattr(explain_command, "Progress", _Recorder)          # the name explain_images uses
    _Recorder.log = []
    model = _Conv().eval()
    x = torch.randn(3, 3, 16, 16)
    cams = {m: make_cam(m, model, "feat") for m in ("gradcam", "scorecam")}
    channels, _ = explain_command.probe(model, x[:1], ["feat"])
    costs = {m: explain_command.method_cost(cams[m], channels, 16) for m in cams}
    costs["scorecam"].per_image = True                     # 7 forwards: costly at a real layer's size
    maps, valid, logits = explain_command.explain_images(cams, x, None, 8, costs, ["a", "b", "c"])
    assert maps["scorecam"].shape == (3, 16, 16) and valid["gradcam"].all() and logits.shape == (3, 4)
    assert torch.allclose(maps["scorecam"][1], cams["scorecam"](x[1:2])[0], atol=1e-5)
    g, s = costs["gradcam"].forwards, costs["scorecam"].forwards
    assert _Recorder.log[0] == ("total", 3 * (g + s))
    steps = [(e[1], e[3]) for e in _Recorder.log if e[0] == "update" and e[1]]
    # the batch of cheap methods (one shared capture), then the costly one image by image
    assert steps == [(3 * g, 0), (s, 1), (s, 2), (s, 3)]
    assert "TimeRemainingColumn" in _Recorder.columns


def test_perturbation_families_are_costly_and_gradient_seeds_are_not(quiet):
    with pytest.warns(RandomWeightsWarning):
        bundle = load_model("resnet18")
    channels = {"layer4": 512}
    costly = set()
    for name in [*sycam.SEEDS, "metacam", "gpnncam", "adaptivegradcam"]:
        cost = explain_command.method_cost(make_cam(name, bundle.model, ["layer4"]), channels, 224)
        if cost.forwards >= explain_command.COSTLY:
            costly.add(name)
    assert costly == {"scorecam", "sscam", "iscam", "ablationcam", "cameras", "metacam", "gpnncam",
                      "adaptivegradcam"}
    score = explain_command.method_cost(make_cam("scorecam", bundle.model, ["layer4"]), channels, 224)
    assert score.forwards == 513 and "512 channels at layer4" in score.what
    costs = {"gradcam": explain_command.Cost(2, "1 forward + 1 backward"), "scorecam": score}
    lines = explain_command.cost_warnings(costs, 3, 0.05)
    assert len(lines) == 1 and "scorecam needs about 513 forwards per image" in lines[0]
    assert "~1,539 for 3 images: 77 s or more on this CPU (50 ms per forward)" in lines[0]


def test_cost_warning_comes_before_scorecam_runs_on_a_cpu(tmp_path, two_images, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(explain_command, "explain_images", interrupted)
    code = main(["explain", "--model", "resnet18", "--device", "cpu", "--method", "gradcam", "--method", "scorecam",
                 "--out", str(tmp_path / "out"), two_images[0][0], two_images[1][0]])
    assert code == 130
    text = capsys.readouterr().out
    assert "cost:" in text and "scorecam needs about 513 forwards per image" in text and "for 2 images" in text
    assert "gradcam needs" not in text


def test_overlay_names_are_unique_for_methods_that_differ_only_in_symbols():
    files = explain_command.overlay_files(["a/coffee", "b/coffee"], ["gradcam++", "gradcam__", "relu(sum(G, k))"])
    assert len(set(files.values())) == 6
    assert all(f.endswith(".png") and "/" not in f for f in files.values())


# ---------------------------------------------------------------------- Python API
def test_public_helpers():
    from sycam.data.images import read_image
    from sycam.report.overlay import overlay

    assert sycam.overlay is overlay and sycam.load_model is load_model and sycam.read_image is read_image
    for f in (sycam.overlay, sycam.load_model, sycam.read_image):
        assert f.__doc__ and len(f.__doc__) > 200


def test_read_image_and_overlay_on_numpy_and_tensors(tmp_path):
    path, arr = _save(tmp_path / "p.png", 50, 80, 3)
    image = sycam.read_image(path)
    assert image.shape == (3, 50, 80) and image.dtype == torch.float32
    assert torch.equal(image, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    heat = torch.linspace(0, 1, 7 * 7).reshape(7, 7)
    a = sycam.overlay(image, heat)                              # resized to the image
    b = sycam.overlay(arr, heat.numpy())                        # numpy HWC uint8
    assert a.shape == (3, 50, 80) and torch.allclose(a, b, atol=1e-6)
    box = Preprocess().crop_box(image)
    c = sycam.overlay(arr.astype(np.float32) / 255, heat, box=box, label="tabby 0.90", colorbar=True,
                      path=tmp_path / "o.png")
    assert c.shape == (3, 50, 80) and Image.open(tmp_path / "o.png").size == (80, 50)
    with pytest.raises(SycamError, match="image"):
        sycam.overlay(torch.rand(2, 3, 8, 8), heat)


@pytest.fixture(scope="module")
def bundle():
    with pytest.warns(RandomWeightsWarning):
        return load_model("resnet18")


def test_class_names_are_targets_when_the_cam_knows_them(bundle):
    x = torch.randn(2, 3, 64, 64)
    cam = CAM("gradcam", bundle)                 # the bundle's layer (layer4), classes and preprocessing
    assert [r.name for r in cam.layers] == ["layer4"]
    by_name = cam(x, targets=["tabby", 285])
    by_index = CAM("gradcam", bundle.model, "layer4")(x, targets=[281, 285])
    assert torch.allclose(by_name, by_index)
    assert torch.allclose(cam(x, targets="TABBY"), CAM("gradcam", bundle.model, "layer4")(x, targets=281))
    with pytest.raises(SycamError, match="did you mean 'tabby'"):
        cam(x, targets=["tabbby", 3])
    with pytest.raises(SycamError, match="load_model"):
        CAM("gradcam", bundle.model, "layer4")(x, targets=["tabby", 3])
    tiny = CAM("scorecam", _Conv().eval(), "feat", classes=["cat", "dog", "car", "sky"])
    assert tiny(torch.randn(1, 3, 16, 16), targets="dog").shape == (1, 16, 16)
    maps = sycam.api.explain_many({"g": cam, "x": CAM("xgradcam", bundle)}, x, ["tabby", "tabby"])
    assert torch.allclose(maps["g"].maps, cam(x, targets=281))


def test_numpy_images_are_accepted_or_refused_clearly(bundle):
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    picture = torch.from_numpy(hwc).permute(2, 0, 1).float() / 255
    expected = CAM("gradcam", bundle.model, "layer4")(bundle.preprocess.normalise(picture)[None])
    cam = CAM("gradcam", bundle)
    for arr in (hwc, hwc.astype(np.float32) / 255, np.ascontiguousarray(hwc.transpose(2, 0, 1)) / 255.0,
                hwc[None], Image.fromarray(hwc)):
        maps = cam(arr)
        assert maps.shape == (1, 48, 40) and torch.allclose(maps, expected, atol=1e-5)
    assert torch.allclose(cam(picture[None].numpy() * 1.0, targets=3)[0],
                          sycam.explain("gradcam", bundle, hwc, targets=3)[0], atol=1e-5)
    plain = CAM("gradcam", bundle.model, "layer4")           # no preprocessing known
    x = bundle.preprocess.normalise(picture)
    assert torch.allclose(plain(x.permute(1, 2, 0).numpy()), expected, atol=1e-5)   # float HWC = model input
    assert torch.allclose(plain(x), expected, atol=1e-5)                           # one (c, h, w) image
    with pytest.raises(SycamError, match="pixel values, not model inputs"):
        plain(hwc)
    with pytest.raises(SycamError, match=r"\(H, W, C\)"):
        cam(hwc[..., 0])
    with pytest.raises(SycamError, match="not list"):
        cam([[1, 2], [3, 4]])


def test_last_explanation_is_readable_after_the_block(bundle):
    x = torch.randn(1, 3, 64, 64)
    with CAM("gradcam", bundle) as cam:
        maps = cam(x, targets="tabby")
    assert cam.last is not None and torch.equal(cam.last.maps, maps)
    assert int(cam.last.scores.shape[0]) == 1 and cam.last.logits.shape == (1, 1000)
    assert not any(m._forward_hooks or m._backward_hooks for m in bundle.model.modules())   # hooks released
    with make_cam("metacam", bundle, k=0.5, adaptive=False) as meta:
        meta.explain(x, targets=["tabby"])
    assert meta.last is not None and meta.last.maps.shape == (1, 64, 64)
