"""Known CAM methods, each an expression of the language plus where it comes from.

A seed is data: its expression text, the paper, its cost in model passes, and (for
methods that change *what* is explained rather than how) the target it uses. The search
enqueues these first; ``sycam seeds`` prints them, with the :class:`Recipe` that reproduces
a peer library's version of the method where it differs from the paper's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import SycamError, UnknownNameError
from ..grammar import parse
from ..grammar.ast import Expr

# Grad-CAM++'s alpha (Chattopadhyay et al. Eq. 19, closed form for S = exp(y)):
#   alpha = G^2 / (2 G^2 + sum_hw(A) G^3), where G = 0 gives 0 / 0 -> 0 under safe division
_ALPHA = "G2 / (2 * G2 + sum(A, hw) * G3)"
# SSGrad-CAM's space map: |G| normalised by its spatial maximum, per channel
_SPACE = "abs(G) / max(abs(G), hw)"


@dataclass(frozen=True)
class Recipe:
    """A peer library's version of a seed: ``sycam.CAM(expression, model, layers, options=options)``
    with the default target (the logit, as the peer's ClassifierOutputTarget / class_idx) gives its maps."""

    library: str
    expression: str
    options: dict
    note: str = ""

    def __str__(self) -> str:
        return f"{self.library}: CAM({self.expression!r}, options={self.options!r})" + (
            f": {self.note}" if self.note else "")


@dataclass(frozen=True)
class Seed:
    name: str
    title: str
    expression: str
    reference: str
    cost: str
    notes: str = ""
    aliases: tuple[str, ...] = ()
    target: str | None = None              # "finer" (Finer-CAM's contrast), "probability", "rest" (ShapleyCAM's ReST)
    fuse: str = "mean"                     # how maps of several layers are combined
    params: dict = field(default_factory=dict)
    recipes: tuple[Recipe, ...] = ()       # peer libraries' versions, appended to the notes

    def __post_init__(self) -> None:
        if self.recipes:
            lines = [self.notes] if self.notes else []
            object.__setattr__(self, "notes", "\n".join(lines + [f"as {r}" for r in self.recipes]))

    @property
    def tree(self) -> Expr:
        return parse(self.expression)


_SEEDS = [
    Seed("cam", "CAM", "sum(W * A, k)",
         "Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016, arXiv:1512.04150",
         "1 forward + a backward through the linear head only",
         "needs a GAP + linear head; W is the classifier row of the target (dS/dz). No ReLU, as in the paper."),
    Seed("gradcam", "Grad-CAM", "relu(sum(mean(G, hw) * A, k))",
         "Selvaraju et al., Grad-CAM, ICCV 2017, arXiv:1610.02391", "1 forward + 1 backward to the layer",
         aliases=("grad-cam",)),
    Seed("gradcampp", "Grad-CAM++", f"relu(sum(sum({_ALPHA} * relu(G), hw) * A, k))",
         "Chattopadhyay et al., Grad-CAM++, WACV 2018, arXiv:1710.11063 (Eq. 19 closed form)",
         "1 forward + 1 backward to the layer", "G2, G3 = G^2, G^3: exact for piecewise-linear heads with S = exp(y)",
         aliases=("grad-cam++", "gradcam++", "gradcamplusplus")),
    Seed("xgradcam", "XGrad-CAM", "relu(sum(sum(A * G, hw) / sum(A, hw) * A, k))",
         "Fu et al., Axiom-based Grad-CAM, BMVC 2020, arXiv:2008.02312", "1 forward + 1 backward to the layer",
         aliases=("xgrad-cam",)),
    Seed("hirescam", "HiResCAM", "relu(sum(G * A, k))",
         "Draelos & Carin, Use HiResCAM instead of Grad-CAM, arXiv:2011.08891", "1 forward + 1 backward to the layer",
         aliases=("hires-cam",)),
    Seed("layercam", "LayerCAM", "relu(sum(relu(G) * A, k))",
         "Jiang et al., LayerCAM, IEEE TIP 2021", "1 forward + 1 backward per layer",
         "several layers fuse by element-wise max after tanh(2 L / max L) rescaling", aliases=("layer-cam",),
         fuse="layercam"),
    Seed("eigencam", "EigenCAM", "relu(pc1(A))",
         "Muhammad & Yeasin, Eigen-CAM, IJCNN 2020, arXiv:2008.00299", "1 forward (class-agnostic)",
         "projection on the first principal component; sign fixed so the largest |value| is positive",
         aliases=("eigen-cam",)),
    Seed("finercam", "Finer-CAM", "relu(sum(mean(G, hw) * A, k))",
         "Zhang et al., Finer-CAM, CVPR 2025, arXiv:2501.11309", "1 forward + 1 backward to the layer",
         "Grad-CAM of S' = sum_i p_i (y_c - gamma y_ri) / sum_i p_i over the 3 most similar classes",
         aliases=("finer-cam",), target="finer", params={"gamma": 1.0, "n_refs": 3}),
    Seed("ssgradcam", "SSGrad-CAM", f"relu(sum(mean(G, hw) * {_SPACE} * A, k))",
         "Yamauchi & Ishikawa, Spatial Sensitive Grad-CAM, ICIP 2022, doi:10.1109/ICIP46576.2022.9897350",
         "1 forward + 1 backward to the layer", "Grad-CAM weights times the space map |G| / max_hw |G|; made for "
         "detectors: target=DetectionTarget(box) (sycam.evidence.detection) explains one detected instance",
         aliases=("ssgrad-cam", "spatial-sensitive-gradcam")),
    Seed("ssgradcampp", "SSGrad-CAM++", f"relu(sum(sum({_ALPHA} * relu(G), hw) * {_SPACE} * A, k))",
         "Yamauchi, Spatial Sensitive Grad-CAM++, CVPR 2024 Workshops (XAI4CV), pp. 8164-8168",
         "1 forward + 1 backward to the layer", "Grad-CAM++ weights times the space map; on detectors with "
         "target=DetectionTarget(box) (sycam.evidence.detection)",
         aliases=("ssgrad-cam++", "ssgradcam++")),
]

# The peers' Score-CAM: logit target, masks of their own, softmax over channels of the masked
# logits. score_variant picks both the masks and that softmax (sycam.evidence.perturbation), so the
# expression multiplies by `score` itself: softmax(score, k) would take the softmax twice.
_SCORECAM_PEERS = (
    Recipe("grad-cam 1.5.7 ScoreCAM", "relu(sum(score * A, k))", {"score_variant": "gradcam"},
           "w_k = softmax_k y_c(x * M_k), M_k = minmax(Up(A_k)) with align_corners=True"),
    Recipe("torchcam 0.5 ScoreCAM", "relu(sum(score * A, k))", {"score_variant": "torchcam"},
           "w_k = softmax_k y_c(x * M_k), M_k = Up(minmax(A_k))"),
)
# grad-cam's AblationLayer sets a channel to min(A) - 1e7 unless min(A) = 0, re-reading the minimum
# after each row of its 32-row batches (sycam.evidence.perturbation.ablation_values)
_ABLATIONCAM_PEERS = (
    Recipe("grad-cam 1.5.7 AblationCAM", "relu(sum(ablation * A, k))", {"ablation_value": "gradcam"},
           "A_k := 0 if min(A) = 0, else min(A) - 1e7 (1 + k mod 32); w_k = (y_c - y_c(ablated)) / y_c"),
)

_SEEDS += [
    Seed("scorecam", "Score-CAM", "relu(sum(score * A, k))",
         "Wang et al., Score-CAM, CVPR Workshops 2020, arXiv:1910.01279", "K masked forwards",
         "w_k = softmax(y(x * M_k))_c, the reference code (the paper's CIC without a baseline). Constant A_k get "
         "no forward and w_k = 0: the same maps as the peers' when those channels are 0 (after a ReLU); option "
         "skip_constant = False forwards them as the peers do",
         target="probability", aliases=("score-cam",), recipes=_SCORECAM_PEERS),
    Seed("sscam", "SS-CAM", "relu(sum(score_ss * A, k))",
         "Wang et al., SS-CAM: Smoothed Score-CAM, arXiv:2006.14255", "N K masked forwards (N = 10)",
         "noise on the mask, N = 10, sigma = 2 (options ss_n, ss_sigma, ss_noise)", target="probability",
         aliases=("ss-cam",)),
    Seed("iscam", "IS-CAM", "relu(sum(softmax(score_is, k) * A, k))",
         "Naidu et al., IS-CAM: Integrated Score-CAM, arXiv:2010.03023", "N K masked forwards (N = 10)",
         "softmax over channels of the logits averaged over N scaled masks (torchcam's schedule)",
         aliases=("is-cam",)),
    Seed("ablationcam", "Ablation-CAM", "relu(sum(ablation * A, k))",
         "Desai & Ramaswamy, Ablation-CAM, WACV 2020", "K passes of the layers after the target layer",
         "w_k = (y_c - y_c(A_k = 0)) / y_c; the model is split at the layer (torch.fx) so ablations re-run only "
         "the rest", aliases=("ablation-cam",), recipes=_ABLATIONCAM_PEERS),
    Seed("micam", "MI-CAM", "relu(sum(mi * A, k))",
         "Iyer et al., MI-CAM, arXiv:2507.09092", "K histograms, no forward",
         "normalised mutual information by joint histogram (256 bins) of Up(A_k) and the grey model input",
         aliases=("mi-cam",)),
    Seed("cameras", "CAMERAS", "relu(sum(sum(keep * As, s) * sum(keep * Gs, s), k))",
         "Jalwana et al., CAMERAS, CVPR 2021", "R forwards + R backwards at R input sizes (R = 8, up to 924 px)",
         "A and G averaged over the scales that keep the class, then multiplied (the 1 / sum(keep, s) factors "
         "are a positive scale per image, removed by normalisation)", aliases=("cameras-cam",)),
    Seed("smoothgradcampp", "Smooth Grad-CAM++",
         "relu(sum(sum(mean(G2v, v) / (2 * mean(G2v, v) + sum(A, hw) * mean(G3v, v)) * relu(mean(Gv, v)), hw)"
         " * A, k))",
         "Omeiza et al., Smooth Grad-CAM++, arXiv:1908.01224", "N forwards + N backwards (N = 4, sigma = 0.3)",
         "G^2, G^3 and G averaged over noisy copies of the input; activations of the clean input",
         aliases=("smooth-gradcam++", "smoothgradcam++")),
]

_SEEDS += [
    Seed("relevancecam", "Relevance-CAM", "relu(sum(sum(R, hw) * A, k))",
         "Lee et al., Relevance-CAM: Your Model Already Knows Where to Look, CVPR 2021, arXiv:2104.00828",
         "1 forward + 1 LRP backward to the layer",
         "w_k = sum_hw R_k; R: LRP relevance at the layer (sycam.evidence.relevance). Defaults as the official code: "
         "z+ rule, BatchNorm merged, contrastive CLRP (options lrp_rule = zplus | epsilon | epsilon_plus, "
         "lrp_epsilon, lrp_contrast = clrp | none)", aliases=("relevance-cam", "rcam")),
]

# FEM's binary mask (Fuad et al., the k-sigma rule with k = 2): A_k above its spatial mean by more
# than 2 (population) standard deviations
_FEM_MASK = "A > mean(A, hw) + 2 * std(A, hw)"
_FEM_PEERS = (
    Recipe("grad-cam 1.5.7 FEM", f"relu(sum(mean(where({_FEM_MASK}, 1, 0), hw) * A, k))", {},
           "w_k = the fraction of positions in the mask, weighing A_k: the roles of the paper's weight (mu_k) "
           "and map (the mask) swapped"),
)

_SEEDS += [
    Seed("eigengradcam", "EigenGradCAM", "relu(pc1(G * A))",
         "pytorch-grad-cam's EigenGradCAM (Gildenblat and contributors, github.com/jacobgil/pytorch-grad-cam), "
         "Eigen-CAM (Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299) of G * A",
         "1 forward + 1 backward to the layer",
         "L = relu(X v_1): X = G * A as an (h w) x K matrix (positions x channels) centred over positions, v_1 "
         "its first principal direction, signed so the largest |X v_1| is positive (grad-cam keeps numpy's SVD "
         "sign)"),
    Seed("gradcamelementwise", "Grad-CAM element-wise", "sum(relu(G * A), k)",
         "pytorch-grad-cam's GradCAMElementWise (Gildenblat and contributors, github.com/jacobgil/pytorch-grad-cam), "
         "after Grad-CAM (Selvaraju et al., arXiv:1610.02391) and HiResCAM (Draelos & Carin, arXiv:2011.08891)",
         "1 forward + 1 backward to the layer",
         "L = sum_k relu(G_k * A_k): HiResCAM with the ReLU before the channel sum; grad-cam's ReLU after the sum "
         "(BaseCAM) is the identity on a sum of non-negative terms, so it is not written"),
    Seed("kpcacam", "KPCA-CAM", "relu(kpc1_sigmoid(A))",
         "Karmani et al., KPCA-CAM: Visual Explainability of Deep Computer Vision Models using Kernel PCA, "
         "IEEE MMSP 2024, arXiv:2410.00267",
         "1 forward (class-agnostic) + an eigendecomposition of an (h w) x (h w) kernel matrix per image",
         "L = relu(sqrt(l_1) v_1), (l_1, v_1) the top eigenpair of the double-centred kernel matrix "
         "tanh(x_i . x_j / K + 1) of the positions' centred channel vectors x_i (K channels): the authors' code, "
         "grad-cam's KPCA_CAM with its defaults (kernel='sigmoid', gamma = 1 / K, coef0 = 1). Its kernel='rbf' "
         "is relu(kpc1_rbf(A)), kernel exp(-|x_i - x_j|^2 / K)"),
    Seed("fem", "FEM", f"sum(where({_FEM_MASK}, mean(A, hw), 0), k)",
         "Fuad et al., Features Understanding in 3D CNNs for Actions Recognition in Video, IPTA 2020, "
         "doi:10.1109/IPTA50016.2020.9286629 (the Feature Explanation Method)",
         "1 forward (class-agnostic)",
         "L = sum_k mu_k 1(A_k > mu_k + 2 sigma_k), mu_k and sigma_k the spatial mean and population standard "
         "deviation of channel k (the authors' code; another number of deviations is another constant in the "
         "expression). No ReLU, as in the paper",
         aliases=("feature-explanation-method",), recipes=_FEM_PEERS),
]

# Methods that read evidence beyond A and G at the layer: a Hessian-vector product (ShapleyCAM) and
# input gradients at the input's resolution (FullGrad, guided backpropagation): terminals HA, Gx,
# FB, GB, X of sycam.evidence.terminals, all from the first pass's forward.
_GRADCAM = "relu(sum(mean(G, hw) * A, k))"
_SEEDS += [
    Seed("shapleycam", "ShapleyCAM", "relu(sum(mean(G - 0.5 * HA, hw) * A, k))",
         "Cai, CAMs as Shapley Value-based Explainers, arXiv:2501.06261 (2025)",
         "1 forward + 1 backward to the layer (keeping its graph) + 1 Hessian-vector product",
         "w_k = mean_hw(G - H A / 2): the Shapley values A (G - H A / 2) of the second-order Taylor expansion of "
         "S around A, averaged over space as Grad-CAM; H A = d(G . A)/dA by a double backward (terminal HA). "
         "Target: the paper's ReST, S = y_c + log softmax(y)_c (sycam.evidence.targets.ClassReST); with the logit "
         "behind a piecewise-linear head H = 0 and ShapleyCAM is Grad-CAM",
         aliases=("shapley-cam",), target="rest",
         recipes=(Recipe("grad-cam 1.5.7 ShapleyCAM", "relu(sum(mean(G - 0.5 * HA, hw) * A, k))", {},
                         "with its default ClassifierOutputTarget (the logit); with ClassifierOutputReST targets "
                         "it is this seed"),)),
    Seed("fullgrad", "FullGrad", "sum(norm(abs(Gx * X), hw), k) + FB",
         "Srinivas & Fleuret, Full-Gradient Representation for Neural Network Visualization, NeurIPS 2019, "
         "arXiv:1905.00780",
         "1 forward + 1 backward to the input (a probe on every Conv2d / BatchNorm2d bias)",
         "psi(|dS/dx * x|) per colour channel + sum over Conv2d / BatchNorm2d calls and channels of psi(|b * dS/dz|) "
         "(terminal FB, sycam.evidence.fullgrad), psi = Up o minmax_hw per channel as the paper and grad-cam (the "
         "authors' code min-maxes a layer over all its channels at once). A map at the input's resolution: the CAM "
         "layer is not used", aliases=("full-grad",)),
    Seed("guidedbp", "Guided Backpropagation", "max(abs(GB), k)",
         "Springenberg et al., Striving for Simplicity: The All Convolutional Net, ICLR 2015 workshop, "
         "arXiv:1412.6806",
         "1 forward + 1 guided backward to the input",
         "GB: dS/dx through nn.ReLU modules that pass back only positive gradients at positive inputs "
         "(sycam.evidence.guided). The (3, H, W) gradient image becomes a heatmap by the largest |GB| over the "
         "colour channels, as the saliency maps of Simonyan et al. (arXiv:1312.6034); sum(abs(GB), k) is the "
         "other usual choice", aliases=("guided-backprop", "guidedbackprop", "guided-backpropagation")),
    Seed("guidedgradcam", "Guided Grad-CAM", f"max(abs(GB * resize({_GRADCAM}, GB)), k)",
         "Selvaraju et al., Grad-CAM, ICCV 2017, arXiv:1610.02391 (Guided Grad-CAM); guided backpropagation: "
         "Springenberg et al., arXiv:1412.6806",
         "1 forward + 1 backward to the layer + 1 guided backward to the input",
         "GB * Up(L), L the Grad-CAM map bilinearly resampled to the input's grid (resize(x, like)), made a "
         "heatmap as Guided Backpropagation (largest |.| over the colour channels)",
         aliases=("guided-gradcam", "guided-grad-cam"),
         recipes=(Recipe("grad-cam 1.5.7 GuidedBackpropReLUModel times GradCAM (its cam.py)",
                         f"max(abs(GB * norm(resize({_GRADCAM}, GB), hw)), k)", {},
                         "their product takes the min-max normalised Grad-CAM map: the same map unless the "
                         "Grad-CAM map is positive everywhere"),)),
]

SEEDS: dict[str, Seed] = {s.name: s for s in _SEEDS}
_ALIASES = {re.sub(r"[^a-z0-9+]", "", a.lower()): s.name for s in _SEEDS for a in (s.name, s.title, *s.aliases)}


@dataclass(frozen=True)
class MetaMethod:
    """A method that is not one expression: it runs a CAM many times (on variations of the image,
    several seeds, ...) and combines the results. :func:`sycam.methods.build.make_cam` builds it bound
    to a model, an :class:`~sycam.methods.explainer.Explainer`, with ``params`` and the caller's
    overrides."""

    name: str
    title: str
    formula: str
    reference: str
    cost: str
    notes: str = ""
    aliases: tuple[str, ...] = ()
    params: dict = field(default_factory=dict)


_META = [
    MetaMethod("gpnncam", "GPNN-CAM",
               "phase 1: H = sum_v P_v^T L_v / sum_v P_v^T 1 over GPNN variations v (L_v = base CAM, "
               "default Grad-CAM); phase 2: ridge regression of standardised lower-layer activations onto "
               "P_v H, R = clip(X_source w, 0); mean of the per-layer maps",
               "GPNN-CAM poster (shared/seeds/000_649d90891f27f48d.txt), github.com/tumble-weed/GPNN-CAM; "
               "GPNN: Granot et al., Drop the GAN, CVPR 2022, arXiv:2103.15545",
               "n x super_iters GPNN variations (~0.5-0.9 s CPU each at 224 px) + as many forwards and "
               "backwards + 1 ridge solve per regression layer",
               "parameters: base=gradcam, n=10, super_iters=2, sigma=3, regression_layers (default model: "
               "blocks.10; else the base layers), alpha=1e-4, combine=mean, include_source=True; "
               "see sycam/methods/gpnn_cam.py",
               aliases=("gpnn-cam",)),
]
_META += [
    MetaMethod("metacam", "MetaCAM",
               "T_i = top-k % pixels of component map L_i (L_i > 0); MetaCAM = minmax(1(votes >= m) * mean_i "
               "L_i * 1(T_i)); k per image from a grid by ROAD combined (adaptive thresholding)",
               "Kaczmarek et al., MetaCAM: Ensemble-Based Class Activation Map, arXiv:2307.16863",
               "the components' capture (shared: 2 forwards + 1 backward + 1 LRP backward for the defaults) + "
               "len(grid) x (18 + 1) forwards and 18 imputations per image for ROAD",
               "parameters: components = gradcam, gradcampp, xgradcam, layercam, eigencam, relevancecam; "
               "adaptive = True, grid = 0.1..0.9, metric = road_combined (else k = 0.2), min_votes = 1; "
               "MetaCAM.cre() gives the Cumulative Residual Effect table; see sycam/methods/metacam.py",
               aliases=("meta-cam",), params={"adaptive": True}),
    MetaMethod("adaptivegradcam", "Grad-CAM, adaptive threshold",
               "Grad-CAM * 1(top-k %), k per image from a grid by ROAD combined (MetaCAM's adaptive thresholding "
               "of one CAM)",
               "Kaczmarek et al., MetaCAM, arXiv:2307.16863 (adaptive thresholding); Selvaraju et al., Grad-CAM",
               "1 forward + 1 backward + len(grid) x (18 + 1) forwards and 18 imputations per image",
               "parameters: grid = 0.1..0.9, metric = road_combined",
               aliases=("adaptive-gradcam",), params={"components": ("gradcam",), "adaptive": True}),
]
META_METHODS: dict[str, MetaMethod] = {m.name: m for m in _META}
_META_ALIASES = {re.sub(r"[^a-z0-9+]", "", a.lower()): m.name for m in _META for a in (m.name, m.title, *m.aliases)}


def get_meta(name: str) -> MetaMethod | None:
    """The meta-method called ``name`` (case, dashes and spaces ignored), or None."""
    found = _META_ALIASES.get(_key(name)) if isinstance(name, str) else None
    return META_METHODS[found] if found else None


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9+]", "", name.lower())


def get_seed(name: str) -> Seed:
    """The seed called ``name`` (case, dashes and spaces ignored: 'Grad-CAM++' == 'gradcampp')."""
    found = _ALIASES.get(_key(name))
    if found is None:
        raise UnknownNameError("method", name, SEEDS)
    return SEEDS[found]


def resolve_method(method: str) -> tuple[Expr, Seed | None]:
    """A seed name or expression text -> (tree, seed or None).

    Text that looks like a bare name is a seed name; anything else is parsed.
    """
    text = method.strip()
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9+\-_ ]*", text) and _key(text) in _ALIASES:    # (KPCA_CAM)
        seed = get_seed(text)
        return seed.tree, seed
    if get_meta(text) is not None:
        raise SycamError(f"{text} is a meta-method, not an expression: build it with sycam.api.make_cam "
                         f"(the CLI does)")
    if re.fullmatch(r"[a-z][a-z0-9+\-]*", text) and text not in ("A", "G", "S", "W"):
        # a lower-case bare word that is not a seed: most likely a misspelt seed name
        raise UnknownNameError("method", text, SEEDS, hint="or write an expression such as relu(sum(G * A, k))")
    return parse(text), None
