"""Token layers as (b, k, h, w) evidence (sycam.evidence.tokens) and layers followed by in-place ops.

The toy transformers below carry timm's class and module names (``VisionTransformer`` with
``blocks[i].norm1`` and ``num_prefix_tokens``; ``SwinTransformer`` with ``layers[i].blocks[j]``,
channel-last), so they also stand in for timm (not installed) in the family detection. Their
references recompute the forward by hand from the layer's output, as a leaf, and take dS/d(tokens)
with autograd: no hook, no reshape of sycam's is involved.
"""
import math

import pytest
import torch
import torchvision
from torch import nn

import sycam
from sycam.errors import EvidenceError, SycamError
from sycam.evidence.layers import default_layer, list_layers, resolve_layer
from sycam.evidence.tokens import ChannelLast, TokenGrid, map_suffix, parse_reshape
from sycam.models import draw_zero_linears, token_family

DT = torch.float64


class Attention(nn.Module):
    """One-head self-attention: softmax(q k^T / sqrt(c)) v, then a projection."""

    def __init__(self, c):
        super().__init__()
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        weights = (q @ k.transpose(-2, -1) / math.sqrt(x.shape[-1])).softmax(-1)
        return self.proj(weights @ v)


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(c), Attention(c)
        self.norm2, self.mlp = nn.LayerNorm(c), nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))

    def rest(self, x, n1):
        """The block after its first norm, whose output is ``n1``."""
        x = x + self.attn(n1)
        return x + self.mlp(self.norm2(x))

    def forward(self, x):
        return self.rest(x, self.norm1(x))


class VisionTransformer(nn.Module):
    """timm's layout: patch_embed, a class token, position embeddings, blocks, norm, head on the class token."""

    num_prefix_tokens = 1

    def __init__(self, c=6, patch=4, grid=(3, 3), classes=5, depth=2):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, c, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, c))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid[0] * grid[1], c))
        self.blocks = nn.Sequential(*[Block(c) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(c), nn.Linear(c, classes)

    def tokens(self, x):
        t = self.patch_embed(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), t], dim=1) + self.pos_embed

    def after(self, x, n1):
        """Logits from the last block's input ``x`` and its first norm's output ``n1``."""
        return self.head(self.norm(self.blocks[-1].rest(x, n1))[:, 0])

    def forward(self, x):
        x = self.tokens(x)
        for block in list(self.blocks)[:-1]:
            x = block(x)
        return self.after(x, self.blocks[-1].norm1(x))


def toy_vit(grid=(3, 3), seed=0):
    torch.manual_seed(seed)
    return VisionTransformer(grid=grid).to(DT).eval()


def images(b=2, h=12, w=12, seed=1):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=DT)


def vit_reference(model, x, classes):
    """(tokens n1 of blocks[-1].norm1 as a leaf, dS/dn1, S) by the hand-written forward."""
    before = model.blocks[:-1](model.tokens(x))
    n1 = model.blocks[-1].norm1(before).detach().requires_grad_(True)
    scores = model.after(before, n1)[torch.arange(len(x)), classes]
    (g,) = torch.autograd.grad(scores.sum(), n1)
    return n1.detach(), g, scores.detach(), before.detach()


def grid_by_hand(tokens, h, w, prefix=1):
    """m[b, k, i, j] = tokens[b, prefix + i * w + j, k], one entry at a time."""
    b, _, c = tokens.shape
    m = torch.empty(b, c, h, w, dtype=tokens.dtype)
    for n in range(b):
        for k in range(c):
            for i in range(h):
                for j in range(w):
                    m[n, k, i, j] = tokens[n, prefix + i * w + j, k]
    return m


def gradcam_by_hand(A, G):
    """Grad-CAM (Selvaraju et al. 2017): relu(sum_k mean_hw(G_k) A_k)."""
    return torch.relu((G.mean(dim=(2, 3), keepdim=True) * A).sum(1))


CLASSES = torch.tensor([3, 1])


