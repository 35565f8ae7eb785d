"""Honest comparisons (issue 8): every seed the model and layer allow, within a cost cap, or left out with why."""
import math

import pytest

from sycam.evidence.options import EvidenceOptions
from sycam.methods.seeds import META_METHODS, SEEDS
from sycam.search.baselines import DEFAULT_SEED_COST_CAP, SeedCostError, check_cap, plan, seed_passes


@pytest.mark.parametrize("cap", [-1, -0.5, "nan", "-inf", "lots"])
def test_a_cap_that_leaves_no_seed_is_an_error_before_any_model_work(cap):
    with pytest.raises(SeedCostError, match="seed"):
        check_cap(cap)


def test_caps_that_leave_seeds():
    assert check_cap(None) == DEFAULT_SEED_COST_CAP and check_cap("0") == 0.0 and check_cap(math.inf) == math.inf
    p = plan([], 0.0, channels=512, positions=49)
    assert {"gradcam", "hirescam", "eigencam", "fullgrad"} <= set(p.extra)       # no pass beyond the shared one
    assert "scorecam" in p.left_out and "> the cap 0" in p.left_out["scorecam"]


def test_costs_in_model_passes_per_image():
    k, hw = 512, 49
    assert seed_passes(SEEDS["gradcam"], k, hw) == 0 and seed_passes(SEEDS["micam"], k, hw) == k / 40
    assert seed_passes(SEEDS["scorecam"], k, hw) == k and seed_passes(SEEDS["ablationcam"], k, hw) == k
    assert seed_passes(SEEDS["sscam"], k, hw) == 10 * k == seed_passes(SEEDS["iscam"], k, hw)
    assert seed_passes(SEEDS["sscam"], k, hw, EvidenceOptions(ss_n=35)) == 35 * k
    # Smooth Grad-CAM++ reads Gv, G2v, G3v: one set of N noisy forwards + backwards, counted once
    assert seed_passes(SEEDS["smoothgradcampp"], k, hw) == 2 * EvidenceOptions().noise_n
    # CAMERAS: a forward and a backward at each of its sizes, a pass at 924 px costing (924 / 224)^2 at 224 px
    assert seed_passes(SEEDS["cameras"], k, hw) == pytest.approx(2 * sum((s / 224) ** 2 for s in range(224, 1000, 100)))
    assert seed_passes(SEEDS["cameras"], k, hw, EvidenceOptions(scales=(224, 448))) == pytest.approx(2 * (1 + 4))
    assert seed_passes(SEEDS["shapleycam"], k, hw) == 2 and seed_passes(SEEDS["relevancecam"], k, hw) == 2


def test_every_seed_is_compared_or_left_out_with_a_reason():
    p = plan(["gradcam", "hirescam"], DEFAULT_SEED_COST_CAP, channels=1280, positions=49)
    assert set(p.in_study) | set(p.extra) | set(p.left_out) == set(SEEDS) | set(META_METHODS)
    assert not set(p.extra) & set(p.in_study)
    assert "1280 model passes per image (K = 1280) > the cap 100" in p.left_out["scorecam"]
    assert {"sscam", "iscam", "ablationcam", "cameras"} <= set(p.left_out) and "micam" in p.extra
    assert "meta-method" in p.left_out["metacam"]
    text = p.text()
    assert "gradcam" in text and "micam (32)" in text and "scorecam: 1280 model passes" in text
