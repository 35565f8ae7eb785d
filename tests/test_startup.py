"""Start-up and help: commands that need no model load neither torch nor sympy, ``check`` loads
sympy only, every option's help shows its default, and ``sycam metrics`` describes every metric
from one source (the registry, through the generated torch-free catalogue)."""
import argparse
import json
import math
import subprocess
import sys

import pytest

from sycam.cli import main, parser
from sycam.grammar.ast import Num
from sycam.metrics.catalogue import DATA_FILE, describe, generate, names

HEAVY = ("torch", "torchvision", "sympy", "optuna", "matplotlib", "scipy", "skimage")


def modules_after(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; which heavy modules did it import, and what did it print?"""
    script = ("import sys, json, contextlib, io\nout = io.StringIO()\n"
              "with contextlib.redirect_stdout(out):\n" + "".join(f"    {line}\n" for line in code.splitlines()) +
              f"print(json.dumps({{'heavy': [m for m in {HEAVY!r} if m in sys.modules], 'out': out.getvalue()}}))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def _helps(argv: list[str]) -> str:
    return "\n".join(f"try:\n    main({a!r})\nexcept SystemExit:\n    pass" for a in argv)


def _subcommands(p: argparse.ArgumentParser, path=()):
    """(argv prefix, parser) of every sub-command, nested ones (``data fetch``) included."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield [*path, name], sub
                yield from _subcommands(sub, [*path, name])


COMMANDS = [argv for argv, _ in _subcommands(parser())]
PARSERS = [[], *COMMANDS]                      # [] = sycam itself


def test_help_version_seeds_and_metrics_load_neither_torch_nor_sympy():
    argv = [["--help"], ["--version"], *[[*c, "--help"] for c in COMMANDS], ["seeds"], ["metrics"],
            ["metrics", "pointing_game"]]
    got = modules_after("from sycam.cli import main\n" + _helps(argv))
    assert got["heavy"] == []
    assert "sycam 0.1.0" in got["out"] and "gradcampp" in got["out"] and "tolerance=15" in got["out"]


def test_import_sycam_is_lazy_and_check_loads_sympy_but_not_torch():
    got = modules_after("import sycam, sycam.cli, sycam.metrics\nsycam.metrics.describe('deletion')")
    assert got["heavy"] == []
    got = modules_after("from sycam.cli import main\nassert main(['check', 'gradcampp']) == 0\n"
                        "assert main(['check', 'relu(sum(mean(G, hw) * A, k))']) == 0\n"
                        "assert main(['check', 'relu(sum(A * log(2) ^ 3, k))']) == 0\n"
                        "assert main(['check', 'relu(sum(A / (1 - 1), k))']) != 0")
    assert got["heavy"] == ["sympy"] and "simplified" in got["out"]     # constants fold without torch


def test_public_names_resolve_lazily():
    import sycam
    from sycam.api import CAM
    from sycam.data.images import read_image
    from sycam.methods import SEEDS
    from sycam.models import load_model
    from sycam.report.overlay import overlay

    assert (sycam.CAM, sycam.SEEDS, sycam.load_model, sycam.read_image, sycam.overlay) == \
        (CAM, SEEDS, load_model, read_image, overlay)
    assert {"CAM", "SEEDS", "overlay", "load_model", "read_image", "explain", "SycamError"} <= set(sycam.__all__)
    assert all(hasattr(sycam, name) for name in sycam.__all__)
    assert set(sycam.__all__) <= set(dir(sycam))
    with pytest.raises(AttributeError):
        sycam.no_such_name  # noqa: B018 - the attribute read itself is what must raise


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    from sycam import __version__
    assert capsys.readouterr().out.strip() == f"sycam {__version__}"


@pytest.mark.parametrize("argv", PARSERS, ids=lambda a: " ".join(["sycam", *a]))
def test_every_option_has_help_and_shows_its_default(argv, capsys):
    sub = dict([((), parser()), *((tuple(a), p) for a, p in _subcommands(parser()))])[tuple(argv)]
    assert sub.description, f"sycam {' '.join(argv)} has no description"
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    text = "".join(capsys.readouterr().out.split())        # help lines are wrapped (also at hyphens)
    for action in sub._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        assert action.help, f"sycam {' '.join(argv)}: {action.dest} has no help"
        shown = action.option_strings or action.nargs in ("?", "*")
        if shown and action.default not in (None, False, [], argparse.SUPPRESS):
            needle = "".join(f"(default: {action.default})".split())
            assert needle in text, f"sycam {' '.join(argv)}: {action.dest}"


def test_default_helps(capsys):
    for argv, needle in ((["eval"], "(default: 64)"), (["eval"], "(default: results/eval)"),
                         (["explain"], "(default: 8)"), (["search"], "(default: energy_pointing_game)"),
                         (["layers"], "(default: efficientnet-lite0)")):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        assert needle in " ".join(capsys.readouterr().out.split())


def test_unknown_layer_suggests_the_real_syntax():
    import torch

    from sycam.errors import SycamError
    from sycam.evidence.layers import resolve_layers

    with pytest.raises(SycamError, match="sycam layers --model MODEL"):
        resolve_layers(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), ["layer9"])


