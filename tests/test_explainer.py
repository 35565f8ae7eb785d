"""The Explainer protocol: CAM and every meta-method implement it, and the callers (explain_many,
evaluate, make_cam) need nothing else, so a new explainer works there as it is."""
import torch
from tiny import example_input, spatial_model

from sycam.api import CAM, Explainer, Explanation, explain_many, make_cam
from sycam.data.batch import Batch
from sycam.evaluation import evaluate, resolve_metrics
from sycam.methods import META_METHODS
from sycam.methods.build import BUILDERS

CLASSES = ["zero", "one"]


def test_cam_and_every_meta_method_are_explainers_built_by_name():
    model = spatial_model()
    assert set(BUILDERS) == set(META_METHODS)
    small = {"gpnncam": {"n": 1, "super_iters": 1}, "metacam": {"components": ("gradcam", "hirescam")},
             "adaptivegradcam": {}}
    for name in META_METHODS:
        explainer = make_cam(name, model, "feat", classes=CLASSES, **small[name])
        assert isinstance(explainer, Explainer) and not isinstance(explainer, CAM)
        assert explainer.model is model and [r.name for r in explainer.layers] == ["feat"]
        assert explainer.classes == CLASSES and name.replace("adaptivegradcam", "metacam") in explainer.text
        other = spatial_model()
        rebound = explainer.with_model(other)
        assert rebound.model is other and rebound.text == explainer.text and rebound.classes == CLASSES
        assert repr(explainer) == f"{type(explainer).__name__}({explainer.text})"
    assert isinstance(make_cam("gradcam", model, "feat"), CAM)


def test_a_meta_method_resolves_class_names_itself():
    model = spatial_model()
    meta = make_cam("metacam", model, "feat", classes=CLASSES, components=("gradcam", "hirescam"), k=0.5,
                    adaptive=False)
    x = example_input()
    by_name = explain_many({"m": meta}, x, ["one"])["m"]
    assert torch.equal(by_name.maps, meta.explain(x, [1]).maps)
    with meta:
        assert torch.equal(meta(x, "one"), by_name.maps)
    assert meta.last is not None


class Flat(Explainer):
    """A new explainer, written against the protocol only: the same map for every image."""

    text = "flat"

    def __init__(self, model):
        self.model, self.layers, self.last = model, None, None

    def explain(self, x, targets=None):
        ev = CAM("gradcam", self.model, "feat").explain(x, targets).evidence
        self.last = Explanation(torch.ones(x.shape[0], *x.shape[-2:]), torch.ones(x.shape[0], dtype=torch.bool),
                                {}, ev)
        return self.last

    def with_model(self, model):
        return Flat(model)


def test_a_new_explainer_works_in_explain_many_and_evaluate():
    model = spatial_model()
    x = example_input()
    out = explain_many({"flat": Flat(model), "gradcam": CAM("gradcam", model, "feat")}, x, [0])
    assert torch.equal(out["flat"].maps, torch.ones(1, 2, 2))
    assert torch.allclose(out["gradcam"].maps, CAM("gradcam", model, "feat")(x, [0]))
    batch = Batch(x=x, images=x.clamp(0, 1), labels=torch.tensor([0]))
    scores = evaluate({"flat": Flat(model)}, resolve_metrics(["complexity", "sanity_cascading"]), batch,
                      model).scores
    assert float(scores["complexity"]["flat"][0]) == 1.0          # a map of ones, rebuilt on the randomised model
