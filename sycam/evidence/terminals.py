"""The terminals: one record per name that expressions read from the evidence.

A :class:`Terminal` says what a name is (axes, doc), what it costs, which evidence options it
reads (:class:`~sycam.evidence.options.Option`, with their defaults) and how to compute it from
a :class:`Context`: the model, the images, the target, the options, one layer and the terminals
it needs, already computed. :data:`TERMINALS` is the registry: the grammar types expressions
with it (``infer(expr, TERMINALS)``) and :func:`~sycam.evidence.capture.capture` computes what
an expression reads from it, every terminal once per layer, in registration order (a terminal's
needs are registered before it). A pass that gives several terminals (the input scales, the
noisy copies, LRP, the Hessian diagonals) runs once per capture through :meth:`Context.once`.

A terminal of your own is one file (README, "Adding a terminal")::

    from sycam.evidence.terminals import Terminal, register_terminal

    register_terminal(Terminal("Gabs", "bkhw", "|dS/dA|", lambda c: c["G"].abs(), needs=("G",)))

Importing this module loads no torch (``sycam check`` reads the registry): the compute functions
import the evidence modules they call.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import EvidenceError, SycamError, UnknownNameError
from ..grammar.ops import AXES, BATCH, OPS
from ..grammar.printer import TERMINAL_LATEX
from .options import OPTIONS, EvidenceOptions, Option, declare

if TYPE_CHECKING:
    from torch import Tensor, nn

    from .forward import Evidence
    from .layers import LayerRef
    from .targets import Target


@dataclass
class Context:
    """What a terminal's compute function reads, for one layer of one capture."""

    model: nn.Module
    x: Tensor                     # the images, on the model's device
    layers: list[LayerRef]        # every layer of the capture
    layer: LayerRef               # the layer whose term is computed
    target: Target
    output: Any                   # how to find the scores in a non-tensor model output
    options: EvidenceOptions
    evidence: Evidence            # the first pass (logits, scores) and every term computed so far
    wanted: frozenset[str]        # every terminal this capture computes
    shared: dict[Callable, Any] = field(default_factory=dict, repr=False)   # results of once()

    def __getitem__(self, name: str) -> Tensor:
        """Terminal ``name`` at this layer: one of the terminal's needs, computed before it."""
        return self.evidence.layers[self.layer.name].terms[name][0]

    @property
    def logits(self) -> Tensor:
        """The first pass's logits (none for a target that reads the raw output: see ``Terminal.needs_logits``)."""
        if self.evidence.logits is None:
            raise EvidenceError("no logits: the target read the raw model output (e.g. a detector's)")
        return self.evidence.logits

    def once(self, run: Callable[[Context], Any]) -> Any:
        """``run(self)``, computed the first time this capture asks for it (``run``: a module-level
        function): a pass that gives several terminals, or every layer at once."""
        if run not in self.shared:
            self.shared[run] = run(self)
        return self.shared[run]


@dataclass(frozen=True)
class Terminal:
    """A name the language reads from the evidence, and how capture computes it."""

    name: str
    axes: str                                  # of the computed tensor, in storage order (b s v k h w)
    doc: str
    compute: Callable[[Context], Tensor]       # this layer's tensor
    cost: str = "none"                         # model passes beyond the first (forward: A and S)
    needs: tuple[str, ...] = ()                # terminals the compute function reads from the context
    options: tuple[Option, ...] = ()           # the evidence options it reads
    needs_logits: bool = True                  # a classifier's (False: a detector's target may read it too)
    latex: str = ""                            # its LaTeX (default: grammar.printer.terminal_latex's rule)
    # model passes (forwards or backwards at 224 px) per image beyond the first pass, from the layer's
    # channels K, positions HW and the options (work other than passes in pass equivalents: MI-CAM's K
    # histograms ~ K / 40, measured); terminals with the same ``shares`` run the same passes (counted once)
    passes: Callable[[int, int, EvidenceOptions], float] = lambda k, hw, o: 0.0
    shares: str = ""


#: every terminal, by name, in registration order (a terminal after those it needs)
TERMINALS: dict[str, Terminal] = {}