def test_token_grid_places_token_p_plus_i_w_plus_j_at_cell_i_j_and_inverts():
    t = torch.arange(2 * 9 * 4, dtype=DT).reshape(2, 9, 4)        # 3 prefix tokens + a 2x3 grid
    m = TokenGrid(grid=(2, 3))(t)
    assert torch.equal(m, grid_by_hand(t, 2, 3, prefix=3))
    assert torch.equal(TokenGrid(prefix=5)(t), grid_by_hand(t, 2, 2, prefix=5))
    assert torch.equal(TokenGrid(grid=(2, 3)).inverse(m, t), t)
    changed = TokenGrid(grid=(2, 3)).inverse(m + 100, t)
    assert torch.equal(changed[:, :3], t[:, :3]) and torch.equal(changed[:, 3:], t[:, 3:] + 100)
    s = torch.randn(2, 3, 5, 4, dtype=DT)                            # Swin: (b, h, w, c)
    assert torch.equal(ChannelLast()(s)[1, 2, 0, 4], s[1, 0, 4, 2])
    assert torch.equal(ChannelLast().inverse(ChannelLast()(s), s), s)


def test_toy_vit_gradcam_by_hand():
    """Two blocks, a class token, a 3x3 grid: A, G and the Grad-CAM map against the hand-written forward."""
    model, x = toy_vit(), images()
    assert default_layer(model, x[:1]) == "blocks.1.norm1"          # timm's names: the last block's norm1
    exp = sycam.CAM("gradcam", model).explain(x, CLASSES)
    n1, g, scores, _ = vit_reference(model, x, CLASSES)
    A, G = grid_by_hand(n1, 3, 3), grid_by_hand(g, 3, 3)
    layer = exp.evidence.layers["blocks.1.norm1"]
    assert torch.allclose(layer.A, A, rtol=1e-12, atol=1e-12)
    assert torch.allclose(layer.terms["G"][0], G, rtol=1e-12, atol=1e-12)
    assert torch.allclose(exp.scores, scores, rtol=1e-12)
    want = gradcam_by_hand(A, G)
    assert want.amax() > 0 and not torch.allclose(want, want.flatten(1).mean(1)[:, None, None])
    assert torch.allclose(exp.layer_maps["blocks.1.norm1"], want, rtol=1e-10, atol=1e-12)


def test_every_way_of_giving_the_reshape_gives_the_same_evidence():
    model, x = toy_vit(), images()
    want = sycam.CAM("layercam", model, "blocks.1.norm1").explain(x, CLASSES).layer_maps["blocks.1.norm1"]

    def gradcam_recipe(t):             # pytorch-grad-cam's reshape_transform for a ViT
        return t[:, 1:, :].reshape(t.size(0), 3, 3, t.size(2)).transpose(2, 3).transpose(1, 2)

    for reshape in ("vit", "vit:3x3", "VIT", TokenGrid(prefix=1), gradcam_recipe):
        got = sycam.CAM("layercam", model, "blocks[-1].norm1", reshape=reshape).explain(x, CLASSES)
        assert torch.equal(got.layer_maps["blocks[-1].norm1"], want), reshape
    assert torch.equal(sycam.explain("layercam", model, x, "blocks.1.norm1", CLASSES, reshape="vit"),
                       sycam.CAM("layercam", model, "blocks.1.norm1")(x, CLASSES))
    with pytest.raises(EvidenceError, match=r"blocks.1.norm1 gives shape \(2, 10, 6\).*reshape='vit'"):
        sycam.CAM("gradcam", model, "blocks.1.norm1", reshape="none")(x)


def test_a_token_count_that_is_no_square_grid_says_how_to_give_the_grid():
    model, x = toy_vit(grid=(2, 3)), images(h=8, w=12)                 # 1 + 6 tokens
    with pytest.raises(EvidenceError) as err:
        sycam.CAM("gradcam", model)(x)
    text = str(err.value)
    assert "layer blocks.1.norm1" in text and "7 tokens" in text and "6 is not a square grid" in text
    assert "reshape='vit:2x3'" in text and "--reshape vit:HxW" in text
    exp = sycam.CAM("gradcam", model, reshape="vit:2x3").explain(x, CLASSES)
    n1, g, _, _ = vit_reference(model, x, CLASSES)
    want = gradcam_by_hand(grid_by_hand(n1, 2, 3), grid_by_hand(g, 2, 3))
    assert torch.allclose(exp.layer_maps["blocks.1.norm1"], want, rtol=1e-10, atol=1e-12)
    assert exp.maps.shape == (2, 8, 12)


