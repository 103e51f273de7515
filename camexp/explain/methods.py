"""CAM methods: the registry, the context a method sees, and the methods that need only A and G.

A method is a function `fn(ctx: MethodInputs, **params) -> (B, h, w)` map before upsampling
(docs/definitions.md, D2), registered with its metadata by `@method(...)`. Methods of (A, G) alone stay
three-line pure functions; methods that call the model (Score-CAM, Ablation-CAM, noise-averaged ones)
use the context's `scorer`, `tail` and `grads`, which the explainer provides for the batch. Methods that
call the model live in camexp/explain/model_methods.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

import torch

from camexp.registry import Registry

if TYPE_CHECKING:
    from camexp.explain.scoring import Scorer
    from camexp.models import LoadedModel, PixelModel


class TailFn(Protocol):
    """`tail(A', which)`: logits of the network after the layer for activations A' of the images `which`
    (indices into the batch; None: all of them)."""

    def __call__(self, a: torch.Tensor, which: torch.Tensor | None = None) -> torch.Tensor: ...


@dataclass
class MethodInputs:
    """What a method may read for one batch. A and G (B,K,h,w, float32; G None when no method of the run
    needs a gradient), the target classes (B,) and the classifier weights for CAM (C,K). Methods that call
    the model also get the pixel-space input x (B,3,H,W), the full-image logits, a `scorer` of pixel-space
    images, `tail(A') -> logits` (the network after the layer) and `grads(x', targets) -> (A', G')` (one
    more forward + head backward, e.g. on a noisy copy). Pixel-level attributions (gradients w.r.t. the input)
    call `model`, the whole network on pixel-space [0,1] images, under `torch.enable_grad()`. `at(x')` is the
    context of the same images' targets and ids on other pixel images x' (B,3,H,W): one more shared pass, what
    `smooth:` runs a CAM method on for each noisy copy. Derived values
    (alpha) are computed once, lazily, and shared by every method of the batch."""

    A: torch.Tensor
    G: torch.Tensor | None
    targets: torch.Tensor
    cam_weight: torch.Tensor | None = None
    x: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    scorer: Scorer | None = None
    tail: TailFn | None = None
    grads: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
    score: str = "logit"
    image_ids: list[str] | None = None
    model: PixelModel | None = None
    at: Callable[[torch.Tensor], MethodInputs] | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, key: str, n: int) -> None:
        """Add `n` to the method's counter `key` (e.g. forwards run, channels skipped); the explainer
        collects each method's counters per batch (`Explanation.counts`) and a run sums them into run.json."""
        self.counts[key] = self.counts.get(key, 0) + int(n)

    @cached_property
    def alpha(self) -> torch.Tensor:
        """Grad-CAM++ alpha of this batch's A and G (`gradcampp_alpha`)."""
        assert self.G is not None
        return gradcampp_alpha(self.A, self.G)


