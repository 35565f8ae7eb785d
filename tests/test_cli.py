"""The command line on a random-weight torchvision model (no pretrained weights needed)."""
import json

import pytest
import torch
from PIL import Image

from sycam.cli import main


@pytest.fixture
def images(tmp_path):
    paths = []
    for i in range(2):
        arr = (torch.rand(40, 48, 3) * 255).byte().numpy()
        p = tmp_path / f"img{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    return paths + [str(bad)]


def test_explain_writes_overlays_grid_and_tables(tmp_path, images, capsys):
    out = tmp_path / "out"
    code = main(["explain", "--model", "resnet18", "--layer", "layer3", "--method", "gradcam",
                 "--method", "relu(sum(G * A, k))", "--target", "tabby", "--device", "cpu", "--out", str(out),
                 *images])
    assert code == 0
    text = capsys.readouterr().out
    assert "broken.jpg" in text and "1 of 3 images skipped" in text
    result = json.loads((out / "results.json").read_text())
    assert len(result["rows"]) == 4 and {r["explained_class"] for r in result["rows"]} == {"tabby"}
    assert (out / "grid.png").stat().st_size > 0
    assert len(list((out / "overlays").glob("*.png"))) == 4
    assert (out / "results.csv").read_text().count("\n") == 5


def test_bad_input_is_a_clear_error_before_any_work(tmp_path, images, capsys):
    assert main(["explain", "--model", "resnet18", "--layer", "layer9", "--out", str(tmp_path), *images]) == 2
    assert "unknown layer 'layer9'; did you mean" in capsys.readouterr().err
    assert main(["explain", "--model", "resnet18", "--layer", "layer4", "--method", "relu(sum(G, hw)",
                 "--out", str(tmp_path / "x"), *images]) == 2
    err = capsys.readouterr().err
    assert "line 1, column 16" in err
    assert not (tmp_path / "x").exists()
    assert main(["explain", "--model", "resnett18", *images]) == 2
    assert "resnet18" in capsys.readouterr().err


def test_check_seeds_and_layers(capsys):
    assert main(["check", "xgradcam"]) == 0
    out = capsys.readouterr().out
    assert "heatmap" in out and r"\sum_{k}" in out and "1 backward" in out
    assert main(["check", "mean(G, hw)"]) == 0
    assert "channel weights" in capsys.readouterr().out
    assert main(["check", "relu(sum(mean(S, hw) * A, k))"]) == 2
    assert "mean(S, hw)" in capsys.readouterr().err
    assert main(["seeds"]) == 0
    assert "Grad-CAM++" in capsys.readouterr().out
    assert main(["layers", "--model", "resnet18", "--device", "cpu"]) == 0
    assert "layer4.1" in capsys.readouterr().out
