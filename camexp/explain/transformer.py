"""Transformer-native attributions of timm ViT / DeiT backbones: attention rollout (Abnar & Zuidema 2020), Chefer et
al.'s transformer attribution (CVPR 2021: LRP relevance x gradient, rolled out) and their generic attention
explainability (ICCV 2021): docs/guide/methods-metrics.md, "Transformer attributions".

Each method runs its own forward of the whole pixel-space model (`MethodInputs.model`) with the attention
probabilities of every block recorded: timm's `Attention` may fuse them away (scaled_dot_product_attention), so for
that forward only its `fused_attn` is switched off, which computes the same softmax(q k^T * scale) explicitly and
leaves the logits as they were (to float rounding); the flag and the hooks are restored on exit, an error included.
Maps are the rows of the tokens the classifier reads (the class token; for distilled DeiT the mean of the class and
distillation rows, as its logits are the mean of their two heads) over the patch tokens, on the patch grid; the
other prefix tokens (distillation, registers) are left out of the columns. Everything runs per image: a map does not
depend on the batch it came in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from camexp.explain.methods import MethodInputs, method
from camexp.explain.model_methods import one_of
from camexp.explain.scoring import target_scores
from camexp.models.layers import forward_hooks

if TYPE_CHECKING:
    from camexp.models import LoadedModel

HEAD_FUSIONS = ("mean", "max", "min")


@dataclass
class BlockRecord:
    """What one block's forward leaves for the methods: its attention probabilities (B, heads, N, N) and, for
    Chefer's LRP, the inputs and outputs of the layers its relevance passes through (B, N, features)."""

    attn: torch.Tensor | None = None
    x: torch.Tensor | None = None  # block input
    qkv_in: torch.Tensor | None = None
    qkv_out: torch.Tensor | None = None
    proj_in: torch.Tensor | None = None
    proj_out: torch.Tensor | None = None
    fc1_in: torch.Tensor | None = None
    fc2_in: torch.Tensor | None = None
    fc2_out: torch.Tensor | None = None


@dataclass
class Recording:
    """One forward's per-block records and the classifier's input (B, D)."""

    blocks: list[BlockRecord]
    head_in: list[torch.Tensor] = field(default_factory=list)


def _store(rec: BlockRecord, inp: str | None = None, out: str | None = None) -> Callable[..., None]:
    """A forward hook that keeps the module's first input in `rec.<inp>` and its output in `rec.<out>`."""

    def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        if inp:
            setattr(rec, inp, args[0])
        if out:
            setattr(rec, out, output)

    return hook


@contextmanager
def recording(net: nn.Module, full: bool = False) -> Iterator[Recording]:
    """While active, every forward of `net` (a timm ViT) records each block's attention probabilities (with `full`,
    also what Chefer's LRP reads). Fused attention is switched off on every block meanwhile and restored on exit."""
    blocks = cast(list[nn.Module], list(net.blocks))  # type: ignore[arg-type]
    rec = Recording([BlockRecord() for _ in blocks])
    hooks: list[tuple[nn.Module, Callable[..., object]]] = []
    for b, r in zip(blocks, rec.blocks, strict=True):
        attn = cast(Any, b).attn
        hooks.append((attn.attn_drop, _store(r, out="attn")))
        if full:
            mlp = cast(Any, b).mlp
            hooks += [
                (b, _store(r, inp="x")),
                (attn.qkv, _store(r, inp="qkv_in", out="qkv_out")),
                (attn.proj, _store(r, inp="proj_in", out="proj_out")),
                (mlp.fc1, _store(r, inp="fc1_in")),
                (mlp.fc2, _store(r, inp="fc2_in", out="fc2_out")),
            ]
    if full:
        hooks.append((cast(nn.Module, net.head), lambda m, args, out: rec.head_in.append(args[0])))
    fused = [cast(Any, b).attn.fused_attn for b in blocks]
    try:
        for b in blocks:
            cast(Any, b).attn.fused_attn = False
        with forward_hooks(hooks):
            yield rec
    finally:
        for b, f in zip(blocks, fused, strict=True):
            cast(Any, b).attn.fused_attn = f


