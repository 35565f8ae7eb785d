"""Dense and embedding targets (issue 12, item 3): SegmentationTarget and EmbeddingSimilarity.

Hand-built models with hand-computed scores, gradients and maps (``PixelHead``: A = x and
y_c = sum_k V_ck A_k per pixel, so S = sum M * y_c and G_k = V_ck M exactly; ``GapEmbedding``:
e = mean_hw(A), so S = cos(e, r) and G_k = (dS/de_k) / hw); each image's target routed to its own
rows in the passes that copy images; clear errors for bad input; and parity with
pytorch-grad-cam's SemanticSegmentationTarget and its tutorial's SimilarityToConceptTarget.
"""
import math
import warnings

import pytest
import torch
import torchvision
from conftest import pearson
from tiny import A0, A1, example_input
from torch import nn

import sycam
from sycam.api import CAM
from sycam.errors import EvidenceError, SycamError
from sycam.evidence.perturbation import score_cam
from sycam.evidence.targets import EmbeddingSimilarity, SegmentationTarget, fix_target, target_rows

V = [[1.0, -1.0], [0.5, 2.0]]            # V[c][k]: class c's weight on channel k, at every pixel


class PixelHead(nn.Module):
    """A "segmentation model": the layer ``feat`` is the input (A = x), class c's score at each
    pixel is y_c = sum_k V_ck A_k (a 1x1 convolution); the output is torchvision's {"out": ...}."""

    def __init__(self, weights=V):
        super().__init__()
        self.feat = nn.Identity()
        self.head = nn.Conv2d(2, len(weights), 1, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor(weights)[:, :, None, None])
        self.eval()

    def forward(self, x):
        return {"out": self.head(self.feat(x))}


class GapEmbedding(nn.Module):
    """An embedding model: e = mean_hw(A), the layer ``feat`` being the input."""

    def __init__(self):
        super().__init__()
        self.feat = nn.Identity()
        self.eval()

    def forward(self, x):
        return self.feat(x).mean(dim=(2, 3))


# y_0 = A0 - A1 = [[-3, 2], [3, 3]],  y_1 = 0.5 A0 + 2 A1 = [[8.5, 1], [1.5, 4]]
Y0 = [[-3.0, 2.0], [3.0, 3.0]]
DIAGONAL = [[1.0, 0.0], [0.0, 1.0]]


def _explain(method, model, x, target, options=None):
    return CAM(method, model, "feat", options=options).explain(x, target)


# ---------------------------------------------------------------------- segmentation, by hand
def test_segmentation_score_gradient_and_maps_by_hand():
    e = _explain("hirescam", PixelHead(), example_input(), SegmentationTarget(0, DIAGONAL))
    assert e.scores.tolist() == [-3.0 + 3.0]                         # S = sum M * y_0
    G = e.evidence.layers["feat"].terms["G"][0][0]
    assert G.tolist() == [[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.0, -1.0]]]   # G_k = V_0k M
    # HiResCAM: relu(sum_k G_k A_k) = relu(M * y_0) = [[0, 0], [0, 3]]
    assert e.layer_maps["feat"][0].tolist() == [[0.0, 0.0], [0.0, 3.0]]
    # Grad-CAM: w_k = mean_hw(G_k) = V_0k * sum(M) / 4 = (0.5, -0.5); relu(0.5 A0 - 0.5 A1)
    e = _explain("gradcam", PixelHead(), example_input(), SegmentationTarget(0, DIAGONAL))
    assert e.layer_maps["feat"][0].tolist() == [[0.0, 1.0], [1.5, 1.5]]


def test_a_box_is_the_mask_of_its_pixels_and_weights_multiply_the_scores():
    box = _explain("hirescam", PixelHead(), example_input(), SegmentationTarget(0, box=(0, 0, 1, 2)))
    assert box.scores.tolist() == [-3.0 + 3.0]                       # column 0, rows 0 and 1
    weights = _explain("hirescam", PixelHead(), example_input(), SegmentationTarget(1, [[0.5, 0.0], [0.0, 2.0]]))
    assert weights.scores.tolist() == [0.5 * 8.5 + 2.0 * 4.0]