def register_terminal(terminal: Terminal) -> Terminal:
    """Add ``terminal`` to the language and to capture, its options to
    :class:`~sycam.evidence.options.EvidenceOptions`; returns it."""
    name, axes = terminal.name, terminal.axes
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or name in OPS:
        raise SycamError(f"a terminal's name is an identifier that is not an operator, not {name!r}")
    if name in TERMINALS:
        raise SycamError(f"terminal {name} exists ({TERMINALS[name].doc}); unregister_terminal({name!r}) first")
    order = BATCH + AXES
    if "b" not in axes or "".join(a for a in order if a in axes) != axes or len(set(axes)) != len(axes):
        raise SycamError(f"terminal {name}: axes {axes!r} must include b, each once, in the order {order}")
    for need in terminal.needs:
        if need not in TERMINALS:
            raise UnknownNameError("terminal", need, TERMINALS, hint=f"{name} needs it: register it first")
    for option in terminal.options:
        if OPTIONS.get(option.name, option) != option:
            raise SycamError(f"terminal {name}: evidence option {option.name} is already declared as "
                             f"{OPTIONS[option.name]}; read that one")
    for option in terminal.options:
        declare(option)
    if terminal.latex:
        TERMINAL_LATEX[name] = terminal.latex
    TERMINALS[name] = terminal
    return terminal


def unregister_terminal(name: str) -> Terminal:
    """Remove terminal ``name``, and the options no other terminal reads; returns its record."""
    if name not in TERMINALS:
        raise UnknownNameError("terminal", name, TERMINALS)
    users = [t.name for t in TERMINALS.values() if name in t.needs]
    if users:
        raise SycamError(f"{', '.join(users)} need terminal {name}: unregister them first")
    terminal = TERMINALS.pop(name)
    TERMINAL_LATEX.pop(name, None)
    still_read = {o.name for t in TERMINALS.values() for o in t.options}
    for option in terminal.options:
        if option.name not in still_read:
            del OPTIONS[option.name]
    return terminal


def needed_terms(names: Iterable[str]) -> set[str]:
    """``names`` and every terminal they need, transitively (unknown names are kept: capture refuses them)."""
    out: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            todo.extend(TERMINALS[name].needs if name in TERMINALS else ())
    return out


# ----------------------------------------------------------------------------- the built-in terminals

def _options(*names: str) -> tuple[Option, ...]:
    return tuple(OPTIONS[n] for n in names)


def _first_pass(name: str) -> Callable[[Context], Tensor]:
    """Read ``name`` from capture's first pass (:func:`~sycam.evidence.forward.single_pass`: one
    forward, and the backward(s) of the gradient terminals wanted)."""
    return lambda c: c[name]


def _power(name: str, n: int) -> Callable[[Context], Tensor]:
    return lambda c: c[name].pow(n)


def _derivatives(c: Context) -> dict[str, dict[str, Tensor]]:
    """H2 and/or H3 of every layer, by autograd over the model's suffix after the layer."""
    # deferred: keeps start-up torch-free
    from .derivatives import true_derivatives
    from .split import split_model
    from .tokens import map_suffix

    wanted = c.wanted & {"H2", "H3"}
    return {ref.name: true_derivatives(map_suffix(split_model(c.model, ref.name, c.x, check=False), ref.reshape,
                                                  ref.name),
                                       c.evidence.layers[ref.name].A, c.target, c.logits, c.output, c.options, wanted)
            for ref in c.layers}


def _relevance(c: Context) -> dict[str, Tensor]:
    from .relevance import relevance  # deferred: keeps start-up torch-free

    return relevance(c.model, c.x, c.layers, c.target, c.output, c.options)


def _score(c: Context) -> Tensor:
    from .perturbation import score_cam  # deferred: keeps start-up torch-free

    o = c.options
    return score_cam(c.model, c.x, c["A"], c.target, variant=o.score_variant, max_batch=o.max_batch,
                     skip_constant=o.skip_constant, top_k=o.top_k, output=c.output)


def _score_ss(c: Context) -> Tensor:
    # deferred: keeps start-up torch-free
    import torch

    from .perturbation import ss_cam

    o = c.options
    return ss_cam(c.model, c.x, c["A"], c.target, n=o.ss_n, sigma=o.ss_sigma, noise=o.ss_noise,
                  max_batch=o.max_batch, skip_constant=o.skip_constant, top_k=o.top_k, output=c.output,
                  generator=torch.Generator(device=c.x.device).manual_seed(o.seed))


def _score_is(c: Context) -> Tensor:
    from .perturbation import is_cam  # deferred: keeps start-up torch-free

    o = c.options
    return is_cam(c.model, c.x, c["A"], c.target, n=o.is_n, schedule=o.is_schedule, max_batch=o.max_batch,
                  skip_constant=o.skip_constant, top_k=o.top_k, output=c.output, softmax=False)


