"""Defects a review found: tracebacks reaching CLI users (bad --device, unwritable --out, any
OSError), class names meaning different classes in the CLI and the API, NaN tokens in eval's
results.json, significance claimed on a handful of images, and constants written three times."""
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from sycam.cli import main
from sycam.errors import SycamError, UnknownNameError

TOY = ["--model", "toy", "--data", "toy"]


def _no_traceback(captured):
    assert "Traceback" not in captured.err and "Traceback" not in captured.out, captured.err
    return captured


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


# ----------------------------------------------------------------------------- 1. no tracebacks
def test_a_bad_device_is_a_clear_error(tmp_path, capsys):
    assert main(["eval", "gradcam", *TOY, "--device", "bogus", "--out", str(tmp_path / "o")]) == 2
    err = _no_traceback(capsys.readouterr()).err
    assert "error: --device 'bogus' is not a torch device" in err
    assert not (tmp_path / "o").exists()


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["eval", "gradcam", *TOY, "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    err = _no_traceback(capsys.readouterr()).err
    assert "error: --device cuda: CUDA is not available" in err


def test_a_cuda_index_this_machine_lacks_is_a_clear_error(monkeypatch):
    from sycam.commands.common import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    args = SimpleNamespace(device="cuda:5")
    with pytest.raises(SycamError, match="has 2 CUDA device"):
        resolve_device(args)
    args = SimpleNamespace(device="cuda:1")
    resolve_device(args)
    assert args.device == "cuda:1"


def _unwritable(tmp_path) -> list[Path]:
    (tmp_path / "a_file").write_text("not a folder")
    out = [tmp_path / "a_file" / "out", tmp_path / "a_file"]
    if Path("/proc").is_dir():
        out.append(Path("/proc/sycam-out"))
    return out


@pytest.mark.parametrize("command", ["explain", "eval", "search", "ablate"])
def test_an_unwritable_out_folder_is_a_clear_error_before_the_model(tmp_path, monkeypatch, capsys, command):
    def no_model(*a, **k):
        raise AssertionError("the model was loaded before --out was checked")

    for where in ("explain.load_bundle", "eval.load_bundle", "eval._toy_bundle", "search.load_problem",
                  "ablate.load_problem"):
        monkeypatch.setattr(f"sycam.commands.{where}", no_model)
    picture = tmp_path / "p.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(picture)
    argv = {"explain": ["explain", "--model", "resnet18", "--device", "cpu", str(picture)],
            "eval": ["eval", "gradcam", *TOY, "--device", "cpu"],
            "search": ["search", "--study", "s", *TOY, "--device", "cpu"],
            "ablate": ["ablate", "gradcam", *TOY, "--device", "cpu"]}[command]
    for out in _unwritable(tmp_path):
        assert main([*argv, "--out", str(out)]) == 2, out
        err = _no_traceback(capsys.readouterr()).err
        assert f"error: cannot write to the output folder {out}" in err, err


def test_check_out_leaves_nothing_behind(tmp_path):
    from sycam.commands.common import check_out

    assert check_out(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()
    assert check_out(tmp_path) == tmp_path and list(tmp_path.iterdir()) == []


def test_any_os_error_is_an_error_line_not_a_traceback(monkeypatch, capsys):
    def broken(args):
        raise PermissionError(13, "Permission denied", "/somewhere/report.html")

    monkeypatch.setattr("sycam.commands.seeds.run", broken)
    assert main(["seeds"]) == 2
    err = _no_traceback(capsys.readouterr()).err
    assert err.startswith("error: ") and "/somewhere/report.html" in err


# ----------------------------------------------------------------------------- 2. one class resolver
@pytest.fixture(scope="module")
def imagenet():
    from sycam.models import imagenet_classes

    return imagenet_classes()


def test_cli_and_api_resolve_class_names_alike(imagenet):
    from sycam.api import class_index
    from sycam.commands.common import resolve_class
    from sycam.data.labels import AmbiguousNameError, resolve_label

    for spec in ("tabby", "Tabby", "tiger cat", "474", "crane", "crane bird"):
        assert resolve_class(spec, imagenet) == class_index(spec, imagenet) == resolve_label(spec, imagenet)
    assert imagenet[264].lower() == imagenet[474].lower() == "cardigan"      # the corgi and the sweater
    for resolve in (resolve_class, class_index, resolve_label):
        with pytest.raises(AmbiguousNameError) as err:
            resolve("cardigan", imagenet)
        assert isinstance(err.value, SycamError)
        assert str(err.value) == ("class name 'cardigan' names 2 classes: 264 (Cardigan), 474 (cardigan); "
                                  "give the index")
        assert err.value.candidates == [(264, "Cardigan"), (474, "cardigan")]
        with pytest.raises(UnknownNameError) as unknown:
            resolve("tabbby", imagenet)
        assert "tabby" in unknown.value.close
    assert resolve_class("264", imagenet) == 264 and resolve_class(None, imagenet) is None


def test_api_targets_refuse_an_ambiguous_name(imagenet):
    import sycam
    from sycam.api import resolve_targets

    with pytest.raises(SycamError, match="264 .* 474"):
        resolve_targets("cardigan", imagenet)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 1000)).eval()
    with sycam.CAM("gradcam", model, layers="1", classes=imagenet) as cam:
        with pytest.raises(SycamError, match="give the index"):
            cam(torch.rand(1, 3, 16, 16), targets="cardigan")
        assert cam(torch.rand(1, 3, 16, 16), targets=[474]).shape == (1, 16, 16)


