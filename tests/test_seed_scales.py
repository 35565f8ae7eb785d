"""Every seed equals its paper formula at any scale of the evidence.

The references below are the formulas written out in float64, independently of sycam's
compiler. sycam evaluates the seeds' expressions on float32 evidence whose activations and
gradients are scaled by 1e-12 ... 1e3 (every pair), from the layers of random-weight
torchvision models (efficientnet_b0 ``features.8``, mobilenet_v3_large ``features.16``, whose
activations are small) and synthetic terms for the perturbation scores, H A and the terms at the
input's resolution. End to end, sycam.CAM on those models and on a hand-built model with
activations of about 1e-9 matches the float64 formulas too. Maps are compared after the per-image
min-max every CAM ends with. Kernel PCA (KPCA-CAM) is not scale-free: it is compared wherever its
first component is unique.
"""
import dataclasses
import hashlib

import mpmath
import pytest
import torch
import torchvision
from tiny import SpatialHead

import sycam
from sycam.evidence.terminals import TERMINALS
from sycam.grammar import parse
from sycam.grammar.ops import OPS
from sycam.kernels import compile_expression, to_layout

SCALES = [1e-12, 1e-6, 1.0, 1e3]
HW = (2, 3)


def _relu(x):
    return x.clamp_min(0)


def _div(x, y):
    """The documented quotient: x / y, 0 where y == 0."""
    return torch.where(y != 0, x / torch.where(y != 0, y, 1), 0)


def _pc1(A):
    b, k, h, w = A.shape
    X = A.flatten(2).transpose(1, 2)                       # (b, hw, k): positions as samples
    X = X - X.mean(1, keepdim=True)
    _, _, V = torch.linalg.svd(X, full_matrices=False)
    proj = X @ V[:, 0, :, None]                            # (b, hw, 1)
    return _signed(proj[..., 0]).reshape(b, h, w)


def _signed(proj):
    """A principal component's projections (b, n), signed so that the largest |value| is positive."""
    pick = proj.abs().argmax(1, keepdim=True)
    return torch.where(proj.gather(1, pick) < 0, -proj, proj)


_KPC1_MEMO: dict = {}


def _kpc1(A, kernel="sigmoid"):
    """:func:`_kpc1_of`, remembered: the seed loop asks again for every scale of the gradients."""
    key = (kernel, tuple(A.shape), hashlib.sha1(A.numpy().tobytes()).digest())
    if key not in _KPC1_MEMO:
        _KPC1_MEMO[key] = _kpc1_of(A, kernel)
    return _KPC1_MEMO[key]


def _kpc1_of(A, kernel):
    """Kernel PCA's first component, sqrt(l_1) v_1 of the double-centred kernel matrix of the positions'
    centred channel vectors (gamma = 1 / K; rbf exp(-gamma d^2), sigmoid tanh(gamma x.y + 1)). The kernel
    matrix and its centring in 60-digit arithmetic (its constant part cancels there: tiny activations
    need the digits), the eigenpair in float64. None where l_1 is not simple (relative gap below 1e-3):
    the formula has no unique map there."""
    b, k, h, w = A.shape
    X = A.flatten(2).transpose(1, 2)
    X = X - X.mean(1, keepdim=True)
    out = []
    for Xi in X:
        if kernel == "rbf":
            args = -((Xi[:, None] - Xi[None]) ** 2).sum(-1) / k
        else:
            args = Xi @ Xi.T / k
        with mpmath.workdps(60):
            fn = mpmath.exp if kernel == "rbf" else (lambda s: mpmath.tanh(s + 1))
            K = [[fn(mpmath.mpf(float(a))) for a in row] for row in args]
            n = len(K)
            rows = [sum(r) / n for r in K]
            total = sum(rows) / n
            C = torch.tensor([[float(K[i][j] - rows[i] - rows[j] + total) for j in range(n)] for i in range(n)],
                             dtype=torch.float64)
        vals, vecs = torch.linalg.eigh(C)
        if vals[-1] - vals[-2] < 1e-3 * vals[-1].abs():
            return None
        out.append(vecs[:, -1] * vals[-1].clamp_min(0).sqrt())
    return _signed(torch.stack(out)).reshape(b, h, w)