def _ablation(c: Context) -> Tensor:
    # deferred: keeps start-up torch-free
    from .perturbation import ablation_scores
    from .split import split_model
    from .tokens import map_suffix

    suffix = map_suffix(split_model(c.model, c.layer.name, c.x, check=False), c.layer.reshape, c.layer.name)
    return ablation_scores(suffix, c["A"].to(c.x.device), c.target, value=c.options.ablation_value,
                           max_batch=c.options.suffix_rows(), output=c.output)


def _mi(c: Context) -> Tensor:
    from .perturbation import mi_scores  # deferred: keeps start-up torch-free

    return mi_scores(c.x, c["A"], bins=c.options.mi_bins, max_batch=c.options.suffix_rows())


def _scales(c: Context) -> dict[str, dict[str, Tensor]]:
    from .axes import scale_terms  # deferred: keeps start-up torch-free

    return scale_terms(c.model, c.x, c.layers, c.target, c.logits, c.output, c.options)


def _noise(c: Context) -> dict[str, dict[str, Tensor]]:
    from .axes import noise_terms  # deferred: keeps start-up torch-free

    return noise_terms(c.model, c.x, c.layers, c.target, c.logits, c.output, c.options)


def _from(run: Callable[[Context], dict], name: str | None = None) -> Callable[[Context], Tensor]:
    """This layer's ``name`` (or whole entry) in the result of the shared pass ``run``."""
    if name is None:
        return lambda c: c.once(run)[c.layer.name]
    return lambda c: c.once(run)[c.layer.name][name]


_PERTURBED = ("max_batch", "skip_constant", "top_k")   # every masked-input family reads these
_HESSIAN = _options("derivatives", "hutchinson_n", "max_hessian_elements", "max_batch", "seed")
_NOISE = _options("noise_n", "noise_sigma", "seed", "max_batch")

def _scale_passes(k: int, hw: int, o: EvidenceOptions) -> float:
    """CAMERAS: a forward and a backward per scale, in passes at 224 px (a pass costs its pixels)."""
    return 2 * sum((s / 224) ** 2 for s in o.scales)