def _readout_tokens(net: nn.Module) -> list[int]:
    """The tokens whose rows become the map: the class token, and for distilled DeiT the distillation token too."""
    return [0, 1] if getattr(net, "dist_token", None) is not None else [0]


def patch_map(m: torch.Tensor, net: nn.Module) -> torch.Tensor:
    """(B, N, N) token-to-token matrix -> (B, h, w): the mean of the readout tokens' rows over the patch tokens."""
    prefix = int(cast(Any, net).num_prefix_tokens)
    grid = tuple(int(g) for g in cast(Any, net).patch_embed.grid_size)
    return m[:, _readout_tokens(net)].mean(1)[:, prefix:].unflatten(1, grid)


def _forward(ctx: MethodInputs, full: bool, grad: bool) -> tuple[Recording, torch.Tensor]:
    """One forward of the batch with the attentions recorded, autocast off (maps must not depend on a speed setting);
    with `grad`, autograd records it (the input requires grad, so the attention maps are inside the graph) and the
    logits come back undetached."""
    assert ctx.model is not None and ctx.x is not None
    x = ctx.x.detach()
    with recording(ctx.model.net, full) as rec, torch.autocast(x.device.type, enabled=False):
        if grad:
            with torch.enable_grad():
                logits = ctx.model(x.requires_grad_(True))
        else:
            with torch.no_grad():
                logits = ctx.model(x)
    return rec, logits


def _attention_grads(ctx: MethodInputs, rec: Recording, logits: torch.Tensor) -> list[torch.Tensor]:
    """d(target score)/d(attention probabilities) of every block, per image (the run's score: logit by default,
    as Chefer et al.'s code)."""
    attns = [cast(torch.Tensor, r.attn) for r in rec.blocks]
    with torch.enable_grad():
        score = target_scores(logits, ctx.targets, ctx.score).sum()
        return list(torch.autograd.grad(score, attns))


def _fuse_heads(a: torch.Tensor, how: str) -> torch.Tensor:
    return a.mean(1) if how == "mean" else a.amax(1) if how == "max" else a.amin(1)


def _rollout_check(p: dict[str, Any]) -> str:
    if not 0.0 <= p["discard_ratio"] < 1.0:
        return f"discard_ratio must be in [0, 1), not {p['discard_ratio']!r}"
    return one_of("head_fusion", HEAD_FUSIONS)(p)


# --- which backbones the methods are defined for ---------------------------------------------------------------


def _vit_problem(loaded: LoadedModel) -> str:
    """Why a backbone is not a ViT whose attention probabilities the methods can read ('' if it is)."""
    from timm.layers import Attention
    from timm.models.vision_transformer import Block

    net = loaded.model.net
    blocks = getattr(net, "blocks", None)
    if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or not hasattr(net, "patch_embed") or not len(blocks):
        if "swin" in type(net).__name__.lower():
            return "its attention is windowed (Swin): no token-to-token attention over the whole image to follow"
        return f"it is a {type(net).__name__} without ViT-style self-attention blocks"
    for i, b in enumerate(blocks):
        if not isinstance(b, Block) or type(getattr(b, "attn", None)) is not Attention:
            return (
                f"block {i} is a {type(b).__name__} with {type(getattr(b, 'attn', None)).__name__} attention, not "
                "timm's Block with its Attention, whose attention probabilities these methods read"
            )
    if getattr(net, "global_pool", None) != "token" or getattr(net, "attn_pool", None) is not None:
        return f"its head pools the tokens ({getattr(net, 'global_pool', None)!r}) instead of reading the class token"
    return ""