def gradcampp_alpha(A: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ alpha, eq. (14) with Y = exp(S): G^2 / (2G^2 + sum_ab A_ab G^3).

    Evaluated as 1 / (2 + sum_ab A_ab * G), which is exact where G != 0 and, unlike the G^2 form,
    needs no epsilon: with |G| ~ 1e-3 an eps of 1e-6 would swamp the true denominator. alpha = 0 where
    G = 0 or where the denominator vanishes.
    """
    denom = (A.sum((2, 3), keepdim=True) * G).add_(2.0)
    ok = torch.logical_and(G, denom)  # G != 0 and denom != 0, in one pass
    return torch.where(ok, denom.reciprocal_(), 0.0)  # 1/0 = inf where not ok is never chosen


def gradcampp_weights(alpha: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ channel weights w_k = sum_ij alpha_ij ReLU(G_ij) -> (B,K)."""
    return (alpha * G.relu()).sum((2, 3))


MethodFn = Callable[..., torch.Tensor]


def _no_extra_cost(channels: int | None, params: Mapping[str, Any]) -> str:
    return "0 (shares the one forward + backward)"


@dataclass(frozen=True)
class Method:
    """A registered method and what the explainer and the config checks need to know about it.

    `cost(K, params)` says what the method adds to the shared forward + backward per image, for a layer
    of K channels (None: not known, say "K"); `unavailable(loaded)` gives the reason the method cannot run on a
    backbone ('' if it can);
    `pixel`: a pixel-level attribution that reads only x, the model, the targets and the scorer (not A or G), takes
    a `reduce` parameter (camexp/explain/attributions.py: REDUCTIONS) and computes (B,3,H,W) before reducing it;
    `params` are the defaults of its keyword parameters (a config may override them, with values of the
    default's type) and `check(params)` says what is wrong with a full set of them ('' if nothing). `notes`
    maps a counter (`MethodInputs.count`) to what a run's summary says when it is not 0 ({n}: its value).
    `floor`: a baseline that never looks at the model (random, center): reports that measure how far metrics
    agree about the methods (`camexp report reliability`) show it on a line of its own."""

    name: str
    fn: MethodFn
    summary: str
    needs_grad: bool = True
    needs_model: bool = False
    uses_alpha: bool = False
    class_agnostic: bool = False
    pixel: bool = False
    cost: Callable[[int | None, Mapping[str, Any]], str] = _no_extra_cost
    unavailable: Callable[[LoadedModel], str] = lambda loaded: ""
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    check: Callable[[Mapping[str, Any]], str] = lambda params: ""
    source: str = ""
    notes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    floor: bool = False

    def __call__(self, ctx: MethodInputs, **params: Any) -> torch.Tensor:
        return self.fn(ctx, **{**self.params, **params})

    def param_problem(self, params: Mapping[str, Any]) -> str:
        """What is wrong with config `params` for this method: an unknown name, a value of another type than
        the default's (an int is a valid float), or what `check` says; '' if nothing."""
        extra = sorted(set(params) - set(self.params))
        if extra:
            return f"no parameter(s) {extra}; its parameters: {dict(self.params)}"
        for key, value in params.items():
            want = type(self.params[key])
            ok = isinstance(value, want) and not (isinstance(value, bool) and want is not bool)
            if not ok and not (want is float and isinstance(value, int) and not isinstance(value, bool)):
                return (
                    f"parameter {key!r} must be of type {want.__name__} (default {self.params[key]!r}), not {value!r}"
                )
        return self.check({**self.params, **params})


def counter_notes(counts: Mapping[str, Mapping[str, int]], methods: Mapping[str, str]) -> list[str]:
    """What the methods' counters that are not 0 mean for the run (`Method.notes`), one line per counter.
    `counts`: record name -> counter -> n; `methods`: record name -> registered method."""
    lines: list[str] = []
    for name, method_name in methods.items():
        notes = METHODS.get(method_name).notes
        lines += [f"{name}: {notes[key].format(n=n)}" for key, n in counts.get(name, {}).items() if n and key in notes]
    return lines


def _as_method(name: str, obj: Any) -> Method:
    """A plug-in is a `Method` (e.g. made with `@method`) or a bare function of (A, G): a gradient method."""
    if isinstance(obj, Method):
        return obj
    if callable(obj):
        doc = (obj.__doc__ or "").strip().splitlines()
        return Method(name=name, fn=obj, summary=doc[0] if doc else f"plug-in {name}", source="plug-in")
    raise TypeError(f"a method must be a function of MethodInputs (or a camexp Method), not {type(obj).__name__}")


METHODS: Registry[Method] = Registry("method", _as_method)


def method(name: str, summary: str, **meta: Any) -> Callable[[MethodFn], Method]:
    """Register `fn` as method `name` with metadata (see `Method`); returns the `Method`, still callable."""

    def register(fn: MethodFn) -> Method:
        return METHODS.register(name, Method(name=name, fn=fn, summary=summary, **meta))

    return register


def weighted_sum(w: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """sum_k w_k A_k for channel weights w (B,K) -> (B,h,w)."""
    return torch.einsum("bk,bkhw->bhw", w, A)


def _needs_cam_head(loaded: LoadedModel) -> str:
    if loaded.cam_weight is not None:
        return ""
    return (
        f"method 'cam' is not defined for {loaded.name} at layer {loaded.layer_name!r}: {loaded.cam_unavailable}. "
        "Use gradient methods (gradcam, gradcam++, ...) instead."
    )


@method(
    "cam",
    "CAM (Zhou et al.): classifier weights of the target class; GAP + linear heads only",
    needs_grad=False,
    unavailable=_needs_cam_head,
    source="Zhou et al., CVPR 2016",
)
def cam(x: MethodInputs) -> torch.Tensor:
    assert x.cam_weight is not None
    return weighted_sum(x.cam_weight[x.targets].to(x.A.dtype), x.A)


@method("gradcam", "Grad-CAM: w_k = mean of G", source="Selvaraju et al., ICCV 2017")
def gradcam(x: MethodInputs) -> torch.Tensor:
    assert x.G is not None  # a method with needs_grad (the default) always gets G
    return weighted_sum(x.G.mean((2, 3)), x.A).relu()


@method("gradcam+", "Grad-CAM+: w_k = mean of ReLU(G) (equivalence paper eq. 3)", source="equivalence paper, eq. 3")
def gradcam_plus(x: MethodInputs) -> torch.Tensor:
    assert x.G is not None  # a method with needs_grad (the default) always gets G
    return weighted_sum(x.G.relu().mean((2, 3)), x.A).relu()


@method(
    "gradcam++",
    "Grad-CAM++: w_k = sum alpha * ReLU(G), exact eq. (14) alpha",
    uses_alpha=True,
    source="Chattopadhyay et al., WACV 2018, eq. 14",
)
def gradcam_pp(x: MethodInputs) -> torch.Tensor:
    assert x.G is not None  # a method with needs_grad (the default) always gets G
    return weighted_sum(gradcampp_weights(x.alpha, x.G), x.A).relu()


@method(
    "gradcam++all",
    "Grad-CAM++ with alpha on all gradients, no ReLU on G (supplementary Table 4)",
    uses_alpha=True,
    source="Grad-CAM++ supplementary §6.1",
)
def gradcam_pp_all(x: MethodInputs) -> torch.Tensor:
    assert x.G is not None  # a method with needs_grad (the default) always gets G
    return weighted_sum((x.alpha * x.G).sum((2, 3)), x.A).relu()


@method(
    "gradcam++orig",
    "Grad-CAM++ with alpha normalised per channel over G > 0, as the authors' code",
    uses_alpha=True,
    source="Grad-CAM++ authors' code (misc/utils.py)",
)
def gradcam_pp_orig(x: MethodInputs) -> torch.Tensor:
    assert x.G is not None  # a method with needs_grad (the default) always gets G
    norm = (x.alpha * (x.G > 0)).sum((2, 3), keepdim=True)
    alpha = x.alpha / torch.where(norm == 0, torch.ones_like(norm), norm)
    return weighted_sum((alpha * x.G.relu()).sum((2, 3)), x.A).relu()


@method("hirescam", "HiRes-CAM (extension): ReLU(sum_k G_k * A_k), element-wise", source="Draelos & Carin, 2020")
def hirescam(x: MethodInputs) -> torch.Tensor:
    assert x.G is not None  # a method with needs_grad (the default) always gets G
    return (x.G * x.A).sum(1).relu()


@method("layercam", "LayerCAM (extension): ReLU(sum_k ReLU(G_k) * A_k), element-wise", source="Jiang et al., TIP 2021")
def layercam(x: MethodInputs) -> torch.Tensor:
    assert x.G is not None  # a method with needs_grad (the default) always gets G
    return (x.G.relu() * x.A).sum(1).relu()


@method(
    "xgradcam",
    "XGrad-CAM: w_k = sum_ij (A_ij / sum_ab A_ab) G_ij (0 where sum_ab A_ab = 0)",
    source="Fu et al., BMVC 2020",
)
def xgradcam(x: MethodInputs) -> torch.Tensor:
    assert x.G is not None  # a method with needs_grad (the default) always gets G
    total = x.A.sum((2, 3))
    w = (x.A * x.G).sum((2, 3)) / torch.where(total == 0, torch.ones_like(total), total)
    return weighted_sum(torch.where(total == 0, torch.zeros_like(w), w), x.A).relu()


@method(
    "eigencam",
    "Eigen-CAM: projection of A on its first right-singular vector (not centred), class-agnostic",
    needs_grad=False,
    class_agnostic=True,
    cost=lambda k, p: "0 (an SVD of the h*w x K activation matrix)",
    source="Muhammad & Yeasin, IJCNN 2020",
)
def eigencam(x: MethodInputs) -> torch.Tensor:
    """L = A v for the first right-singular vector v of the (h*w) x K matrix M of A, i.e. sigma_1 u_1 (so v itself
    is never formed), signed so that sum L * (sum_k A_k) >= 0, then ReLU. The SVD runs in float64: a small
    singular gap would otherwise turn float32 rounding into a different map. An image with non-finite
    activations gets a NaN map (the run then names it) instead of failing the SVD of the whole batch."""
    b, k, h, w = x.A.shape
    m = x.A.double().flatten(2).transpose(1, 2)  # (B, h*w, K): rows are positions
    finite = torch.isfinite(m).all(2).all(1)[:, None]
    u, s, _ = torch.linalg.svd(torch.where(finite[..., None], m, 0.0), full_matrices=False)
    proj = u[..., 0] * s[..., :1]
    sign = torch.where((proj * m.sum(2)).sum(1, keepdim=True) < 0, -1.0, 1.0)
    proj = torch.where(finite, sign * proj, float("nan"))
    return proj.view(b, h, w).to(x.A.dtype).relu()