def test_a_reshape_that_does_not_fit_is_a_clear_error():
    model, x = toy_vit(), images()
    cases = [("swin", r"blocks.1.norm1: it gives shape \(2, 10, 6\), not a channel-last map"),
             ("vit:4x4", r"blocks.1.norm1: the grid 4x4 needs 16 tokens, the layer gives 10"),
             (lambda t: t.reshape(len(t), 6, 2, 2), r"blocks.1.norm1: the reshape failed on its output of shape "
                                                    r"\(2, 10, 6\) \(RuntimeError"),
             (lambda t: t[:, 1:], r"the reshape turned its output \(2, 10, 6\) into \(2, 9, 6\), not \(b, k, h, w\)")]
    for reshape, message in cases:
        with pytest.raises(EvidenceError, match=message):
            sycam.CAM("gradcam", model, "blocks.1.norm1", reshape=reshape)(x)
    with pytest.raises(EvidenceError, match=r"patch_embed: it gives shape \(2, 6, 3, 3\), not ViT tokens.*'none'"):
        sycam.CAM("gradcam", model, "patch_embed", reshape="vit")(x)
    for bad in ("vitt", "vit:0x3", 3):
        with pytest.raises(SycamError, match="reshape"):
            sycam.CAM("gradcam", model, reshape=bad)
    assert parse_reshape("none") is None and parse_reshape(None) == parse_reshape("auto") == "auto"


def test_score_cam_weights_at_a_token_layer_by_hand():
    """Score-CAM (Wang et al. 2020): w_k = S(x * M_k), M_k = minmax(Up(A_k)) of the reshaped map."""
    model, x = toy_vit(), images()
    exp = sycam.CAM("relu(sum(score * A, k))", model).explain(x, CLASSES)
    A = grid_by_hand(vit_reference(model, x, CLASSES)[0], 3, 3)
    want = torch.empty(2, 6, dtype=DT)
    with torch.no_grad():
        for k in range(6):
            up = torch.nn.functional.interpolate(A[:, k:k + 1], size=(12, 12), mode="bilinear", align_corners=False)
            lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
            want[:, k] = model(x * (up - lo) / (hi - lo))[torch.arange(2), CLASSES]
    got = exp.evidence.layers["blocks.1.norm1"].terms["score"][0]
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-6)


def test_ablation_and_h2_put_the_changed_map_back_into_the_tokens():
    """Ablation-CAM's w_k = (y - y(A_k = 0)) / y and H2 = d2S/dA2 at a token layer, by hand."""
    model, x = toy_vit(), images()
    exp = sycam.CAM("relu(sum(ablation * A, k))", model).explain(x, CLASSES)
    n1, _, y, before = vit_reference(model, x, CLASSES)
    rows = torch.arange(2)
    want = torch.empty(2, 6, dtype=DT)
    for k in range(6):
        ablated = n1.clone()
        ablated[:, 1:, k] = 0                          # channel k of the grid; the class token kept
        want[:, k] = (y - model.after(before, ablated)[rows, CLASSES]) / y
    got = exp.evidence.layers["blocks.1.norm1"].terms["ablation"][0]     # float32, as ablation_scores gives
    assert torch.allclose(got.double(), want, rtol=1e-5, atol=1e-7) and want.abs().amin() > 1e-4

    ev = sycam.capture(model, x, ["blocks.1.norm1"], CLASSES, needs={"H2"})
    for i in range(2):
        def score(grid, i=i):
            tokens = torch.cat([n1[i:i + 1, :1], grid.reshape(1, 6, 9).transpose(1, 2)], dim=1)
            return model.after(before[i:i + 1], tokens)[0, CLASSES[i]]
        hessian = torch.autograd.functional.hessian(score, grid_by_hand(n1, 3, 3)[i].reshape(-1), vectorize=True)
        got = ev.layers["blocks.1.norm1"].terms["H2"][0][i].reshape(-1)
        assert torch.allclose(got, hessian.diagonal(), rtol=1e-8, atol=1e-12)

    with pytest.raises(EvidenceError, match="needs the reshape's inverse"):
        sycam.CAM("ablationcam", model, reshape=lambda t: TokenGrid(prefix=1)(t))(x)
    with pytest.raises(EvidenceError, match="needs the reshape's inverse"):
        map_suffix(object(), lambda t: t, "layer")


class SwinBlock(nn.Module):
    """A channel-last block: x + mlp(norm1(x)) (no window attention: the layout is what matters)."""

    def __init__(self, c):
        super().__init__()
        self.norm1, self.mlp = nn.LayerNorm(c), nn.Sequential(nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c))

    def forward(self, x):
        return x + self.mlp(self.norm1(x))