def test_without_a_region_the_predicted_pixels_of_the_class_are_summed():
    # argmax over classes: class 0 wins at (0, 1) and (1, 0), class 1 at (0, 0) and (1, 1)
    e = _explain("hirescam", PixelHead(), example_input(), SegmentationTarget(0))
    assert e.scores.tolist() == [2.0 + 3.0]
    assert e.layer_maps["feat"][0].tolist() == [[0.0, 2.0], [3.0, 0.0]]


def test_per_image_classes_and_masks():
    x = torch.cat([example_input(), example_input().flip(-1)])
    masks = torch.tensor([DIAGONAL, [[0.0, 1.0], [0.0, 0.0]]])
    e = _explain("hirescam", PixelHead(), x, SegmentationTarget([0, 1], masks))
    y1_flipped = torch.tensor([[8.5, 1.0], [1.5, 4.0]]).flip(-1)
    assert e.scores.tolist() == [0.0, float(y1_flipped[0, 1])]


def test_per_image_targets_are_routed_to_their_own_rows_in_perturbation_and_noise_passes():
    model = PixelHead()
    x = torch.cat([example_input(), example_input().flip(-1) * 2])
    target = SegmentationTarget([0, 1], torch.tensor([DIAGONAL, [[0.0, 1.0], [1.0, 1.0]]]))
    A = x.clone()
    both = score_cam(model, x, A, target, max_batch=3)              # rows of both images in one call
    alone = [score_cam(model, x[i:i + 1], A[i:i + 1], target_rows(target, torch.tensor([i]))) for i in range(2)]
    assert torch.allclose(both, torch.cat(alone))
    # noise passes: with sigma 0 every noisy copy is the image, so Gv must be each image's own G
    opts = {"noise_n": 3, "noise_sigma": 0.0, "max_batch": 2}       # chunks cut across the two images
    ev = sycam.capture(model, x, ["feat"], target, needs=("Gv", "G"), options=opts)
    G, Gv = ev.layers["feat"].terms["G"][0], ev.layers["feat"].terms["Gv"][0]
    assert torch.equal(Gv, G[:, None].expand_as(Gv))


def test_predicted_pixels_are_fixed_on_the_unperturbed_output():
    target = fix_target(SegmentationTarget(0), PixelHead()(example_input())["out"])
    assert target.mask.tolist() == [[[0.0, 1.0], [1.0, 0.0]]]
    # a perturbed copy (channel 0 x 10, channel 1 x 0) has y_0 = 10 A0 > y_1 = 5 A0 at every pixel: its own
    # argmax would sum all four; the fixed region keeps (0, 1) and (1, 0)
    perturbed = PixelHead()(example_input() * torch.tensor([10.0, 0.0])[None, :, None, None])["out"]
    assert target(perturbed).tolist() == [20.0 + 30.0]


# ---------------------------------------------------------------------- segmentation: bad input
@pytest.mark.parametrize("target,message", [
    (SegmentationTarget(0, [[0.0, 0.0], [0.0, 0.0]]), "mask of image 0 is empty"),
    (SegmentationTarget(0, box=(5, 5, 9, 9)), "box of image 0 is empty"),
    (SegmentationTarget(0, torch.ones(3, 3)), "mask is 3x3 (HxW), the model's output 2x2"),
    (SegmentationTarget(0, torch.ones(3, 2, 2)), "3 segmentation masks for a batch of 1 images"),
    (SegmentationTarget(2, DIAGONAL), "target class out of range [0, 2)"),
])
def test_bad_segmentation_targets_are_clear_errors(target, message):
    with pytest.raises(SycamError) as err:
        _explain("gradcam", PixelHead(), example_input(), target)
    assert message in str(err.value)