def _lrp_problem(loaded: LoadedModel) -> str:
    """Why Chefer et al.'s LRP rules (written for the plain ViT: pre-norm blocks of Linear layers) do not cover a
    ViT-style backbone ('' if they do)."""
    from timm.layers import Mlp

    net = cast(Any, loaded.model.net)
    if getattr(net, "dist_token", None) is not None:
        return (
            "its logits average two heads (class and distillation tokens), for which Chefer et al.'s LRP has no rule "
            "(attention_rollout and chefer_generic read both tokens)"
        )
    if not isinstance(net.head, nn.Linear) or not isinstance(net.fc_norm, nn.Identity):
        return "its classifier is not one Linear layer on the class token"
    for i, b in enumerate(net.blocks):
        extras = [n for n in ("ls1", "ls2") if not isinstance(getattr(b, n), nn.Identity)]
        extras += [f"attn.{n}" for n in ("q_norm", "k_norm", "norm") if not isinstance(getattr(b.attn, n), nn.Identity)]
        extras += ["attn.gate"] if getattr(b.attn, "gate", None) is not None else []
        if type(b.mlp) is not Mlp or not isinstance(b.mlp.norm, nn.Identity):
            extras.append(f"mlp ({type(b.mlp).__name__})")
        if extras:
            return f"block {i} has {', '.join(extras)}, layers the published LRP rules do not cover"
    return ""


def _unavailable(name: str, lrp: bool = False) -> Callable[[LoadedModel], str]:
    def why(loaded: LoadedModel) -> str:
        problem = _vit_problem(loaded)
        if problem:
            return (
                f"method {name!r} is not defined for {loaded.name}: {problem}; it needs a timm ViT or DeiT "
                "(global self-attention over a class token and patch tokens)"
            )
        problem = _lrp_problem(loaded) if lrp else ""
        return f"method {name!r} is not defined for {loaded.name}: {problem}" if problem else ""

    return why


# --- the methods ----------------------------------------------------------------------------------------------------


@method(
    "attention_rollout",
    "Attention rollout: product over blocks of the head-fused attention + identity, row-normalised; class row",
    needs_grad=False,
    needs_model=True,
    class_agnostic=True,
    params={"head_fusion": "mean", "discard_ratio": 0.0},
    check=_rollout_check,
    unavailable=_unavailable("attention_rollout"),
    cost=lambda k, p: "1 forward (attention probabilities recorded), no backward",
    source="Abnar & Zuidema, ACL 2020; head_fusion and discard_ratio: jacobgil/vit-explain",
)
def attention_rollout(ctx: MethodInputs, head_fusion: str = "mean", discard_ratio: float = 0.0) -> torch.Tensor:
    """Per block, the attention probabilities fused over heads (mean, max or min), the smallest `discard_ratio`
    fraction of the N x N entries set to 0 (never the class token's own entry [0, 0]: vit-explain's rule), then
    A' = (A + I) / 2 normalised to rows summing to 1; the rollout is A'_L ... A'_1 and the map its class-token row over
    the patch tokens. With the defaults this is the paper's rollout (A' = 0.5 A + 0.5 I)."""
    assert ctx.model is not None
    rec, _ = _forward(ctx, full=False, grad=False)
    result: torch.Tensor | None = None
    for r in rec.blocks:
        a = _fuse_heads(cast(torch.Tensor, r.attn), head_fusion)
        n = a.shape[-1]
        if discard_ratio > 0:
            flat = a.flatten(1)
            drop = torch.zeros_like(flat, dtype=torch.bool)
            drop.scatter_(1, flat.topk(int(n * n * discard_ratio), -1, largest=False).indices, True)
            drop[:, 0] = False
            a = flat.masked_fill(drop, 0.0).view_as(a)
        a = (a + torch.eye(n, device=a.device, dtype=a.dtype)) / 2
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    assert result is not None
    return patch_map(result, ctx.model.net)


