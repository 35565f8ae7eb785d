"""The search space: parsing, validation errors before any work, seed membership."""
import json

import pytest

from sycam.errors import UnknownNameError
from sycam.grammar import parse
from sycam.methods.seeds import SEEDS
from sycam.search.space import (
    DEFAULT_OPERATORS,
    GRADIENT_SEEDS,
    OpSpec,
    SearchSpace,
    SearchSpaceError,
    load_space,
    parse_operator,
)


@pytest.mark.parametrize("name", GRADIENT_SEEDS)
def test_every_gradient_seed_is_in_the_default_space(name):
    space = SearchSpace.default()
    cand = space.candidate(SEEDS[name].tree)
    assert space.why_not(cand) is None
    assert cand.size <= space.max_size and cand.depth <= space.max_depth
    # and the wrapper gives back the seed's own expression
    assert space.heatmap(cand) == SEEDS[name].tree


def test_every_gradient_seed_is_in_the_heatmap_space_with_sum_over_k():
    space = SearchSpace(result="heatmap", operators=list(DEFAULT_OPERATORS) + ["sum:k"], max_size=25)
    for name in GRADIENT_SEEDS:
        assert space.contains(SEEDS[name].tree), (name, space.why_not(SEEDS[name].tree))


def test_a_heatmap_space_with_sum_over_k_and_pc1_enqueues_the_heatmap_seeds_too():
    space = SearchSpace(result="heatmap", operators=list(DEFAULT_OPERATORS) + ["sum:k", "pc1"], max_size=25)
    assert set(space.seeds()) == set(GRADIENT_SEEDS) | {"gradcamelementwise", "eigengradcam"}
    assert set(SearchSpace.default().seeds()) == set(GRADIENT_SEEDS)      # not of the form relu(sum(W * A, k))


def test_weights_space_holds_the_channel_weight_seeds_only():
    space = SearchSpace(result="weights")
    assert set(space.seeds()) == {"gradcam", "gradcampp", "xgradcam"}
    with pytest.raises(SearchSpaceError, match="relu\\(sum\\(W \\* A, k\\)\\)"):
        space.candidate(parse("relu(sum(A, k))"))


def test_operator_spellings():
    assert parse_operator("+") == OpSpec("add")
    assert parse_operator("sum(hw)") == parse_operator("sum:wh") == parse_operator("sum_hw") == OpSpec("sum", "hw")
    assert parse_operator(" softmax : k ") == OpSpec("softmax", "k")
    space = SearchSpace(operators="+, *, relu, mean(hw)", terminals="A,G", constants="2", max_size="5")
    assert [str(o) for o in space.operators] == ["add", "mul", "relu", "mean:hw"]
    assert space.max_size == 5 and space.constants == (2.0,)


@pytest.mark.parametrize("options, error, text", [
    ({"operators": "+,rleu"}, UnknownNameError, "did you mean 'relu'"),
    ({"terminals": "A,Gz"}, UnknownNameError, "did you mean 'G'"),
    ({"result": "heatmaps"}, UnknownNameError, "did you mean 'heatmap'"),
    ({"operators": "sum"}, SearchSpaceError, "needs the axes"),
    ({"operators": "mean:hz"}, SearchSpaceError, "not z"),
    ({"operators": "relu:hw"}, SearchSpaceError, "takes no axes"),
    ({"operators": "where"}, SearchSpaceError, "not enumerated"),
    ({"constants": "1,two"}, SearchSpaceError, "numbers"),
    ({"constants": [float("inf")]}, SearchSpaceError, "finite"),
    ({"max_size": 0}, SearchSpaceError, "between 1"),
    ({"max_depth": "deep"}, SearchSpaceError, "integer"),
    ({"terminals": "X:khw"}, SearchSpaceError, "include b"),
    # impossible bounds: channel weights need a reduction over hw ...
    ({"result": "weights", "operators": "+,*,relu"}, SearchSpaceError, "reduction over hw"),
    # ... and at least two nodes; a heatmap needs sum over k
    ({"result": "weights", "max_size": 1}, SearchSpaceError, "too small: the smallest"),
    ({"result": "heatmap"}, SearchSpaceError, "sum:k"),
])
def test_malformed_spaces_fail_when_built(options, error, text):
    with pytest.raises(error, match=text):
        SearchSpace(**options)


def test_unknown_config_key_has_close_match(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('[space]\noperatros = ["+"]\n')
    with pytest.raises(UnknownNameError, match="did you mean 'operators'"):
        load_space(path)


def test_toml_and_json_files_round_trip(tmp_path):
    toml = tmp_path / "space.toml"
    toml.write_text('result = "weights"\nterminals = ["A", "G", "score:bk"]\n'
                    'operators = ["+", "/", "relu", "sum(hw)"]\nconstants = [2]\nmax_size = 9\nmax_depth = 6\n')
    space = load_space(toml)
    assert space.result == "weights" and space.terminal_axes == {"A": "bkhw", "G": "bkhw", "score": "bk"}
    assert space.max_size == 9 and space.max_depth == 6
    js = tmp_path / "space.json"
    js.write_text(json.dumps({"space": space.to_dict()}))
    assert load_space(js) == space
    assert load_space(js, max_size=7).max_size == 7
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SearchSpaceError, match="not valid JSON"):
        load_space(bad)


def test_why_not_names_the_reason():
    space = SearchSpace(operators="+,*,relu,sum:hw", terminals="A,G", constants="2", max_size=7)
    assert space.why_not(parse("sum(relu(G) * 2, hw)")) is None
    assert "constant 3" in space.why_not(parse("sum(relu(G) * 3, hw)"))
    assert "operator mean:hw" in space.why_not(parse("mean(G, hw)"))
    assert "terminal G2" in space.why_not(parse("G2"))
    assert "size 9 > max_size 7" in space.why_not(parse("sum(relu(G) * A * G * G, hw)"))


def test_excluding_a_seed_drops_the_seeds_that_contain_it():
    space = SearchSpace.default()
    assert "ssgradcampp" in space.seeds()
    kept = space.seeds(exclude=["gradcampp"])
    assert "gradcampp" not in kept and "ssgradcampp" not in kept and "gradcam" in kept
    # by expression too
    kept = space.seeds(exclude=[space.candidate(SEEDS["xgradcam"].tree)])
    assert set(kept) == set(GRADIENT_SEEDS) - {"xgradcam"}
    # SSGrad-CAM's map is Grad-CAM's weights times a space map: excluding Grad-CAM drops it too
    assert set(space.seeds(exclude=["gradcam"])) == set(GRADIENT_SEEDS) - {"gradcam", "ssgradcam"}


def test_useful_types_prune_dead_ends():
    space = SearchSpace(result="weights", operators="*,sum:hw", terminals="A,G,S", constants=[], max_size=3)
    # a scalar per image (S) can only reach {b, k} by multiplying with a channel term: >= 3 more nodes
    assert space.completion(frozenset("b")) == 3
    assert not space.useful(frozenset("b"), 1)
    assert space.useful(frozenset("bkhw"), 1)