def test_the_api_does_not_import_the_commands():
    code = "import sys, sycam.api; print([m for m in sys.modules if m.startswith('sycam.commands')])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


# ----------------------------------------------------------------------------- 3. strict JSON
def test_eval_results_json_is_strict_json(tmp_path, capsys):
    assert main(["eval", "gradcam", "gradcampp", *TOY, "--size", "6", "--device", "cpu", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "results.json").read_text()
    data = _strict_json(text)
    best = data["paired"]["pointing_game"]["best"]
    row = next(r for r in data["summary"] if r["method"] == best)
    assert row["pointing_game_vs_best_low"] is None       # NaN (no interval against itself) is null


def test_json_text_replaces_nan_and_inf_at_any_depth():
    from sycam.report.jsonfile import json_text

    value = {"a": float("nan"), "b": [1.0, float("inf"), {"c": np.float32("nan"), "d": np.float64(2.5)}],
             "e": (np.int64(3), -float("inf")), "f": Path("x"), "g": True}
    assert _strict_json(json_text(value)) == {"a": None, "b": [1.0, None, {"c": None, "d": 2.5}], "e": [3, None],
                                              "f": "x", "g": True}


# ----------------------------------------------------------------------------- 4. small-n statistics
def test_no_significance_on_too_few_images():
    from sycam.commands.eval import _judge, _verdict
    from sycam.search.heldout import TOO_FEW, against_best, paired_difference

    two = paired_difference(torch.tensor([1.0, 1.0]), torch.zeros(2))
    assert two.p == pytest.approx(0.5) and not two.significant()        # the bootstrap gave p = 0
    four = paired_difference(torch.tensor([1.0, 1, 1, 0]), torch.zeros(4))
    assert four.p == pytest.approx(4 / 16) and not four.significant() and not four.conclusive
    per = {"a": torch.tensor([1.0, 1, 1, 0]), "b": torch.zeros(4), "c": torch.zeros(4)}
    best, comps = against_best(per, higher_is_better=True)
    assert best == "a" and not any(c.significant() for c in comps)
    metric = SimpleNamespace(direction=SimpleNamespace(value="higher"))
    assert {_judge(c) for c in comps} == {TOO_FEW} == {"too few images to conclude (n < 10)"}
    rows = [{"method": "a", "m": 0.75, "m_low": 0.0, "m_high": 1.0, "m_images": 4}]
    assert TOO_FEW in _verdict("m", metric, rows, (best, {c.method: c for c in comps}))
    assert all(c.as_dict()["conclusive"] is False and c.as_dict()["significant"] is False for c in comps)


def test_sign_flip_p_is_exact_on_small_n_and_monte_carlo_beyond():
    from itertools import product

    from sycam.search.heldout import against_best, paired_difference, sign_flip_p

    d = torch.tensor([1.0, 2.0, -0.5, 0.25, 0.0])
    observed = abs(float(d.sum()))
    brute = sum(abs(sum(s * v for s, v in zip(signs, d.tolist()))) >= observed - 1e-12
                for signs in product((1, -1), repeat=5)) / 2 ** 5
    assert sign_flip_p(d) == pytest.approx(brute)
    assert sign_flip_p(torch.zeros(5)) == 1.0 and math.isnan(sign_flip_p(torch.tensor([float("nan")])))
    # ten images all better: exact p = 2 / 2**10, significant (and Holm keeps it so over 2 comparisons)
    ten = paired_difference(torch.ones(10), torch.zeros(10))
    assert ten.p == pytest.approx(2 / 1024) and ten.significant()
    best, comps = against_best({"a": torch.ones(10), "b": torch.zeros(10), "c": torch.zeros(10)}, True)
    assert all(c.significant() and c.p_holm == pytest.approx(2 * 2 / 1024) for c in comps)
    # 40 images: Monte-Carlo, never 0
    p = sign_flip_p(torch.ones(40), n_perm=2000)
    assert p == pytest.approx(1 / 2001)
    noise = torch.linspace(-1, 1, 40)
    assert sign_flip_p(noise, n_perm=2000) > 0.5


def test_search_comparisons_on_few_held_out_images_claim_nothing():
    from sycam.search.heldout import TOO_FEW, Entry, compare, verdict

    spec = SimpleNamespace(text="m")
    best = Entry("#1", None, "synth", per_image={"m": torch.ones(3)})
    seed = Entry("gradcam", None, "seed", per_image={"m": torch.zeros(3)})
    c = compare(best, seed, spec, "maximize")
    assert not c.better and not c.worse and c.verdict == TOO_FEW
    v = verdict(best, [seed], spec, "maximize")
    assert v.beats_every_seed and "significant against" not in v.message
    assert "too few images to conclude (3, fewer than 10): no significance claimed" in v.message
    many = compare(Entry("#1", None, "synth", per_image={"m": torch.ones(12)}),
                   Entry("gradcam", None, "seed", per_image={"m": torch.zeros(12)}), spec, "maximize")
    assert many.better and many.verdict == "better" and many.paired.p == pytest.approx(2 / 2 ** 12)


def test_the_search_verdict_is_holm_corrected_over_the_seeds():
    """On 10 images, better on 9 and worse on 1 against each of three seeds: each sign-flip p is
    22 / 1024 = 0.021 (|sum| >= 8 for 22 of the 2^10 sign patterns), significant alone; Holm over
    the three makes the smallest 3 x 0.021 = 0.064, so no seed is significantly beaten. Against
    seeds beaten on 10 of 10 (p = 2 / 1024) the same correction keeps every one significant."""
    from sycam.search.heldout import Entry, verdict

    spec = SimpleNamespace(text="m")
    best = Entry("#1", None, "synth", per_image={"m": torch.ones(10)})
    edge = torch.tensor([0.0] * 9 + [2.0])                   # best - seed: +1 on 9 images, -1 on one
    v = verdict(best, [Entry(f"s{i}", None, "seed", per_image={"m": edge}) for i in range(3)], spec, "maximize")
    assert v.beats_every_seed                                # every mean difference is positive ...
    for c in v.comparisons:
        assert c.paired.p == pytest.approx(22 / 1024) and c.paired.p_holm == pytest.approx(3 * 22 / 1024)
        assert not c.better and c.verdict == "not significant"
    assert "significant against 0 of 3 seeds" in v.message and "Holm" in v.message   # ... none significantly
    clear = verdict(best, [Entry(f"s{i}", None, "seed", per_image={"m": torch.zeros(10)}) for i in range(3)],
                    spec, "maximize")
    assert all(c.better for c in clear.comparisons) and "significant against 3 of 3 seeds" in clear.message


# ----------------------------------------------------------------------------- 5. constants once
def test_default_model_is_written_once():
    import sycam.defaults as defaults
    import sycam.models as models
    from sycam.cli import parser
    from sycam.report import header

    assert models.DEFAULT_MODEL is defaults.DEFAULT_MODEL and header.DEFAULT_MODEL is defaults.DEFAULT_MODEL
    assert header.DEFAULT_WEIGHTS_PACKAGE is defaults.DEFAULT_WEIGHTS_PACKAGE
    explain = parser().parse_args(["explain", "x.png"])
    assert explain.model == defaults.DEFAULT_MODEL
    root = Path(models.__file__).parent
    for path in (root / "report" / "header.py", root / "commands" / "common.py"):
        text = path.read_text()
        assert defaults.DEFAULT_MODEL not in text and defaults.DEFAULT_WEIGHTS_PACKAGE not in text, path
    assert "DEFAULT_MODEL =" not in (root / "models.py").read_text()
    code = "import sys, sycam.defaults, sycam.report.header; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_metric_info_handles_unknown_names_only(monkeypatch):
    import sycam.metrics
    from sycam.report.header import metric_info, metric_text

    assert metric_info("deletion")["direction"] == "lower" and metric_info("deletion:steps=8")["definition"]
    assert metric_info("no_such_metric") == {"name": "no_such_metric", "definition": "", "direction": ""}
    assert metric_text("no_such_metric") == "no_such_metric"

    def broken(name):
        raise RuntimeError("a bug in describe")

    monkeypatch.setattr(sycam.metrics, "describe", broken, raising=False)
    with pytest.raises(RuntimeError, match="a bug in describe"):      # a bug is not swallowed
        metric_info("deletion")


def test_out_check_tolerates_a_folder_made_meanwhile(tmp_path, monkeypatch):
    """Two workers of one study start together: the folder may appear between the look and the mkdir."""
    from pathlib import Path

    from sycam.commands.common import check_out

    target = tmp_path / "results" / "study"
    real_mkdir = Path.mkdir

    def racing_mkdir(self, *args, **kwargs):
        real_mkdir(self, *args, **kwargs) if not self.exists() else None   # the other worker
        raise FileExistsError(17, "File exists", str(self))

    monkeypatch.setattr(Path, "mkdir", racing_mkdir)
    assert check_out(target) == target