@method(
    "chefer_generic",
    "Generic attention explainability: R = I; per block R += mean_heads(ReLU(dS/dA * A)) R; class row",
    needs_grad=False,
    needs_model=True,
    unavailable=_unavailable("chefer_generic"),
    cost=lambda k, p: "1 forward + 1 backward (to the attention maps)",
    source="Chefer et al., ICCV 2021 (Transformer-MM-Explainability, ViT notebook)",
)
def chefer_generic(ctx: MethodInputs) -> torch.Tensor:
    """R starts as the N x N identity; for each block in order, R <- R + mean over heads of ReLU(grad ⊙ A) @ R, with A
    the block's attention probabilities and grad the gradient of the target's score with respect to them; the map
    is R's class-token row over the patch tokens (the authors' ViT notebook, rules 5 and 6)."""
    assert ctx.model is not None
    rec, logits = _forward(ctx, full=False, grad=True)
    grads = _attention_grads(ctx, rec, logits)
    attns = [cast(torch.Tensor, r.attn).detach() for r in rec.blocks]
    b, n = attns[0].shape[0], attns[0].shape[-1]
    rel = torch.eye(n, device=attns[0].device, dtype=attns[0].dtype).expand(b, n, n)
    for a, g in zip(attns, grads, strict=True):
        rel = rel + (g * a).clamp(min=0).mean(1) @ rel
    return patch_map(rel, ctx.model.net)


def safe_divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a / b with 0 where b == 0 and |b| raised to at least 1e-9: the published LRP code's `safe_divide`, kept to the
    letter so that its maps are reproduced."""
    den = b.clamp(min=1e-9) + b.clamp(max=1e-9)
    den = den + den.eq(0).to(den.dtype) * 1e-9
    return a / den * b.ne(0).to(b.dtype)


def _linear_relprop(r: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """LRP alpha=1, beta=0 through a Linear layer (bias ignored), signed inputs as the published code: positive inputs
    through positive weights and negative inputs through negative weights share R in proportion to their z."""
    pw, nw = weight.clamp(min=0), weight.clamp(max=0)
    px, nx = x.clamp(min=0), x.clamp(max=0)
    s = safe_divide(r, F.linear(px, pw) + F.linear(nx, nw))
    return px * (s @ pw) + nx * (s @ nw)


def _add_relprop(r: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LRP through a residual sum a + b: R split by z, then each branch rescaled so that the two carry R's total in
    the ratio of their |sums| (the published `Add.relprop`; sums per image, which is theirs at batch size 1)."""
    s = safe_divide(r, a + b)
    ra, rb = a * s, b * s
    dims = tuple(range(1, r.dim()))
    sa, sb, total = ra.sum(dims, keepdim=True), rb.sum(dims, keepdim=True), r.sum(dims, keepdim=True)
    fa = safe_divide(sa.abs(), sa.abs() + sb.abs()) * total
    fb = safe_divide(sb.abs(), sa.abs() + sb.abs()) * total
    return ra * safe_divide(fa, sa), rb * safe_divide(fb, sb)