class SwinTransformer(nn.Module):
    """timm's layout: patch_embed (conv, then channel-last), layers[i].blocks[j], norm, pooled head."""

    def __init__(self, c=4, classes=5):
        super().__init__()
        self.patch_embed = nn.Sequential(nn.Conv2d(3, c, 2, stride=2))
        self.layers = nn.Sequential(nn.Module())
        self.layers[0].blocks = nn.Sequential(SwinBlock(c), SwinBlock(c))
        self.norm, self.head = nn.LayerNorm(c), nn.Linear(c, classes)

    def forward(self, x):
        t = self.patch_embed(x).permute(0, 2, 3, 1)
        t = self.layers[0].blocks(t)
        return self.head(self.norm(t).mean(dim=(1, 2)))


def test_toy_swin_channel_last_gradcam_by_hand():
    torch.manual_seed(0)
    model, x = SwinTransformer().to(DT).eval(), images(h=8, w=10)
    assert token_family(model).reshape == "swin"
    assert default_layer(model, x[:1]) == "layers.0.blocks.1.norm1"
    assert resolve_layer(model, "patch_embed.0").reshape is None          # a convolution: channel-first
    exp = sycam.CAM("gradcam", model).explain(x, CLASSES)
    block = model.layers[0].blocks
    before = block[0](model.patch_embed(x).permute(0, 2, 3, 1)).detach()
    n1 = block[1].norm1(before).detach().requires_grad_(True)
    scores = model.head(model.norm(before + block[1].mlp(n1)).mean(dim=(1, 2)))[torch.arange(2), CLASSES]
    (g,) = torch.autograd.grad(scores.sum(), n1)
    A = torch.stack([n1.detach()[..., k] for k in range(4)], dim=1)        # (b, h, w, c) -> (b, c, h, w)
    G = torch.stack([g[..., k] for k in range(4)], dim=1)
    assert torch.allclose(exp.evidence.layers["layers.0.blocks.1.norm1"].A, A, rtol=1e-12, atol=1e-12)
    assert torch.allclose(exp.layer_maps["layers.0.blocks.1.norm1"], gradcam_by_hand(A, G), rtol=1e-10, atol=1e-12)


def test_torchvision_vit_and_swin_are_recognised_with_a_late_default_layer():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=8, mlp_dim=16, num_classes=5).eval()
    x = torch.randn(1, 3, 32, 32)
    assert default_layer(vit, x) == "encoder.layers.encoder_layer_1.ln_1"
    info = {i.name: i for i in list_layers(vit, x)}
    assert info["encoder.layers.encoder_layer_1.ln_1"].shape == (8, 4, 4)
    assert info["encoder.layers.encoder_layer_1.ln_1"].tokens == (17, 8)
    assert info["conv_proj"].shape == (8, 4, 4) and info["conv_proj"].tokens is None   # the patch embedding
    swin = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=8, depths=[2, 2], num_heads=[1, 1],
                                              window_size=[2, 2], num_classes=5).eval()
    assert default_layer(swin, x) == "features.3.1.norm1"
    info = {i.name: i for i in list_layers(swin, x)}
    assert info["features.3.1.norm1"].shape == (16, 4, 4) and info["features.3.1.norm1"].tokens == (4, 4, 16)
    assert info["features.0.0"].tokens is None and info["permute"].tokens is None
    maps = sycam.CAM("gradcam", swin)(x)
    assert maps.shape == (1, 32, 32) and float(maps.amax()) == 1.0


def test_layer_followed_by_an_inplace_relu_keeps_its_own_value():
    """vgg16's features.28 (a conv) is followed by ReLU(inplace=True): A is the conv's output, G = dS/dA."""
    torch.manual_seed(0)
    model = torchvision.models.vgg16().eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    exp = sycam.CAM("gradcam", model, "features.28").explain(x, CLASSES)
    with torch.no_grad():
        a = model.features[:29](x)
    leaf = a.clone().requires_grad_(True)
    logits = model.classifier(torch.flatten(model.avgpool(model.features[29:](leaf.clone())), 1))
    (g,) = torch.autograd.grad(logits[torch.arange(2), CLASSES].sum(), leaf)
    layer = exp.evidence.layers["features.28"]
    assert a.amin() < 0 and torch.allclose(layer.A, a)                # before the ReLU, not overwritten by it
    assert torch.allclose(layer.terms["G"][0], g, rtol=1e-4, atol=1e-9)
    assert torch.allclose(exp.layer_maps["features.28"], gradcam_by_hand(a, g), rtol=1e-4, atol=1e-7)


