"""The dense and embedding targets and the smoothing switches on the command line (issue 12, items 3
and 4): ``sycam explain --segment / --similar-to / --eigen-smooth / --aug-smooth``, torchvision's
segmentation models in ``sycam.load_model``. Small stand-in models keep the wiring tests fast; the
real FCN / DeepLabV3 runs are marked slow."""
import json
import warnings

import pytest
import torch
from PIL import Image
from torch import nn

from sycam.cli import main
from sycam.commands import explain as explain_command
from sycam.data.images import read_image
from sycam.models import ModelBundle, Preprocess, RandomWeightsWarning, load_model, segmentation_names

CLASSES = ["background", "cat", "dog"]


class TinySegmenter(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(6, 3, 1)

    def forward(self, x):
        return {"out": self.classifier(self.features(x))}


class TinyEmbedder(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(5, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


PRE = Preprocess(size=32, resize=36)


@pytest.fixture
def bundles(monkeypatch):
    """``--model seg`` / ``--model emb`` load the tiny models above."""
    made = {}

    def fake(args):
        model = TinySegmenter() if args.model == "seg" else TinyEmbedder()
        made[args.model] = ModelBundle(args.model, model.eval(), PRE, "features", CLASSES, random_weights=True)
        return made[args.model]

    monkeypatch.setattr(explain_command, "load_bundle", fake)
    return made


@pytest.fixture
def picture(tmp_path):
    arr = (torch.rand(40, 48, 3, generator=torch.Generator().manual_seed(3)) * 255).byte().numpy()
    Image.fromarray(arr).save(tmp_path / "pic.png")
    mask = torch.zeros(40, 48, dtype=torch.uint8)
    mask[10:30, 5:25] = 255
    Image.fromarray(mask.numpy()).save(tmp_path / "mask.png")
    return tmp_path / "pic.png", tmp_path / "mask.png", mask > 0


def _run(tmp_path, model, *extra):
    out = tmp_path / "out"
    code = main(["explain", "--model", model, "--device", "cpu", "--out", str(out), *extra])
    result = json.loads((out / "results.json").read_text()) if code == 0 else None
    return code, result


def _segment_score(bundle, image_path, region, cls):
    """S computed here from the picture: the region in the model's frame (resized, cropped like the
    image), y_cls summed over it."""
    x = bundle.preprocess(read_image(image_path))[None]
    mask = bundle.preprocess.geometry(region[None].float())[0] >= 0.5
    with torch.no_grad():
        y = bundle.model(x)["out"][0, cls]
    return float((y * mask).sum()), int(mask.sum())


def test_segment_with_a_mask_file_a_box_and_the_predicted_pixels(tmp_path, bundles, picture):
    pic, mask_file, mask = picture
    code, result = _run(tmp_path, "seg", "--segment", f"cat:{mask_file}", str(pic))
    assert code == 0
    row = result["rows"][0]
    want, pixels = _segment_score(bundles["seg"], pic, mask, 1)
    assert 0 < pixels < 32 * 32
    assert row["explained"] == "cat over the mask mask.png" and row["score"] == pytest.approx(want, rel=1e-4)
    # the same region as a box X0,Y0,X1,Y1 in the picture's pixels: columns 5..24, rows 10..29
    code, result = _run(tmp_path, "seg", "--segment", "1:5,10,25,30", str(pic))
    assert code == 0 and result["rows"][0]["score"] == pytest.approx(want, rel=1e-4)
    code, result = _run(tmp_path, "seg", "--segment", "cat", "--method", "hirescam", str(pic))
    x = PRE(read_image(pic))[None]
    with torch.no_grad():
        y = bundles["seg"].model(x)["out"][0]
    assert code == 0
    assert result["rows"][0]["score"] == pytest.approx(float((y[1] * (y.argmax(0) == 1)).sum()), rel=1e-4)


@pytest.mark.parametrize("spec,message", [
    ("cat:nothing.png", "is not a mask file (nor a box X0,Y0,X1,Y1)"),
    ("cat:9,9,3,20", "needs X1 > X0 and Y1 > Y0"),
    ("cat:0,0,2,2", "leaves no pixel inside the model's crop of image(s) [0]"),
    ("tiger:1,1,20,20", "unknown class 'tiger'"),
])
def test_bad_segment_specs_are_clear_errors(tmp_path, bundles, picture, capsys, spec, message):
    code, _ = _run(tmp_path, "seg", "--segment", spec, str(picture[0]))
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_segmentation_model_without_segment_says_what_to_give(tmp_path, bundles, picture, capsys):
    assert _run(tmp_path, "seg", str(picture[0]))[0] == 2
    assert "--segment on the command line" in capsys.readouterr().err
    with pytest.raises(SystemExit):                 # one thing to explain at a time
        main(["explain", "--segment", "cat", "--target", "cat", str(picture[0])])


def test_similar_to_an_image_or_a_saved_embedding(tmp_path, bundles, picture, capsys):
    pic = picture[0]
    code, result = _run(tmp_path, "emb", "--similar-to", str(pic), str(pic))
    assert code == 0
    assert result["rows"][0]["explained"] == "similarity to pic.png" and result["rows"][0]["score"] == pytest.approx(1)
    model = bundles["emb"].model
    assert isinstance(model.fc, nn.Identity)            # the embedding is what the last linear layer read
    ref = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    torch.save(ref, tmp_path / "ref.pt")
    code, result = _run(tmp_path, "emb", "--similar-to", str(tmp_path / "ref.pt"), str(pic))
    with torch.no_grad():
        e = model(PRE(read_image(pic))[None])[0]
    cosine = float(torch.cosine_similarity(e, ref, 0))
    assert code == 0 and result["rows"][0]["score"] == pytest.approx(cosine, abs=1e-4)
    torch.save(torch.ones(3), tmp_path / "short.pt")
    assert _run(tmp_path, "emb", "--similar-to", str(tmp_path / "short.pt"), str(pic))[0] == 2
    assert "reference embedding has 3 values, the model's output embedding 5" in capsys.readouterr().err
    torch.save({"w": torch.ones(5)}, tmp_path / "dict.pt")
    assert _run(tmp_path, "emb", "--similar-to", str(tmp_path / "dict.pt"), str(pic))[0] == 2
    assert "not a (d,) embedding tensor" in capsys.readouterr().err


def test_smoothing_switches_on_the_command_line(tmp_path, bundles, picture):
    code, result = _run(tmp_path, "seg", "--segment", "cat", "--eigen-smooth", "--aug-smooth",
                        "--method", "gradcam", "--method", "layercam", str(picture[0]))
    assert code == 0
    assert result["methods"] == {"gradcam": "aug_smooth(relu(pc1(mean(G, hw) * A)); hflip x factors 1, 0.9, 1.1)",
                                 "layercam": "aug_smooth(relu(pc1(relu(G) * A)); hflip x factors 1, 0.9, 1.1)"}
    assert all(row["valid"] for row in result["rows"])


def test_torchvision_segmentation_models_build_offline():
    assert {"fcn_resnet50", "deeplabv3_resnet50", "lraspp_mobilenet_v3_large"} <= set(segmentation_names())
    with pytest.warns(RandomWeightsWarning):
        bundle = load_model("lraspp_mobilenet_v3_large")
    assert bundle.default_layer == "backbone.16" and bundle.classes[15] == "person" and bundle.random_weights
    with torch.no_grad():
        out = bundle.model(torch.zeros(1, 3, 64, 64))
    assert out["out"].shape == (1, 21, 64, 64)


@pytest.mark.slow
def test_fcn_resnet50_end_to_end_and_weights_with_the_auxiliary_head(tmp_path, picture, capsys):
    pic = picture[0]
    out = tmp_path / "fcn"
    code = main(["explain", "--model", "fcn_resnet50", "--device", "cpu", "--segment", "person:4,4,40,36",
                 "--method", "gradcam", "--out", str(out), str(pic)])
    assert code == 0, capsys.readouterr().out
    result = json.loads((out / "results.json").read_text())
    assert result["layers"] == ["backbone.layer4"] and result["rows"][0]["explained"].startswith("person over")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchvision
        trained = torchvision.models.get_model("deeplabv3_mobilenet_v3_large", weights=None, weights_backbone=None,
                                               num_classes=21, aux_loss=True)
    torch.save(trained.state_dict(), tmp_path / "dl.pth")
    bundle = load_model("deeplabv3_mobilenet_v3_large", tmp_path / "dl.pth")
    assert not bundle.random_weights and bundle.model.aux_classifier is not None
    zeros = torch.zeros(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(bundle.model(zeros)["out"], trained.eval()(zeros)["out"])