def _plusplus_weights(A, G):
    alpha = _div(G ** 2, 2 * G ** 2 + A.sum(HW, keepdim=True) * G ** 3)
    return (alpha * _relu(G)).sum(HW, keepdim=True)


def _space(G):
    return _div(G.abs(), G.abs().amax(HW, keepdim=True))


def reference(name: str, t: dict) -> torch.Tensor:
    """(b, h, w) float64 map of the seed's paper formula; None where it has no unique map."""
    A, G = t["A"], t["G"]
    chan = lambda w: (w[..., None, None] if w.dim() == 2 else w)  # noqa: E731
    if name == "cam":
        return (chan(t["W"]) * A).sum(1)
    if name in ("gradcam", "finercam"):
        return _relu((G.mean(HW, keepdim=True) * A).sum(1))
    if name == "gradcampp":
        return _relu((_plusplus_weights(A, G) * A).sum(1))
    if name == "xgradcam":
        return _relu((_div((A * G).sum(HW, keepdim=True), A.sum(HW, keepdim=True)) * A).sum(1))
    if name == "hirescam":
        return _relu((G * A).sum(1))
    if name == "layercam":
        return _relu((_relu(G) * A).sum(1))
    if name == "eigencam":
        return _relu(_pc1(A))
    if name == "eigengradcam":
        return _relu(_pc1(G * A))
    if name == "gradcamelementwise":
        return _relu(G * A).sum(1)
    if name == "kpcacam":
        proj = _kpc1(A)
        return None if proj is None else _relu(proj)
    if name == "fem":
        mean = A.mean(HW, keepdim=True)
        return torch.where(A > mean + 2 * A.std(HW, correction=0, keepdim=True), mean, 0).sum(1)
    if name == "ssgradcam":
        return _relu((G.mean(HW, keepdim=True) * _space(G) * A).sum(1))
    if name == "ssgradcampp":
        return _relu((_plusplus_weights(A, G) * _space(G) * A).sum(1))
    if name in ("scorecam", "sscam", "ablationcam", "micam"):
        term = {"scorecam": "score", "sscam": "score_ss", "ablationcam": "ablation", "micam": "mi"}[name]
        return _relu((chan(t[term]) * A).sum(1))
    if name == "iscam":
        return _relu((chan(t["score_is"].softmax(1)) * A).sum(1))
    if name == "relevancecam":
        return _relu((t["R"].sum(HW, keepdim=True) * A).sum(1))
    if name == "cameras":
        keep = t["keep"][:, :, None, None, None]
        return _relu(((keep * t["As"]).sum(1) * (keep * t["Gs"]).sum(1)).sum(1))
    if name == "shapleycam":
        return _relu(((G - 0.5 * t["HA"]).mean(HW, keepdim=True) * A).sum(1))
    if name == "fullgrad":
        m = (t["Gx"] * t["X"]).abs()
        lo, hi = m.amin(HW, keepdim=True), m.amax(HW, keepdim=True)
        return _div(m - lo, hi - lo).sum(1) + t["FB"]
    if name == "guidedbp":
        return t["GB"].abs().amax(1)
    if name == "guidedgradcam":          # (the terms share one grid here: resize is the identity)
        return (t["GB"] * reference("gradcam", t)[:, None]).abs().amax(1)
    if name == "smoothgradcampp":
        Gv = t["Gv"]
        g, g2, g3 = Gv.mean(1), (Gv ** 2).mean(1), (Gv ** 3).mean(1)
        alpha = _div(g2, 2 * g2 + A.sum(HW, keepdim=True) * g3)
        return _relu(((alpha * _relu(g)).sum(HW, keepdim=True) * A).sum(1))
    raise AssertionError(f"no reference formula for {name}")


AXES = {name: term.axes for name, term in TERMINALS.items()}
GRADIENT_LIKE = {"G", "Gs", "Gv", "R", "W", "score", "score_ss", "score_is", "ablation", "mi", "HA", "Gx", "GB"}
ACTIVATION_LIKE = {"A", "As", "Av"}


