"""``sycam search`` and ``sycam ablate`` end to end on the toy problem: errors before work, held-out report."""
import json
import math
from html import unescape

import optuna
import pytest
import torch

from sycam.api import CAM
from sycam.cli import main
from sycam.data import split
from sycam.grammar import parse
from sycam.metrics import get_metric
from sycam.search.ledger import info, is_evaluation
from sycam.search.storage import open_store
from sycam.search.toy import toy_problem

TOY = ["--model", "toy", "--data", "toy", "--size", "24"]


def _no_nan(token: str):
    raise AssertionError(f"{token} is not JSON")


def mean_on_method(method, model, layer, b):
    from sycam.methods.build import explain

    v = get_metric("energy_pointing_game")(explain(method, model, b.x, [layer], targets=b.labels).detach(), b)
    return float(v[~v.isnan()].mean())


def run_search(tmp_path, *extra, study="t"):
    return main(["--threads", "1", "search", *TOY, "--study", study, "--out", str(tmp_path / "out"), *extra])


@pytest.mark.parametrize("args, message", [
    (["--operators", "+,*,frobnicate"], "unknown operator 'frobnicate'"),
    (["--max-size", "1", "--result", "weights"], "max_size 1 is too small"),
    (["--metric", "energy_pointing_gam"], "did you mean 'energy_pointing_game'"),
    (["--metric", "size"], "size alone"),
    (["--storage", "mysql://u@localhost/db"], "unsupported storage scheme"),
    (["--data", "no/such/folder"], "neither one of"),
    (["--seed-cost-cap", "-1"], "leaves no seed to compare with"),
    (["--seed-cost-cap", "nan"], "leaves no seed to compare with"),
    (["--tolerance", "-0.1"], "--tolerance must be"),
    (["--tolerance", "half"], "--tolerance is 'se'"),
])
def test_bad_space_metric_storage_or_data_fail_before_any_work(tmp_path, capsys, args, message):
    assert run_search(tmp_path, *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()            # no study, no journal, nothing written


def test_search_reports_held_out_scores_of_the_selected_expression(tmp_path, capsys):
    rc = run_search(tmp_path, "--budget", "60", "--enumerate-size", "2", "--batch", "8", "--fidelity", "4",
                    "--held-out", "0.25", "--split-seed", "3", "--seed", "0")
    assert rc == 0
    out = tmp_path / "out"
    for name in ("leaderboard.csv", "leaderboard.json", "best.txt", "command.txt", "report.html", "overlays.png"):
        assert (out / name).stat().st_size > 0, name
    board = json.loads((out / "leaderboard.json").read_text(), parse_constant=_no_nan)   # strict JSON
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<script" not in html and board["verdict"]["message"] in html

    # the split: held-out images are not among the working images the study saw
    model, batch, layer = toy_problem(24)
    train, held = split(batch, 0.25, 3)
    assert not set(train.names) & set(held.names)
    settings = board["settings"]["split"]
    assert (settings["train_images"], settings["held_images"]) == (len(train), len(held))

    # recompute the selected expression's scores independently with the public API and the metric
    best = (out / "best.txt").read_text().strip()
    metric = get_metric("energy_pointing_game")

    def mean_on(b):
        maps = CAM(best, model, [layer])(b.x, b.labels).detach()
        v = metric(maps, b)
        return float(v[~v.isnan()].mean())

    top = board["leaderboard"][0]
    assert top["expression"] == best and top["source"] != "seed"
    assert math.isclose(top["held_energy_pointing_game"], mean_on(held), abs_tol=2e-3)
    assert math.isclose(top["train_energy_pointing_game"], mean_on(train), abs_tol=2e-3)
    # every seed is on the board, each compared with the best on the same held-out images: those of the
    # space, and the others the toy model allows within the cost cap (perturbation seeds included)
    seeds = [r for r in board["leaderboard"] if r["source"] == "seed"]
    in_space = {"gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "ssgradcam", "ssgradcampp"}
    assert {r["label"] for r in seeds if r["in_space"]} == in_space
    assert {"scorecam", "sscam", "iscam", "ablationcam", "micam", "eigencam", "cam"} <= {r["label"] for r in seeds}
    assert {c["seed"] for c in board["comparisons"]} == {r["label"] for r in seeds}
    plan = board["seeds"]
    assert set(plan["in_study"]) >= in_space and set(plan["extra"]) == {r["label"] for r in seeds} - in_space
    assert plan["extra"]["scorecam"]["passes_per_image"] == 8                 # K = 8 channels of the toy layer
    assert set(plan["left_out"]) >= {"gpnncam", "metacam", "adaptivegradcam"}   # every seed compared or left out
    from sycam.methods.seeds import META_METHODS, SEEDS
    assert set(plan["in_study"]) | set(plan["extra"]) | set(plan["left_out"]) == set(SEEDS) | set(META_METHODS)
    assert " ".join(plan["text"].split()) in " ".join(unescape(html).split())
    # Holm over every seed compared; 6 held-out images: underpowered, nothing called significant
    tested = [c for c in board["comparisons"] if c["p"] == c["p"]]
    lowest = min(tested, key=lambda c: c["p"])
    assert len(tested) > 7 and math.isclose(lowest["p_holm"], min(1.0, len(tested) * lowest["p"]))
    assert not any(c["significantly_better"] or c["significantly_worse"] for c in board["comparisons"])
    assert "underpowered" in board["verdict"]["message"] and "significant against" not in board["verdict"]["message"]
    # the verdict names the (canonical) expression, not a trial number
    named = board["verdict"]["best"]
    assert named == best and best in board["verdict"]["message"] and "#" not in named
    seed_rows = {r["label"]: r for r in seeds}
    assert math.isclose(seed_rows["scorecam"]["held_energy_pointing_game"],
                        mean_on_method("scorecam", model, layer, held), abs_tol=1e-6)
    for c in board["comparisons"]:
        seed_row = next(r for r in seeds if r["label"] == c["seed"])
        assert math.isclose(c["mean"], top[f"vs_{c['seed']}"], abs_tol=1e-9)
        assert c["images"] == len(held) and math.isclose(
            c["mean"], top["held_energy_pointing_game"] - seed_row["held_energy_pointing_game"], abs_tol=1e-6)
    beats = all(c["mean"] > 0 for c in board["comparisons"])
    assert board["verdict"]["beats_every_seed"] == beats
    assert ("does NOT beat" in board["verdict"]["message"]) != beats

    # the same command resumes the finished study (nothing new to do) and the study is consistent
    store = open_store(f"journal:{out / 'study.journal'}")
    study = optuna.load_study(study_name="t", storage=store.optuna)
    keys = [info(t)["key"] for t in study.get_trials(deepcopy=False) if is_evaluation(t)]
    assert len(keys) == 60 == len(set(keys))
    capsys.readouterr()
    assert run_search(tmp_path, "--budget", "60", "--enumerate-size", "2", "--batch", "8", "--fidelity", "4",
                      "--held-out", "0.25", "--split-seed", "3", "--seed", "0") == 0
    assert "resuming study" in capsys.readouterr().out
    assert len([t for t in study.get_trials(deepcopy=False) if is_evaluation(t)]) == 60
    # ... and refuses the study with another split
    assert run_search(tmp_path, "--budget", "60", "--held-out", "0.5") == 2
    assert "split" in capsys.readouterr().err


def test_ablate_writes_a_sorted_table_chart_and_heatmaps(tmp_path):
    out = tmp_path / "ab"
    rc = main(["--threads", "1", "ablate", "relu(sum(mean(G, hw) * A, k))", *TOY, "--size", "12", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "ablation.json").read_text(), parse_constant=_no_nan)
    rows = data["rows"]
    assert rows[0]["kind"] == "original"
    scored = [r for r in rows[1:] if not r["map"]]                  # flat maps (A -> G2 here) are not scored
    assert rows[1:] == scored + [r for r in rows[1:] if r["map"]]
    deltas = [r["delta"] for r in scored]
    assert deltas == sorted(deltas)                                 # most harmful first
    changes = {r["change"] for r in rows}
    assert {"mean(x, hw) -> x", "G -> G2", "A -> G"} <= changes and "relu(x) -> x" not in changes  # root kept
    # by default on the held-out images of the search's split (--held-out 0.25 --split-seed 0)
    model, batch, layer = toy_problem(12)
    held = split(batch, 0.25, 0)[1]
    assert data["image_set"] == "held-out" and data["image_names"] == held.names
    # each variant's score is the metric of its own expression (recomputed here)
    metric = get_metric("energy_pointing_game")
    for r in [rows[0], *scored[:2]]:
        v = metric(CAM(parse(r["expression"]), model, [layer])(held.x, held.labels).detach(), held)
        assert math.isclose(float(v[~v.isnan()].mean()), r["score"], abs_tol=1e-4)
        assert math.isclose(r["delta"], r["score"] - rows[0]["score"], abs_tol=1e-6)
    for name in ("ablation.csv", "ablation.png", "heatmaps.png", "report.html"):
        assert (out / name).stat().st_size > 0
    assert torch.isfinite(torch.tensor(deltas)).all()


def test_ablate_calls_dead_only_terms_that_leave_the_maps_unchanged(tmp_path, capsys):
    """Dead = the normalised maps stay the same, not 'no pointing-game hit changed' (a hit/miss
    metric on 2 held-out images keeps every score while live terms move the maps)."""
    out = tmp_path / "ab"
    expr = "relu(sum(mean(G, hw) * A + 0 * G, k) * 2)"
    assert main(["--threads", "1", "ablate", expr, "--model", "toy", "--data", "toy", "--size", "8",
                 "--metric", "pointing_game", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads((out / "ablation.json").read_text(), parse_constant=_no_nan)
    rows = {(r["change"], r["at"]): r for r in data["rows"]}
    dead = {k for k, r in rows.items() if r["dead"]}
    assert {("2 -> 1", "sum(mean(G, hw) * A + 0 * G, k) * [2]"),            # * 2 under relu
            ("0 * G -> 0", "mean(G, hw) * A + [0 * G]")} <= dead             # + 0 * G
    live = rows["mean(x, hw) -> x", "[mean(G, hw)] * A"]                      # grad-cam -> hires-cam
    assert not live["dead"] and not live["same_map"] and live["scores_unchanged"]
    assert live["effect"] == "maps differ, no score changed"
    assert data["dead_terms"].startswith("dead terms (removing them leaves every map unchanged): 2 (2 -> 1")
    assert "mean(x, hw) -> x" not in data["dead_terms"] and "mean(x, hw) -> x" in data["unchanged_scores"]
    printed = " ".join(printed.split())                                      # rich wraps long lines
    assert "dead terms (removing them leaves every map unchanged): 2 (2 -> 1" in printed
    assert "Removals that change the maps but no image's pointing_game" in printed
    # independently: the live variant's maps differ, the dead one's do not; every pointing-game hit is the same
    model, batch, layer = toy_problem(8)
    held = split(batch, 0.25, 0)[1]
    assert len(held) == 2

    def normalised(text):
        m = CAM(parse(text), model, [layer])(held.x, held.labels).detach().flatten(1)
        low, high = m.amin(1, keepdim=True), m.amax(1, keepdim=True)
        return (m - low) / (high - low)

    metric = get_metric("pointing_game")
    original = normalised(data["rows"][0]["expression"])
    gap = (normalised(live["expression"]) - original).abs().amax()
    assert gap > 1e-2
    swapped = normalised(rows["2 -> 1", "sum(mean(G, hw) * A + 0 * G, k) * [2]"]["expression"])
    assert (swapped - original).abs().amax() < 1e-4
    pg = [metric(CAM(parse(r["expression"]), model, [layer])(held.x, held.labels).detach(), held)
          for r in (data["rows"][0], live)]
    assert torch.equal(pg[0], pg[1])