def test_metrics_command_prints_definitions_parameters_and_costs(capsys):
    assert main(["metrics"]) == 0
    text = capsys.readouterr().out
    for name in names():
        d = describe(name)
        assert name in text and " ".join(d["definition"].split()[:6]) in " ".join(text.split())
    assert "tolerance=15, region=auto" in text and "fixed:      order=morf" in text
    assert "19 forwards + 2 shared" in text
    assert main(["metrics", "pointin"]) == 2
    assert "pointing_game" in capsys.readouterr().err


def test_catalogue_is_generated_from_the_registry():
    """catalogue_data.py is what the registry says now (else: python -m sycam.metrics.catalogue)."""
    assert DATA_FILE.read_text() == generate(), "run: python -m sycam.metrics.catalogue"


def test_described_parameters_build_the_metric():
    from sycam.metrics import get_metric
    from sycam.metrics.registry import BUILTIN

    assert set(names()) >= BUILTIN
    for name in sorted(BUILTIN):
        d = describe(name)
        assert set(d) >= {"name", "definition", "direction", "params"} and d["direction"] in ("higher", "lower")
        assert d["definition"] and "\n" not in d["definition"]
        scalars = {k: v for k, v in d["params"].items() if isinstance(v, (bool, int, float, str))}
        m = get_metric(name, **scalars)                 # the shown defaults are accepted values
        assert m.direction.value == d["direction"]


def test_registered_metrics_are_described_live():
    from sycam.metrics import define_metric

    define_metric("startup_test_metric", direction="lower", register=True)(lambda maps, batch: maps.mean((-1, -2)))
    d = describe("startup_test_metric")
    assert d["direction"] == "lower" and d["params"] == {} and "startup_test_metric" in names()


def test_parser_choices_match_the_engine():
    from sycam import evaluation
    from sycam.commands import eval as eval_command
    from sycam.commands import search
    from sycam.search import driver

    assert tuple(eval_command.BASELINES) == tuple(evaluation.BASELINES)
    assert tuple(search.STRATEGIES) == tuple(driver.STRATEGIES)
    assert tuple(search.SAMPLERS) == tuple(driver.SAMPLERS)


@pytest.mark.parametrize("text, folded", [
    ("relu(sum(mean(G, hw) * A, k))", {}),
    ("relu(sum(A * (2 + 3), k))", {"2 + 3": 5.0}),
    ("relu(sum(A * log(2) / (1 - 1 / 2), k))", {"log(2)": math.log(2), "1 / 2": 0.5, "1 - 1 / 2": 0.5}),
    ("relu(sum(A * 2^-3, k))", {"2^-3": 0.125}),
])
def test_constants_fold_without_torch(text, folded):
    """``sycam check`` folds constants with the compiler's own rule (the operator records on floats)."""
    from sycam.grammar import parse, to_text
    from sycam.grammar.checker import fold_constants

    got = {to_text(n): v for n, v in fold_constants(parse(text)).items() if not isinstance(n, Num)}
    assert got == pytest.approx(folded)