def terms_from(A, G, seed=0):
    """Float64 terminals: the layer's A and G brought to a mean magnitude of 1 (the tests scale
    them from there), plus synthetic scores, scales, noise samples, H A and input-resolution terms."""
    A, G = A / A.abs().mean(), G / G.abs().mean()
    gen = torch.Generator().manual_seed(seed)
    b, k = A.shape[:2]
    rand = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    return {"A": A, "G": G, "W": G.mean(HW), "R": rand(*A.shape) - 0.4,
            "score": rand(b, k), "score_ss": rand(b, k), "score_is": rand(b, k) * 4,
            "ablation": rand(b, k) - 0.3, "mi": rand(b, k),
            "As": torch.stack([A, A * 0.9, A * 1.1], 1), "Gs": torch.stack([G, G * 1.2, G * 0.7], 1),
            "keep": torch.tensor([[1.0, 0.0, 1.0]] * b, dtype=torch.float64),
            "Av": torch.stack([A, A], 1), "Gv": torch.stack([G, G + G.std() * rand(*G.shape)], 1),
            "HA": G * (rand(*G.shape) - 0.5) * 4,
            # input-resolution terms (colours on k) on the layer's grid
            "X": rand(b, 3, *A.shape[2:]) - 0.5, "Gx": G[:, :3] * (rand(b, 3, *A.shape[2:]) - 0.3),
            "GB": G[:, 3:6].abs() * (rand(b, 3, *A.shape[2:]) - 0.2), "FB": rand(b, *A.shape[2:]) * 3}


def sycam_map(name: str, t: dict, sa: float, sg: float) -> torch.Tensor:
    """The seed's expression compiled by sycam, on float32 evidence scaled by (sa, sg)."""
    scaled = {}
    for n, v in t.items():
        v = (v * (sa if n in ACTIVATION_LIKE else sg if n in GRADIENT_LIKE else 1.0)).float()
        scaled[n] = to_layout(v, AXES[n])
    scaled["G2"], scaled["G3"] = scaled["G"] ** 2, scaled["G"] ** 3
    scaled["G2v"], scaled["G3v"] = scaled["Gv"] ** 2, scaled["Gv"] ** 3
    return compile_expression(sycam.SEEDS[name].tree, TERMINALS)(scaled)[0]


def normalised(m: torch.Tensor) -> torch.Tensor:
    flat = m.double().flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return _div(flat - lo, hi - lo)


def assert_same_map(got, expected, what):
    got, expected = normalised(got), normalised(expected)
    assert torch.isfinite(got).all(), what
    diff = float((got - expected).abs().max())
    assert diff < 2e-3, f"{what}: max |difference| of the normalised maps {diff:.3g}"


def capture64(model, layer: str, x: torch.Tensor):
    """A, G (float64) at ``layer`` for the top-1 class, by a plain hook and autograd."""
    model = model.double().eval()
    store = {}
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: store.__setitem__("A", o))
    try:
        logits = model(x.double().requires_grad_(True))   # (so that an identity layer's output has a graph)
        target = logits.argmax(1)
        (G,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), store["A"])
    finally:
        handle.remove()
    return store["A"].detach(), G, target


MODELS = {"efficientnet_b0": "features.8", "mobilenet_v3_large": "features.16"}


@pytest.fixture(scope="module")
def random_models():
    out = {}
    for name, layer in MODELS.items():
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
        A, G, target = capture64(model, layer, x)
        out[name] = (model, layer, x, A, G, target)
    return out


SEED_NAMES = sorted(sycam.SEEDS)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_every_seed_equals_its_formula_at_every_scale(model_name, random_models):
    *_, A, G, _ = random_models[model_name]
    t = terms_from(A, G)
    for name in SEED_NAMES:
        for sa in SCALES:
            for sg in SCALES:
                expected = reference(name, {n: v * (sa if n in ACTIVATION_LIKE else sg if n in GRADIENT_LIKE
                                                    else 1.0) for n, v in t.items()})
                if expected is None:    # kernel PCA where its first component is not unique (tested below)
                    continue
                assert_same_map(sycam_map(name, t, sa, sg), expected, f"{name} at A x {sa:g}, G x {sg:g}")