def test_a_layer_whose_output_is_changed_in_place_by_the_model_is_refused():
    class Aliasing(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.keep, self.fc = nn.Conv2d(3, 4, 3), nn.Identity(), nn.Linear(4, 5)

        def forward(self, x):
            y = self.conv(x)
            self.keep(y)                    # returns y itself, which is then changed in place
            y.mul_(2)
            return self.fc(y.mean(dim=(2, 3)))

    with pytest.raises(EvidenceError, match="layer keep is changed in place later.*returns its input"):
        sycam.CAM("gradcam", Aliasing().eval(), "keep")(torch.randn(1, 3, 8, 8))


def _photo(folder):
    from PIL import Image

    folder.mkdir(exist_ok=True)
    path = folder / "a.png"
    Image.fromarray((torch.rand(60, 80, 3, generator=torch.Generator().manual_seed(2)) * 255).byte().numpy()).save(path)
    (folder / "boxes.csv").write_text("file,label,x0,y0,x1,y1\na.png,tabby,5,5,40,40\n")
    return str(path)


@pytest.mark.slow
def test_layers_command_lists_token_layers_with_their_maps(capsys):
    from sycam.cli import main

    assert main(["layers", "--model", "vit_b_16", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "default layer: encoder.layers.encoder_layer_11.ln_1" in out
    row = next(line for line in out.splitlines() if "encoder.layers.encoder_layer_11.ln_1 " in line)
    assert "(768, 14, 14)" in row and "(197, 768)" in row
    assert main(["layers", "--model", "vit_b_16", "--reshape", "vitt"]) == 2
    assert "unknown reshape 'vitt'; choose from auto, vit, vit:HxW, swin, none" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("name,layer", [("vit_b_16", "encoder.layers.encoder_layer_11.ln_1"),
                                        ("swin_t", "features.7.1.norm1")])
def test_explain_and_eval_run_on_a_transformer(tmp_path, capsys, name, layer):
    import json

    from sycam.cli import main

    photo = _photo(tmp_path / "data")
    assert main(["explain", "--model", name, "--device", "cpu", "--method", "gradcam", "--method", "gradcampp",
                 "--out", str(tmp_path / "explain"), photo]) == 0
    assert "random weights" in capsys.readouterr().out
    result = json.loads((tmp_path / "explain" / "results.json").read_text())
    assert result["layers"] == [layer] and all(r["valid"] for r in result["rows"]) and len(result["rows"]) == 2
    assert main(["eval", "gradcam", "layercam", "--model", name, "--device", "cpu", "--data", str(tmp_path / "data"),
                 "--metric", "pointing_game", "--out", str(tmp_path / "eval")]) == 0
    summary = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert summary["layers"] == [layer] and {r["method"] for r in summary["summary"]} == {"gradcam", "layercam"}


def test_a_model_built_for_one_input_size_refuses_other_scales_clearly():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                               hidden_dim=8, mlp_dim=16, num_classes=5).eval()
    draw_zero_linears(vit)                                  # torchvision starts the head at zero: no gradient
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(EvidenceError, match=r"refused the input size 48x48 \(AssertionError: Wrong image height.*"
                                            r"scales=\[32\]"):
        sycam.CAM("cameras", vit, options={"scales": (32, 48)})(x)
    one_scale = sycam.CAM("cameras", vit, options={"scales": (32,)})(x)     # = relu(sum(A * G, k)) at one scale
    assert one_scale.flatten(1).std(1).amin() > 0.1 and torch.allclose(one_scale, sycam.CAM("hirescam", vit)(x),
                                                                          atol=1e-5)


@pytest.mark.slow
def test_readme_vgg16_features_28_example_runs(tmp_path, capsys):
    """README: ``sycam explain --model vgg16 --layer features.28 photo.jpg`` (a conv before an in-place ReLU)."""
    import json

    from sycam.cli import main

    assert main(["explain", "--model", "vgg16", "--layer", "features.28", "--device", "cpu",
                 "--out", str(tmp_path / "out"), _photo(tmp_path / "data")]) == 0
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["rows"]
    assert [r["valid"] for r in rows] == [True]