for _t in [
    # the first pass: one forward gives A and S, one backward G (and W, through the head); HA, Gx, FB
    # and GB below come from the same forward
    Terminal("A", "bkhw", "activations of the layer", _first_pass("A"), needs_logits=False),
    Terminal("G", "bkhw", "gradient dS/dA of the target score", _first_pass("G"), "1 backward", needs_logits=False),
    Terminal("G2", "bkhw", "Grad-CAM++ closed form G^2 (= d2 e^S/dA2 / e^S for piecewise-linear heads)",
             _power("G", 2), "1 backward", needs=("G",), needs_logits=False),
    Terminal("G3", "bkhw", "Grad-CAM++ closed form G^3", _power("G", 3), "1 backward", needs=("G",),
             needs_logits=False),
    # true diagonal derivatives, from autograd over the model's suffix (sycam.evidence.derivatives)
    Terminal("H2", "bkhw", "true diagonal second derivative d2S/dA2 (autograd, opt-in)", _from(_derivatives, "H2"),
             "one Hessian-vector product per layer element, or N for an estimate", needs=("A",), options=_HESSIAN,
             passes=lambda k, hw, o: k * hw if o.derivatives == "exact" else o.hutchinson_n),
    Terminal("H3", "bkhw", "true diagonal third derivative d3S/dA3 (autograd, opt-in)", _from(_derivatives, "H3"),
             "per layer element", needs=("A",), options=_options("max_hessian_elements", "max_batch"),
             passes=lambda k, hw, o: k * hw),
    Terminal("HA", "bkhw", "H A: the Hessian d2S/dA2 times A, one Hessian-vector product (ShapleyCAM)",
             _first_pass("HA"), "1 backward to the layer keeping its graph + 1 Hessian-vector product",
             passes=lambda k, hw, o: 2),
    Terminal("S", "b", "target score (e.g. the class logit)", _first_pass("S"), needs_logits=False),
    Terminal("W", "bk", "classifier weights dS/dz at the input z of a GAP + linear head (CAM)", _first_pass("W"),
             "1 backward through the head"),
    Terminal("R", "bkhw", "LRP relevance of the target score at the layer's output (options lrp_rule, "
             "lrp_contrast; sycam.evidence.relevance)", _from(_relevance), "1 forward + 1 LRP backward to the layer",
             options=_options("lrp_rule", "lrp_epsilon", "lrp_contrast"), passes=lambda k, hw, o: 2),
    # at the input's resolution (k: the colour channels, h w: the input's grid); a layer's map meets
    # them through resize(x, like). Refused on detectors, whose maps pass through their input frame.
    Terminal("X", "bkhw", "the model input x", lambda c: c.x),
    Terminal("Gx", "bkhw", "input gradient dS/dx", _first_pass("Gx"), "1 backward to the input"),
    Terminal("FB", "bhw", "FullGrad's bias term: sum over Conv2d / BatchNorm2d calls l and channels c of "
             "Up(minmax_hw |b_lc dS/dz_lc|), z_lc the layer's output (sycam.evidence.fullgrad)", _first_pass("FB"),
             "1 backward to the input, with a probe on every Conv2d / BatchNorm2d bias"),
    Terminal("GB", "bkhw", "guided-backpropagation input gradient: dS/dx through ReLUs passing back only "
             "positive gradients (sycam.evidence.guided)", _first_pass("GB"),
             "1 backward to the input through guided ReLUs (a second backward when other gradients are read)",
             passes=lambda k, hw, o: 1),
    # channel scores from perturbed inputs (sycam.evidence.perturbation), with the CAM's own target
    Terminal("score", "bk", "Score-CAM: the target on x * M_k, M_k = minmax(Up(A_k))", _score, "K forwards",
             needs=("A",), options=_options("score_variant", *_PERTURBED), passes=lambda k, hw, o: k),
    Terminal("score_ss", "bk", "SS-CAM: Score-CAM averaged over N noisy masks (or inputs)", _score_ss,
             "N K forwards", needs=("A",), options=_options("ss_n", "ss_sigma", "ss_noise", "seed", *_PERTURBED),
             passes=lambda k, hw, o: o.ss_n * k),
    Terminal("score_is", "bk", "IS-CAM: Score-CAM averaged over N scaled masks (before its softmax)", _score_is,
             "N K forwards", needs=("A",), options=_options("is_n", "is_schedule", *_PERTURBED),
             passes=lambda k, hw, o: o.is_n * k),
    Terminal("ablation", "bk", "Ablation-CAM: (y - y with channel k zeroed) / y", _ablation,
             "K passes of the layers after", needs=("A",), options=_options("ablation_value", "max_batch"),
             passes=lambda k, hw, o: k),
    Terminal("mi", "bk", "MI-CAM: mutual information of Up(A_k) and the grey image", _mi, "K histograms",
             needs=("A",), options=_options("mi_bins", "max_batch"), passes=lambda k, hw, o: k / 40),
    # evidence over input scales (CAMERAS) and noise samples (Smooth Grad-CAM++): sycam.evidence.axes
    Terminal("As", "bskhw", "activations at each input scale, resized to a common size", _from(_scales, "As"),
             "R forwards + R backwards", options=_options("scales", "scale_size"),
             passes=_scale_passes, shares="scales"),
    Terminal("Gs", "bskhw", "gradients at each input scale, resized to a common size", _from(_scales, "Gs"),
             "R forwards + R backwards", options=_options("scales", "scale_size"),
             passes=_scale_passes, shares="scales"),
    Terminal("keep", "bs", "1 where the scale's top-1 equals the top-1 on the original images", _from(_scales, "keep"),
             "R forwards", options=_options("scales"), passes=_scale_passes, shares="scales"),
    Terminal("Av", "bvkhw", "activations of noisy copies x + N(0, sigma^2)", _from(_noise, "Av"),
             "N forwards + N backwards", options=_NOISE, passes=lambda k, hw, o: 2 * o.noise_n, shares="noise"),
    Terminal("Gv", "bvkhw", "gradients of noisy copies", _from(_noise, "Gv"), "N forwards + N backwards",
             options=_NOISE, passes=lambda k, hw, o: 2 * o.noise_n, shares="noise"),
    Terminal("G2v", "bvkhw", "Gv^2 (Grad-CAM++ closed form per noise sample)", _power("Gv", 2),
             "N forwards + N backwards", needs=("Gv",), passes=lambda k, hw, o: 2 * o.noise_n, shares="noise"),
    Terminal("G3v", "bvkhw", "Gv^3", _power("Gv", 3), "N forwards + N backwards", needs=("Gv",),
             passes=lambda k, hw, o: 2 * o.noise_n, shares="noise"),
]:
    register_terminal(_t)