def test_an_absolute_epsilon_would_fail_this_test(random_models, monkeypatch):
    """The test above can fail: the former division (|y| < 1e-7 pushed to ±1e-7) breaks XGrad-CAM
    on small activations."""
    def clamped(y):
        return torch.copysign(y.abs().clamp_min(1e-7), y) if isinstance(y, torch.Tensor) else y
    monkeypatch.setitem(OPS, "div", dataclasses.replace(OPS["div"], prepare=((1, clamped),)))
    *_, A, G, _ = random_models["efficientnet_b0"]
    t = terms_from(A, G)
    with pytest.raises(AssertionError, match="max"):
        assert_same_map(sycam_map("xgradcam", t, 1e-12, 1.0), reference("xgradcam", {**t, "A": A * 1e-12}), "")


@pytest.mark.parametrize("kernel", ["rbf", "sigmoid"])
def test_kernel_pca_equals_its_formula_at_every_scale_where_it_is_unique(kernel, random_models):
    compared = set()
    for model_name in MODELS:
        *_, A, _, _ = random_models[model_name]
        A = A / A.abs().mean()
        for sa in SCALES:
            expected = _kpc1(A * sa, kernel)
            if expected is None:
                continue
            got = compile_expression(parse(f"kpc1_{kernel}(A)"), TERMINALS)({"A": to_layout((A * sa).float(), "bkhw")})
            assert_same_map(got[0], expected, f"kpc1_{kernel} on {model_name} at A x {sa:g}")
            compared.add(sa)
    # at 1e3 the RBF matrix is the identity to 60 digits (exp(-gamma d^2) < 1e-10000): no unique component
    assert compared == (set(SCALES) - {1e3} if kernel == "rbf" else set(SCALES))


def test_kernel_pca_without_the_cancelling_constant_would_fail_this_test(random_models, monkeypatch):
    """The test above can fail: the kernel tanh(gamma s + 1) centred as it is (not less tanh(1)) loses
    tiny activations' differences against the constant."""
    from sycam.grammar import semantics
    monkeypatch.setitem(semantics.KERNELS, "sigmoid", lambda X, gamma: (gamma * (X @ X.transpose(-1, -2)) + 1).tanh())
    *_, A, _, _ = random_models["efficientnet_b0"]
    A = A / A.abs().mean() * 1e-12
    got = compile_expression(parse("kpc1_sigmoid(A)"), TERMINALS)({"A": to_layout(A.float(), "bkhw")})[0]
    with pytest.raises(AssertionError, match="max"):
        assert_same_map(got, _kpc1(A), "")


GRADIENT_SEEDS = ["gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "eigencam", "ssgradcam",
                  "ssgradcampp", "eigengradcam", "gradcamelementwise", "kpcacam", "fem"]


@pytest.mark.parametrize("model_name", list(MODELS))
def test_cam_on_random_models_matches_the_float64_formulas(model_name, random_models):
    model, layer, x, A, G, target = random_models[model_name]
    model = model.float()
    assert A.abs().mean() < 1.0     # the small activations of a random network
    t = {"A": A, "G": G}
    for name in GRADIENT_SEEDS:
        got = sycam.CAM(name, model, layer).explain(x, target.tolist()).layer_maps[layer]
        assert_same_map(got, reference(name, t), f"{name} on {model_name} {layer}")


def test_cam_on_a_model_with_activations_of_1e_9():
    torch.manual_seed(0)
    rows = torch.randn(3, 4, 5, 5) * 1e-9                   # G = V_c ~ 1e-9
    model = SpatialHead(rows).eval()
    x = torch.rand(2, 4, 5, 5, generator=torch.Generator().manual_seed(2)) * 1e-9   # A = x ~ 1e-9
    x[:, 1] -= 0.5e-9                                        # a channel with mixed signs
    A, G, target = capture64(SpatialHead(rows.double()), "feat", x)
    assert 1e-10 < float(A.abs().mean()) < 1e-8 and 1e-10 < float(G.abs().mean()) < 1e-8
    for name in GRADIENT_SEEDS:
        got = sycam.CAM(name, model, "feat").explain(x, target.tolist()).layer_maps["feat"]
        assert_same_map(got, reference(name, {"A": A, "G": G}), f"{name} at 1e-9")
