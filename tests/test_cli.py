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


def _no_traceback(captured):
    assert "Traceback" not in captured.out + captured.err
    return captured


def test_weights_that_are_not_a_state_dict_are_clear_errors(tmp_path, images, capsys):
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    torch.save({"epoch": 3}, tmp_path / "dict.pt")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    for name, message in [("passwd", "is not a PyTorch weights file"), ("list.pt", "holds a list, not a state dict"),
                          ("tensor.pt", "holds a Tensor, not a state dict"),
                          ("dict.pt", "entry 'epoch' is of type int, not a tensor"),
                          ("other.pt", "do not fit resnet18"), ("missing.pt", "not found")]:
        code = main(["explain", "--model", "resnet18", "--weights", str(tmp_path / name), "--device", "cpu",
                     "--out", str(tmp_path / "out"), images[0]])
        err = _no_traceback(capsys.readouterr()).err
        assert code == 2 and err.startswith("error: ") and message in err and name in err, err
    assert not (tmp_path / "out").exists()


def _header_only_png(path, w, h):
    from test_data_images import png_header

    return str(png_header(path, w, h))


@pytest.mark.filterwarnings("ignore::sycam.data.sample.DataWarning")
def test_images_are_read_before_the_model_is_loaded(tmp_path, monkeypatch, capsys):
    def no_model(args):
        raise AssertionError("the model was loaded before the images were checked")

    monkeypatch.setattr("sycam.commands.explain.load_bundle", no_model)
    monkeypatch.setattr("sycam.commands.eval.load_bundle", no_model)
    monkeypatch.setattr("sycam.commands.problem.load_bundle", no_model)      # search, ablate
    bad = [_header_only_png(tmp_path / "huge.png", 8000, 8000), _header_only_png(tmp_path / "thin.png", 1, 2000)]
    assert main(["explain", "--model", "resnet18", "--out", str(tmp_path / "x"), *bad]) == 2
    captured = _no_traceback(capsys.readouterr())
    assert "error: no readable images" in captured.err
    assert "over the budget of 50 megapixels" in captured.out and "aspect ratio of 2000:1" in captured.out

    (tmp_path / "boxes.csv").write_text("file,label,x0,y0,x1,y1\nhuge.png,1,0,0,5,5\nthin.png,1,0,0,1,5\n")
    for command in (["eval", "gradcam"], ["search", "--study", "s"], ["ablate", "gradcam"]):
        assert main([*command, "--model", "resnet18", "--data", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
        err = _no_traceback(capsys.readouterr()).err
        assert "error: " in err and "no usable annotated image" in err and "megapixels" in err, (command, err)
    assert not (tmp_path / "x").exists()


def test_overlay_files_are_unique_per_input_path_and_method(tmp_path, capsys):
    paths = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        arr = (torch.rand(40, 48, 3) * 255).byte().numpy()
        Image.fromarray(arr).save(tmp_path / folder / "photo.png")
        paths.append(str(tmp_path / folder / "photo.png"))
    methods = ["relu(sum(G * A, k))", "relu(sum(G + A, k))"]   # both were relu_sum_G___A__k__
    out = tmp_path / "out"
    code = main(["explain", "--model", "resnet18", "--layer", "layer3", "--device", "cpu", "--out", str(out),
                 "--method", methods[0], "--method", methods[1], *paths, paths[0]])
    _no_traceback(capsys.readouterr())
    assert code == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert sorted((r["image"], r["method"]) for r in rows) == sorted(
        (name, m) for name in ("a/photo", "b/photo") for m in methods)
    files = {r["overlay"] for r in rows}
    assert len(files) == 4 and {f"overlays/{p.name}" for p in (out / "overlays").iterdir()} == files