def test_an_empty_predicted_region_is_a_clear_error():
    model = PixelHead([[1.0, 1.0], [2.0, 2.0]])          # class 1 wins everywhere on positive inputs
    with pytest.raises(SycamError, match=r"region the model assigns to class \[0\] of image 0 is empty"):
        _explain("gradcam", model, example_input(), SegmentationTarget(0))


def test_segmentation_target_construction_errors():
    with pytest.raises(SycamError, match="needs a class"):
        SegmentationTarget(None)
    with pytest.raises(SycamError, match="a mask or a box, not both"):
        SegmentationTarget(0, DIAGONAL, box=(0, 0, 1, 1))
    with pytest.raises(SycamError, match=r"\(H, W\) for every image or \(b, H, W\)"):
        SegmentationTarget(0, torch.ones(2))
    with pytest.raises(SycamError, match=r"a box is \(x0, y0, x1, y1\)"):
        SegmentationTarget(0, box=(0, 1, 2))


def test_the_wrong_target_for_the_output_says_which_one_fits():
    with pytest.raises(EvidenceError, match="which ClassLogit does not read: say which pixels to explain with Seg"):
        _explain("gradcam", PixelHead(), example_input(), None)
    classifier = nn.Sequential(nn.Flatten(), nn.Linear(8, 3)).eval()
    with pytest.raises(EvidenceError, match=r"reads per-pixel scores \(b, classes, H, W\).*\(1, 3\)"):
        sycam.capture(classifier, example_input(), ["0"], SegmentationTarget(0, DIAGONAL))


# ---------------------------------------------------------------------- embeddings, by hand
def _cosine_gradient(e, r):
    """dS/de for S = cos(e, r) = e.r / (|e| |r|): r / (|e| |r|) - (e.r) e / (|e|^3 |r|)."""
    ne, nr = math.hypot(*e), math.hypot(*r)
    dot = sum(a * b for a, b in zip(e, r))
    return [b / (ne * nr) - dot * a / (ne ** 3 * nr) for a, b in zip(e, r)], dot / (ne * nr)


def test_embedding_similarity_score_gradient_and_map_by_hand():
    e_img = [sum(map(sum, A0)) / 4, sum(map(sum, A1)) / 4]        # (2.5, 1.25)
    r = [1.0, 3.0]
    grad, cos = _cosine_gradient(e_img, r)
    exp = _explain("gradcam", GapEmbedding(), example_input(), EmbeddingSimilarity(torch.tensor(r)))
    assert exp.scores.item() == pytest.approx(cos, rel=1e-6)
    G = exp.evidence.layers["feat"].terms["G"][0][0]
    for k in range(2):                                              # G_k = (dS/de_k) / hw, everywhere
        assert torch.allclose(G[k], torch.full((2, 2), grad[k] / 4), rtol=1e-5, atol=0)
    w = [g / 4 for g in grad]                                       # Grad-CAM: mean_hw(G_k)
    want = torch.relu(w[0] * torch.tensor(A0) + w[1] * torch.tensor(A1))
    assert torch.allclose(exp.layer_maps["feat"][0], want, rtol=1e-5, atol=0)


def test_per_image_references_and_a_zero_embedding():
    x = torch.cat([example_input(), example_input() * -1, torch.zeros(1, 2, 2, 2)])
    refs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    with pytest.warns(UserWarning, match="1 of 3 maps .* are not finite"):
        e = _explain("gradcam", GapEmbedding(), x, EmbeddingSimilarity(refs))
    cos = 2.5 / math.hypot(2.5, 1.25)
    assert e.scores[:2].tolist() == pytest.approx([cos, -cos], rel=1e-6)
    assert math.isnan(e.scores[2]) and e.valid.tolist() == [True, True, False]   # no direction: invalid


