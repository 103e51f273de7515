"""Transformer attributions (camexp/explain/transformer.py) against implementations we did not write, transcribed
below from their published code: attention rollout (jacobgil/vit-explain's `rollout`, and Chefer et al.'s
`Baselines.generate_rollout`), the generic attention explainability (Chefer et al., Transformer-MM-Explainability,
ViT notebook) and the LRP transformer attribution (Chefer et al., Transformer-Explainability, modules/layers_ours.py and
baselines/ViT/ViT_LRP.py). Their attentions come from an independent path: each block recomputed by hand from the
weights, or their own ViT module loaded with the same weights. Random-weight small timm ViT / DeiT models, their
attention sharpened (random init attends almost uniformly, which would make every map alike), real photographs."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from typer.testing import CliRunner

from camexp.cli import app
from camexp.config import ModelConfig
from camexp.data.images import load_rgb
from camexp.data.transforms import InputSpec
from camexp.explain.core import Explainer
from camexp.explain.methods import METHODS, MethodInputs
from camexp.models import PixelModel, build_model

SHARPEN = 8.0  # qkv weights x 8: the random model's attention is then far from uniform
SIZE = 112  # input of the small DeiT variants (7 x 7 patches of 16)
SWIN = {"depths": (1, 1), "num_heads": (1, 2), "embed_dim": 16}  # a small Swin


def rel_err(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours - ref).detach().abs().max() / ref.detach().abs().max())


def small(name: str, **kw: Any) -> PixelModel:
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, **kw).eval().requires_grad_(False)
    with torch.no_grad():
        for b in net.blocks:
            b.attn.qkv.weight.mul_(SHARPEN)
    return PixelModel(net, InputSpec.from_timm(timm.data.resolve_data_config({}, model=net)))


MODELS = {
    "vit": lambda: small("test_vit"),
    "vit_registers": lambda: small("test_vit", reg_tokens=2),
    "deit": lambda: small("deit_tiny_patch16_224", depth=3, img_size=SIZE),
    "deit_distilled": lambda: small("deit_tiny_distilled_patch16_224", depth=3, img_size=SIZE),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> PixelModel:
    return MODELS[request.param]()


def images(photo_dir: Path, model: PixelModel) -> torch.Tensor:
    size = model.net.patch_embed.img_size
    photos = [load_rgb(p) for p in sorted(photo_dir.iterdir())[:2]]
    return (
        torch.stack([torch.from_numpy(np.array(p.convert("RGB").resize(size[::-1]))) for p in photos])
        .permute(0, 3, 1, 2)
        .float()
        / 255
    )


def run(name: str, model: PixelModel, x: torch.Tensor, targets: torch.Tensor, **params: Any) -> torch.Tensor:
    grid = model.net.patch_embed.grid_size
    ctx = MethodInputs(A=torch.zeros(len(x), 1, *grid), G=None, targets=targets, x=x, model=model)
    return METHODS.get(name)(ctx, **params)


def targets_of(model: PixelModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


# --- an independent forward: every block recomputed by hand (Chefer et al.'s ViT_new.py structure) ------------------


def manual_forward(model: PixelModel, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[list[Any]]]:
    """Logits, attention probabilities per block (B, heads, N, N) and, after a backward, their gradients (saved by
    tensor hooks, as the authors' `save_attn_gradients`)."""
    net = model.net
    t = net.norm_pre(net._pos_embed(net.patch_embed(model.normalize(x))))
    attns, grads = [], []
    for blk in net.blocks:
        b, n, _ = t.shape
        heads = blk.attn.num_heads
        qkv = F.linear(blk.norm1(t), blk.attn.qkv.weight, blk.attn.qkv.bias).reshape(b, n, 3, heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = (torch.einsum("bhid,bhjd->bhij", q, k) * blk.attn.scale).softmax(dim=-1)
        saved: list[Any] = []
        if attn.requires_grad:
            attn.register_hook(saved.append)
        attns.append(attn)
        grads.append(saved)
        out = torch.einsum("bhij,bhjd->bhid", attn, v).transpose(1, 2).reshape(b, n, -1)
        t = t + blk.attn.proj(out)
        t = t + blk.mlp(blk.norm2(t))
    return net.forward_head(net.norm(t)), attns, grads


def readout(m: torch.Tensor, net: nn.Module) -> torch.Tensor:
    """The class token's row (the mean of class and distillation rows for distilled DeiT, camexp's documented
    extension) over the patch tokens, on the grid."""
    rows = [0, 1] if getattr(net, "dist_token", None) is not None else [0]
    return m[:, rows].mean(1)[:, net.num_prefix_tokens :].unflatten(1, net.patch_embed.grid_size)


def test_the_independent_forward_is_the_model(model: PixelModel, photo_dir: Path):
    x = images(photo_dir, model)
    with torch.no_grad():
        assert torch.allclose(manual_forward(model, x)[0], model(x), atol=1e-5, rtol=1e-5)


# --- (a) attention rollout ------------------------------------------------------------------------------------------


def vit_explain_rollout(attentions: list[torch.Tensor], discard_ratio: float, head_fusion: str) -> torch.Tensor:
    """jacobgil/vit-explain vit_rollout.py `rollout` (batch of 1), with one fix: it divides by `a.sum(dim=-1)`
    without keepdim, which broadcasts the row sums over the columns; here each row is divided by its own sum, as
    the paper's row normalisation. Returns the whole rollout matrix (their `result`)."""
    result = torch.eye(attentions[0].size(-1))
    with torch.no_grad():
        for attention in attentions:
            if head_fusion == "mean":
                attention_heads_fused = attention.mean(axis=1)
            elif head_fusion == "max":
                attention_heads_fused = attention.max(axis=1)[0]
            else:
                attention_heads_fused = attention.min(axis=1)[0]
            flat = attention_heads_fused.view(attention_heads_fused.size(0), -1)
            _, indices = flat.topk(int(flat.size(-1) * discard_ratio), -1, False)
            indices = indices[indices != 0]
            flat[0, indices] = 0
            identity = torch.eye(attention_heads_fused.size(-1))
            a = (attention_heads_fused + 1.0 * identity) / 2
            a = a / a.sum(dim=-1, keepdim=True)
            result = torch.matmul(a, result)
    return result


def chefer_rollout(all_layer_matrices: list[torch.Tensor], start_layer: int = 0) -> torch.Tensor:
    """Chefer et al.'s ViT_explanation_generator.py `compute_rollout_attention` (rows normalised)."""
    num_tokens = all_layer_matrices[0].shape[1]
    batch_size = all_layer_matrices[0].shape[0]
    eye = torch.eye(num_tokens).expand(batch_size, num_tokens, num_tokens)
    all_layer_matrices = [all_layer_matrices[i] + eye for i in range(len(all_layer_matrices))]
    matrices_aug = [m / m.sum(dim=-1, keepdim=True) for m in all_layer_matrices]
    joint_attention = matrices_aug[start_layer]
    for i in range(start_layer + 1, len(matrices_aug)):
        joint_attention = matrices_aug[i].bmm(joint_attention)
    return joint_attention


@pytest.mark.parametrize("head_fusion, discard_ratio", [("mean", 0.0), ("max", 0.0), ("min", 0.5), ("mean", 0.9)])
def test_rollout_is_vit_explain_rollout(model: PixelModel, photo_dir: Path, head_fusion: str, discard_ratio: float):
    x = images(photo_dir, model)
    ours = run(
        "attention_rollout", model, x, targets_of(model, x), head_fusion=head_fusion, discard_ratio=discard_ratio
    )
    for i in range(len(x)):  # their code explains one image at a time; ours a batch
        with torch.no_grad():
            _, attns, _ = manual_forward(model, x[i : i + 1])
        ref = readout(vit_explain_rollout(attns, discard_ratio, head_fusion), model.net)
        assert rel_err(ours[i : i + 1], ref) <= 1e-5
        assert ours[i].std() > 1e-3 * ours[i].mean()  # not a flat map


def test_rollout_defaults_are_the_papers_and_chefers_baseline(model: PixelModel, photo_dir: Path):
    x = images(photo_dir, model)
    with torch.no_grad():
        _, attns, _ = manual_forward(model, x)
    # Baselines.generate_rollout: heads averaged, then compute_rollout_attention
    ref = readout(chefer_rollout([(a.sum(dim=1) / a.shape[1]).detach() for a in attns]), model.net)
    assert rel_err(run("attention_rollout", model, x, targets_of(model, x)), ref) <= 1e-5
    # the paper: A' = 0.5 A + 0.5 I (rows of A sum to 1), multiplied through the layers
    paper = torch.eye(attns[0].shape[-1])
    for a in attns:
        paper = (0.5 * a.mean(1) + 0.5 * torch.eye(a.shape[-1])) @ paper
    assert rel_err(readout(paper, model.net), ref) <= 1e-5


# --- (b) generic attention explainability (ICCV 2021) -----------------------------------------------------------------


def avg_heads(cam: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Transformer_MM_explainability_ViT.ipynb, rule 5."""
    cam = cam.reshape(-1, cam.shape[-2], cam.shape[-1])
    grad = grad.reshape(-1, grad.shape[-2], grad.shape[-1])
    cam = grad * cam
    cam = cam.clamp(min=0).mean(dim=0)
    return cam


def apply_self_attention_rules(r_ss: torch.Tensor, cam_ss: torch.Tensor) -> torch.Tensor:
    """The same notebook, rule 6."""
    return torch.matmul(cam_ss, r_ss)


def generate_relevance(model: PixelModel, image: torch.Tensor, index: int) -> torch.Tensor:
    """The notebook's `generate_relevance` (batch of 1, on the CPU); returns the whole R, not only R[0, 1:]."""
    with torch.enable_grad():
        output, attns, grads = manual_forward(model, image.requires_grad_(True))
        one_hot = np.zeros((1, output.size()[-1]), dtype=np.float32)
        one_hot[0, index] = 1
        one_hot = torch.from_numpy(one_hot).requires_grad_(True)
        one_hot = torch.sum(one_hot * output)
        one_hot.backward(retain_graph=True)
    num_tokens = attns[0].shape[-1]
    r = torch.eye(num_tokens, num_tokens)
    for attn, grad in zip(attns, grads, strict=True):
        cam = avg_heads(attn.detach(), grad[0])
        r += apply_self_attention_rules(r, cam)
    return r[None]


def test_chefer_generic_is_the_authors_notebook(model: PixelModel, photo_dir: Path):
    x = images(photo_dir, model)
    targets = torch.tensor([3, 7])  # not the prediction: the gradient must follow the target
    ours = run("chefer_generic", model, x, targets)
    for i in range(len(x)):
        ref = readout(generate_relevance(model, x[i : i + 1].clone(), int(targets[i])), model.net)
        assert rel_err(ours[i : i + 1], ref) <= 1e-5
    assert rel_err(ours, run("chefer_generic", model, x, torch.tensor([4, 4]))) > 1e-3  # class-sensitive


# --- (c) the LRP transformer attribution (CVPR 2021) ----------------------------------------------------------------
# modules/layers_ours.py and baselines/ViT/ViT_LRP.py of hila-chefer/Transformer-Explainability, transcribed
# (einops' rearrange written as reshape/permute; the LRP parts unchanged).


def safe_divide(a, b):
    den = b.clamp(min=1e-9) + b.clamp(max=1e-9)
    den = den + den.eq(0).type(den.type()) * 1e-9
    return a / den * b.ne(0).type(b.type())


def forward_hook(self, input, output):
    if type(input[0]) in (list, tuple):
        self.X = []
        for i in input[0]:
            x = i.detach()
            x.requires_grad = True
            self.X.append(x)
    else:
        self.X = input[0].detach()
        self.X.requires_grad = True
    self.Y = output


class RelProp(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_forward_hook(forward_hook)

    def gradprop(self, Z, X, S):
        return torch.autograd.grad(Z, X, S, retain_graph=True)

    def relprop(self, R, alpha):
        return R


class RelPropSimple(RelProp):
    def relprop(self, R, alpha):
        Z = self.forward(self.X)
        S = safe_divide(R, Z)
        C = self.gradprop(Z, self.X, S)
        if not torch.is_tensor(self.X):
            return [self.X[0] * C[0], self.X[1] * C[1]]
        return self.X * (C[0])


class GELU(nn.GELU, RelProp):
    pass


class Softmax(nn.Softmax, RelProp):
    pass


class LayerNorm(nn.LayerNorm, RelProp):
    pass


class Dropout(nn.Dropout, RelProp):
    pass


class Add(RelPropSimple):
    def forward(self, inputs):
        return torch.add(*inputs)

    def relprop(self, R, alpha):
        Z = self.forward(self.X)
        S = safe_divide(R, Z)
        C = self.gradprop(Z, self.X, S)
        a = self.X[0] * C[0]
        b = self.X[1] * C[1]
        a_sum = a.sum()
        b_sum = b.sum()
        a_fact = safe_divide(a_sum.abs(), a_sum.abs() + b_sum.abs()) * R.sum()
        b_fact = safe_divide(b_sum.abs(), a_sum.abs() + b_sum.abs()) * R.sum()
        a = a * safe_divide(a_fact, a.sum())
        b = b * safe_divide(b_fact, b.sum())
        return [a, b]


class Einsum(RelPropSimple):
    def __init__(self, equation):
        super().__init__()
        self.equation = equation

    def forward(self, *operands):
        return torch.einsum(self.equation, *operands)


class IndexSelect(RelProp):
    def forward(self, inputs, dim, indices):
        self.dim, self.indices = dim, indices
        return torch.index_select(inputs, dim, indices)

    def relprop(self, R, alpha):
        Z = self.forward(self.X, self.dim, self.indices)
        S = safe_divide(R, Z)
        C = self.gradprop(Z, self.X, S)
        return self.X * (C[0])


class Clone(RelProp):
    def forward(self, input, num):
        self.num = num
        return [input for _ in range(num)]

    def relprop(self, R, alpha):
        Z = [self.X for _ in range(self.num)]
        S = [safe_divide(r, z) for r, z in zip(R, Z, strict=True)]
        C = self.gradprop(Z, self.X, S)[0]
        return self.X * C


class Linear(nn.Linear, RelProp):
    def relprop(self, R, alpha):
        beta = alpha - 1
        pw = torch.clamp(self.weight, min=0)
        nw = torch.clamp(self.weight, max=0)
        px = torch.clamp(self.X, min=0)
        nx = torch.clamp(self.X, max=0)

        def f(w1, w2, x1, x2):
            Z1 = F.linear(x1, w1)
            Z2 = F.linear(x2, w2)
            S1 = safe_divide(R, Z1 + Z2)
            S2 = safe_divide(R, Z1 + Z2)
            C1 = x1 * torch.autograd.grad(Z1, x1, S1)[0]
            C2 = x2 * torch.autograd.grad(Z2, x2, S2)[0]
            return C1 + C2

        activator_relevances = f(pw, nw, px, nx)
        inhibitor_relevances = f(nw, pw, px, nx)
        return alpha * activator_relevances - beta * inhibitor_relevances


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features):
        super().__init__()
        self.fc1 = Linear(in_features, hidden_features)
        self.act = GELU()
        self.fc2 = Linear(hidden_features, in_features)
        self.drop = Dropout(0.0)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))

    def relprop(self, cam, **kwargs):
        cam = self.drop.relprop(cam, **kwargs)
        cam = self.fc2.relprop(cam, **kwargs)
        cam = self.act.relprop(cam, **kwargs)
        return self.fc1.relprop(cam, **kwargs)


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.matmul1 = Einsum("bhid,bhjd->bhij")
        self.matmul2 = Einsum("bhij,bhjd->bhid")
        self.qkv = Linear(dim, dim * 3)
        self.attn_drop = Dropout(0.0)
        self.proj = Linear(dim, dim)
        self.proj_drop = Dropout(0.0)
        self.softmax = Softmax(dim=-1)

    def save_attn_gradients(self, attn_gradients):
        self.attn_gradients = attn_gradients

    def forward(self, x):
        b, n, _, h = *x.shape, self.num_heads
        qkv = self.qkv(x)
        q, k, v = qkv.reshape(b, n, 3, h, -1).permute(2, 0, 3, 1, 4)  # 'b n (qkv h d) -> qkv b h n d'
        dots = self.matmul1([q, k]) * self.scale
        attn = self.softmax(dots)
        attn = self.attn_drop(attn)
        attn.register_hook(self.save_attn_gradients)
        out = self.matmul2([attn, v])
        out = out.transpose(1, 2).reshape(b, n, -1)  # 'b h n d -> b n (h d)'
        return self.proj_drop(self.proj(out))

    def relprop(self, cam, **kwargs):
        cam = self.proj_drop.relprop(cam, **kwargs)
        cam = self.proj.relprop(cam, **kwargs)
        b, n, _ = cam.shape
        cam = cam.reshape(b, n, self.num_heads, -1).transpose(1, 2)  # 'b n (h d) -> b h n d'
        (cam1, cam_v) = self.matmul2.relprop(cam, **kwargs)
        cam1 /= 2
        cam_v /= 2
        self.attn_cam = cam1
        cam1 = self.attn_drop.relprop(cam1, **kwargs)
        cam1 = self.softmax.relprop(cam1, **kwargs)
        (cam_q, cam_k) = self.matmul1.relprop(cam1, **kwargs)
        cam_q /= 2
        cam_k /= 2
        cam_qkv = (
            torch.stack([cam_q, cam_k, cam_v]).permute(1, 3, 0, 2, 4).reshape(b, n, -1)
        )  # 'qkv b h n d -> b n (qkv h d)'
        return self.qkv.relprop(cam_qkv, **kwargs)


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_hidden):
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_hidden)
        self.add1, self.add2, self.clone1, self.clone2 = Add(), Add(), Clone(), Clone()

    def forward(self, x):
        x1, x2 = self.clone1(x, 2)
        x = self.add1([x1, self.attn(self.norm1(x2))])
        x1, x2 = self.clone2(x, 2)
        return self.add2([x1, self.mlp(self.norm2(x2))])

    def relprop(self, cam, **kwargs):
        (cam1, cam2) = self.add2.relprop(cam, **kwargs)
        cam2 = self.mlp.relprop(cam2, **kwargs)
        cam2 = self.norm2.relprop(cam2, **kwargs)
        cam = self.clone2.relprop((cam1, cam2), **kwargs)
        (cam1, cam2) = self.add1.relprop(cam, **kwargs)
        cam2 = self.attn.relprop(cam2, **kwargs)
        cam2 = self.norm1.relprop(cam2, **kwargs)
        return self.clone1.relprop((cam1, cam2), **kwargs)