def _clone_relprop(x: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """LRP back through a fork of x into two branches (the published `Clone.relprop`)."""
    return x * (safe_divide(r1, x) + safe_divide(r2, x))


def attention_relevance(net: nn.Module, rec: Recording, targets: torch.Tensor) -> list[torch.Tensor]:
    """The LRP relevance of every block's attention probabilities (B, heads, N, N), in block order, propagated from a
    one-hot relevance of class `targets` at the logits down to block 0 by the rules of Chefer et al.'s ViT_LRP:
    Linear alpha=1 beta=0, LayerNorm / GELU / softmax / dropout passing R unchanged, residual sums by `Add`, the two
    attention products A V and Q K^T splitting R by z and halving it between their operands."""
    model = cast(Any, net)
    head_in = rec.head_in[-1].detach()
    one_hot = F.one_hot(targets, model.head.out_features).to(head_in.dtype)
    r_cls = _linear_relprop(one_hot, head_in, model.head.weight)[:, None]
    first = cast(torch.Tensor, rec.blocks[-1].x)
    r = torch.zeros_like(first)
    r[:, :1] = head_in[:, None] * safe_divide(r_cls, head_in[:, None])  # the class token's selection (IndexSelect)
    out: list[torch.Tensor] = []
    for i in reversed(range(len(rec.blocks))):
        blk, b = model.blocks[i], rec.blocks[i]
        x, proj_out, fc2_out = (cast(torch.Tensor, t).detach() for t in (b.x, b.proj_out, b.fc2_out))
        mid = x + proj_out
        r_mid, r_mlp = _add_relprop(r, mid, fc2_out)
        r_mlp = _linear_relprop(r_mlp, cast(torch.Tensor, b.fc2_in).detach(), blk.mlp.fc2.weight)
        r_mlp = _linear_relprop(r_mlp, cast(torch.Tensor, b.fc1_in).detach(), blk.mlp.fc1.weight)
        r = _clone_relprop(mid, r_mid, r_mlp)
        r_res, r_attn = _add_relprop(r, x, proj_out)
        heads = blk.attn.num_heads
        r_attn = _linear_relprop(r_attn, cast(torch.Tensor, b.proj_in).detach(), blk.attn.proj.weight)
        r_attn = r_attn.unflatten(2, (heads, -1)).transpose(1, 2)  # b n (h d) -> b h n d
        qkv_out = cast(torch.Tensor, b.qkv_out).detach()
        q, k, v = qkv_out.unflatten(2, (3, heads, -1)).permute(2, 0, 3, 1, 4)
        a = cast(torch.Tensor, b.attn).detach()
        s = safe_divide(r_attn, a @ v)
        r_a, r_v = a * (s @ v.transpose(-1, -2)) / 2, v * (a.transpose(-1, -2) @ s) / 2
        out.append(r_a)
        if i == 0:
            break
        s = safe_divide(r_a, q @ k.transpose(-1, -2))  # softmax passes R unchanged
        r_q, r_k = q * (s @ k) / 2, k * (s.transpose(-1, -2) @ q) / 2
        r_qkv = torch.stack([r_q, r_k, r_v]).permute(1, 3, 0, 2, 4).flatten(2)  # qkv b h n d -> b n (qkv h d)
        r_qkv = _linear_relprop(r_qkv, cast(torch.Tensor, b.qkv_in).detach(), blk.attn.qkv.weight)
        r = _clone_relprop(x, r_res, r_qkv)
    return out[::-1]


@method(
    "chefer",
    "Transformer attribution: rollout of mean_heads(ReLU(dS/dA * LRP relevance of A)) + I; class row",
    needs_grad=False,
    needs_model=True,
    unavailable=_unavailable("chefer", lrp=True),
    cost=lambda k, p: "1 forward + 1 backward (to the attention maps) + 1 LRP pass down the blocks (about 2 backwards)",
    source="Chefer et al., CVPR 2021 (Transformer-Explainability, ViT_LRP 'transformer_attribution')",
)
def chefer(ctx: MethodInputs) -> torch.Tensor:
    """Per block, the gradient of the target's score with respect to the attention probabilities times their LRP
    relevance (`attention_relevance`), ReLU, mean over heads, plus the identity; the product of these over the blocks
    (later blocks on the left, rows not normalised) and its class-token row over the patch tokens: the authors'
    `transformer_attribution` with start_layer 0."""
    assert ctx.model is not None
    rec, logits = _forward(ctx, full=True, grad=True)
    grads = _attention_grads(ctx, rec, logits)
    cams = attention_relevance(ctx.model.net, rec, ctx.targets)
    n = cams[0].shape[-1]
    eye = torch.eye(n, device=cams[0].device, dtype=cams[0].dtype)
    joint: torch.Tensor | None = None
    for g, cam in zip(grads, cams, strict=True):
        m = (g * cam).clamp(min=0).mean(1) + eye
        joint = m if joint is None else m @ joint
    assert joint is not None
    return patch_map(joint, ctx.model.net)