def test_bad_reference_embeddings_are_clear_errors():
    with pytest.raises(SycamError, match="reference embedding has 3 values, the model's output embedding 2"):
        _explain("gradcam", GapEmbedding(), example_input(), EmbeddingSimilarity(torch.ones(3)))
    with pytest.raises(SycamError, match="2 reference embeddings for a batch of 1 images"):
        _explain("gradcam", GapEmbedding(), example_input(), EmbeddingSimilarity(torch.ones(2, 2)))
    with pytest.raises(SycamError, match="all zeros"):
        EmbeddingSimilarity(torch.zeros(4))
    with pytest.raises(SycamError, match="per-pixel scores .* which EmbeddingSimilarity does not read"):
        _explain("gradcam", PixelHead(), example_input(), EmbeddingSimilarity(torch.ones(2)))
    with pytest.raises(SycamError, match=r"reads embeddings \(b, d\)"):
        EmbeddingSimilarity(torch.ones(2))(torch.ones(1, 2, 2, 2))


# ---------------------------------------------------------------------- parity with pytorch-grad-cam
class SimilarityToConceptTarget:
    """pytorch-grad-cam's tutorial target (Pixel Attribution for embeddings), verbatim: not in the
    1.5.7 package."""

    def __init__(self, features):
        self.features = features

    def __call__(self, model_output):
        cos = torch.nn.CosineSimilarity(dim=0)
        return cos(model_output, self.features)


class OutOnly(nn.Module):
    """grad-cam's SegmentationModelOutputWrapper: the dict's "out"."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["out"]


def _gradcam(model, layer, x, targets):
    from pytorch_grad_cam import GradCAM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with GradCAM(model=model, target_layers=[layer]) as cam:
            return torch.from_numpy(cam(input_tensor=x, targets=targets))


def _small_fcn():
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.fcn import FCN, FCNHead
    torch.manual_seed(0)
    return FCN(IntermediateLayerGetter(torchvision.models.resnet18(), {"layer4": "out"}), FCNHead(512, 5)).eval()


def test_segmentation_target_matches_gradcam_semantic_segmentation_target():
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
    model = _small_fcn()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    masks = torch.zeros(2, 64, 64)
    masks[0, 10:40, 20:60] = 1
    masks[1, 30:60, 5:30] = 1
    ref = _gradcam(OutOnly(model), model.backbone.layer4, x,
                   [SemanticSegmentationTarget(c, m.numpy()) for c, m in zip([2, 3], masks)])
    ours = CAM("gradcam", model, "backbone.layer4")(x, SegmentationTarget([2, 3], masks))
    for i in range(2):
        assert float(ref[i].std()) > 0.05                # a map, not a blank
        assert pearson(ours[i], ref[i]) >= 0.999


def test_embedding_similarity_matches_gradcams_similarity_to_concept_target():
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    model.fc = nn.Identity()
    model.eval()
    x = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        concept = model(x[2:3])[0]
    for layer in ("layer4", "layer3"):
        ref = _gradcam(model, model.get_submodule(layer), x[:2], [SimilarityToConceptTarget(concept)] * 2)
        ours = CAM("gradcam", model, layer)(x[:2], EmbeddingSimilarity(concept))
        for i in range(2):
            assert float(ref[i].std()) > 0.05            # a map, not a blank
            assert pearson(ours[i], ref[i]) >= 0.999, (layer, i)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fcn_resnet50", "deeplabv3_resnet50"])
def test_torchvision_segmentation_models_match_gradcams_tutorial(name):
    """grad-cam's segmentation tutorial: the mask is the pixels predicted as the class, here the most
    predicted one (random weights); sycam's SegmentationTarget without a region builds the same."""
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = sycam.load_model(name)
    model = bundle.model
    x = torch.randn(1, 3, 160, 160, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        predicted = model(x)["out"].argmax(1)[0]
    c = int(predicted.flatten().mode().values)
    mask = (predicted == c).float()
    ref = _gradcam(OutOnly(model), model.get_submodule(bundle.default_layer), x,
                   [SemanticSegmentationTarget(c, mask.numpy())])
    ours = sycam.CAM("gradcam", bundle)(x, SegmentationTarget(c))
    assert bundle.default_layer == "backbone.layer4"
    assert float(ref.std()) > 0.05                   # a map, not a blank
    assert pearson(ours[0], ref[0]) >= 0.999