def compute_rollout_attention(all_layer_matrices, start_layer=0):
    """ViT_LRP.py's version: identity added, rows not normalised."""
    num_tokens = all_layer_matrices[0].shape[1]
    batch_size = all_layer_matrices[0].shape[0]
    eye = torch.eye(num_tokens).expand(batch_size, num_tokens, num_tokens)
    all_layer_matrices = [all_layer_matrices[i] + eye for i in range(len(all_layer_matrices))]
    joint_attention = all_layer_matrices[start_layer]
    for i in range(start_layer + 1, len(all_layer_matrices)):
        joint_attention = all_layer_matrices[i].bmm(joint_attention)
    return joint_attention


class VisionTransformer(nn.Module):
    """ViT_LRP.VisionTransformer; its final LayerNorm's eps set to timm's 1e-6 (configured alike)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        dim, heads = net.embed_dim, net.blocks[0].attn.num_heads
        self.patch_embed = net.patch_embed
        self.pos_embed = nn.Parameter(net.pos_embed.clone())
        self.cls_token = nn.Parameter(net.cls_token.clone())
        hidden = net.blocks[0].mlp.fc1.out_features
        self.blocks = nn.ModuleList([Block(dim, heads, hidden) for _ in net.blocks])
        self.norm = LayerNorm(dim, eps=1e-6)
        self.head = Linear(dim, net.head.out_features)
        self.pool = IndexSelect()
        self.add = Add()
        self.load_state_dict(
            {k: v for k, v in net.state_dict().items() if not k.startswith("patch_embed")}, strict=False
        )

    def forward(self, x):
        x = self.patch_embed(x)
        x = x.flatten(1, 2) if x.dim() == 4 else x  # timm's patch embedding (B, h, w, D) with dynamic_img_size
        cls_tokens = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls_tokens, x), dim=1)
        x = self.add([x, self.pos_embed])
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        x = self.pool(x, dim=1, indices=torch.tensor(0, device=x.device))
        return self.head(x.squeeze(1))

    def relprop(self, cam=None, start_layer=0, **kwargs):  # method="transformer_attribution"
        cam = self.head.relprop(cam, **kwargs)
        cam = cam.unsqueeze(1)
        cam = self.pool.relprop(cam, **kwargs)
        cam = self.norm.relprop(cam, **kwargs)
        for blk in reversed(self.blocks):
            cam = blk.relprop(cam, **kwargs)
        cams = []
        for blk in self.blocks:
            grad = blk.attn.attn_gradients
            cam = blk.attn.attn_cam
            cam = cam[0].reshape(-1, cam.shape[-1], cam.shape[-1])
            grad = grad[0].reshape(-1, grad.shape[-1], grad.shape[-1])
            cam = grad * cam
            cam = cam.clamp(min=0).mean(dim=0)
            cams.append(cam.unsqueeze(0))
        rollout = compute_rollout_attention(cams, start_layer=start_layer)
        return rollout[:, 0, 1:]


def generate_lrp(model: VisionTransformer, input: torch.Tensor, index: int) -> torch.Tensor:
    """ViT_explanation_generator.LRP.generate_LRP, method transformer_attribution (on the CPU)."""
    output = model(input)
    kwargs = {"alpha": 1}
    one_hot = np.zeros((1, output.size()[-1]), dtype=np.float32)
    one_hot[0, index] = 1
    one_hot_vector = one_hot
    one_hot = torch.from_numpy(one_hot).requires_grad_(True)
    one_hot = torch.sum(one_hot * output)
    model.zero_grad()
    one_hot.backward(retain_graph=True)
    return model.relprop(torch.tensor(one_hot_vector), **kwargs)


def test_chefer_is_the_authors_transformer_attribution(model: PixelModel, photo_dir: Path):
    """In float64, both sides: LRP's divisions amplify float32 rounding of the forward (fused and explicit attention
    differ by ~1e-7) to ~1e-3 of the map in the lower blocks of this random model, in their code as in ours."""
    if model.net.num_prefix_tokens != 1:
        pytest.skip("the authors' ViT_LRP has a class token only (camexp refuses distilled DeiT, reads registers)")
    model = copy.deepcopy(model).double()
    theirs = VisionTransformer(model.net).double().eval()
    x = images(photo_dir, model).double()
    with torch.no_grad():
        logits = model(x)
    assert torch.allclose(theirs(model.normalize(x)).detach(), logits, atol=1e-10, rtol=1e-10)
    targets = torch.tensor([3, 7])
    ours = run("chefer", model, x, targets)
    with torch.enable_grad():  # their code explains one image at a time (slowly): the first image
        ref = generate_lrp(theirs, model.normalize(x[:1]).requires_grad_(True), int(targets[0]))
    assert rel_err(ours[:1], ref.unflatten(1, model.net.patch_embed.grid_size)) <= 1e-5
    assert rel_err(ours[1:], run("chefer", model, x[1:], targets[1:])) <= 1e-10  # per image, whatever the batch
    assert rel_err(ours, run("chefer", model, x, torch.tensor([4, 4]))) > 1e-3  # class-sensitive


# --- (e) the model is left as it was -------------------------------------------------------------------------------


def test_hooks_change_no_output_and_are_gone_after_a_method_or_an_error(photo_dir: Path):
    model = MODELS["vit"]()
    x = images(photo_dir, model)
    fused = [b.attn.fused_attn for b in model.net.blocks]
    with torch.no_grad():
        before = model(x)
    for name in ("attention_rollout", "chefer_generic", "chefer"):
        run(name, model, x, torch.tensor([1, 2]))
    with pytest.raises(RuntimeError):
        run("chefer", model, x[:, :2], torch.tensor([1, 2]))  # two colour channels: the forward fails inside
    assert [b.attn.fused_attn for b in model.net.blocks] == fused
    assert not any(m._forward_hooks for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(x), before)
    # the methods' own forward (fused attention off) computes the same logits
    from camexp.explain.transformer import recording

    with recording(model.net, full=True) as rec, torch.no_grad():
        assert torch.allclose(model(x), before, atol=1e-6, rtol=1e-5)
    assert len(rec.blocks) == len(model.net.blocks) and rec.blocks[0].attn is not None


# --- through the explainer and the CLI --------------------------------------------------------------------------------


@pytest.mark.slow
def test_explainer_runs_them_beside_gradcam_on_distilled_deit_and_refuses_chefer(photo_dir: Path):
    loaded = build_model(ModelConfig(name="deit_tiny_distilled_patch16_224", weights="random"))
    x = images(photo_dir, loaded.model)
    e = Explainer(loaded, ["gradcam", "attention_rollout", "chefer_generic"]).explain(x)
    assert e.layer_maps["chefer_generic"].shape == (2, 14, 14) and e.maps["attention_rollout"].shape == (2, 224, 224)
    assert all(bool(f.all()) for f in e.finite.values())
    why = METHODS.get("chefer").unavailable(loaded)
    assert why.startswith("method 'chefer' is not defined for deit_tiny_distilled_patch16_224: its logits average")


def write_config(tmp_path: Path, root: Path, model: str, methods: list[str]) -> Path:
    cfg = {
        "name": "vit",
        "dataset": {"kind": "folder", "root": str(root)},
        "model": {"name": model, "weights": "random"},
        "methods": methods,
        "metrics": ["avg_drop"],
        "runtime": {"device": "cpu", "batch_size": 2},
        "output": {"dir": str(tmp_path / "out")},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    "model, method, why",
    [
        ("test_resnet", "attention_rollout", "it is a ResNet without ViT-style self-attention blocks"),
        ("test_vit2", "chefer_generic", "its head pools the tokens ('avg') instead of reading the class token"),
    ],
)
@pytest.mark.parametrize("command, code", [("run", 2), ("check", 1)])  # check: exit 1 on any error (docs/commands.md)
def test_a_backbone_without_the_methods_is_one_line_before_any_image(
    tmp_path: Path, photo_dir: Path, command: str, code: int, model: str, method: str, why: str
):
    path = write_config(tmp_path, photo_dir, model, [method])
    args = [command, str(path)] + (["--no-progress"] if command == "run" else [])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == code, res.output
    line = f"method {method!r} is not defined for {model}: {why}"
    assert line in " ".join(res.output.split()) and "Traceback" not in res.output
    if command == "run":
        assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "per_image.csv").exists()


@pytest.mark.slow
def test_a_run_on_a_vit_records_every_method(tmp_path: Path, photo_dir: Path):
    methods = ["attention_rollout", "chefer_generic", "chefer", "gradcam"]
    path = write_config(tmp_path, photo_dir, "test_vit", methods)
    assert CliRunner().invoke(app, ["check", str(path)]).exit_code == 0
    res = CliRunner().invoke(app, ["run", str(path), "--no-progress"])
    assert res.exit_code == 0, res.output
    rec = pd.read_csv(tmp_path / "out" / "per_image.csv")
    assert sorted(rec["method"].unique()) == sorted(methods) and rec["o"].notna().all()


@pytest.mark.parametrize(
    "name, kw, rollout, lrp",
    [
        ("swin_tiny_patch4_window7_224", SWIN, "its attention is windowed (Swin)", "its attention is windowed (Swin)"),
        ("test_vit_relpos", {}, "block 0 is a RelPosBlock with RelPosAttention", "block 0 is a RelPosBlock"),
        ("test_vit", {"init_values": 1e-5}, "", "block 0 has ls1, ls2, layers the published LRP rules do not cover"),
        ("test_vit", {"reg_tokens": 2}, "", ""),
    ],
)
def test_which_backbones_each_method_is_defined_for(name: str, kw: dict[str, Any], rollout: str, lrp: str):
    loaded = SimpleNamespace(model=SimpleNamespace(net=timm.create_model(name, **kw)), name=name)
    for method, want in (("attention_rollout", rollout), ("chefer_generic", rollout), ("chefer", lrp)):
        why = METHODS.get(method).unavailable(loaded)  # type: ignore[arg-type]
        assert why.startswith(f"method {method!r} is not defined for {name}: {want}") if want else why == ""


@pytest.mark.parametrize(
    "params, message",
    [
        ({"head_fusion": "median"}, "head_fusion must be one of ['mean', 'max', 'min']"),
        ({"discard_ratio": 1.0}, "[0, 1)"),
    ],
)
def test_bad_rollout_settings_are_named(params: dict[str, Any], message: str):
    assert message in METHODS.get("attention_rollout").param_problem(params)


def test_methods_states_the_cost_in_forwards_and_backwards():
    res = CliRunner().invoke(app, ["methods", "--format", "csv"])
    assert res.exit_code == 0, res.output
    text = res.output
    assert "1 forward (attention probabilities recorded), no backward" in text
    assert "1 forward + 1 backward (to the attention maps)" in text
