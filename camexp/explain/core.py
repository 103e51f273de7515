"""The explainer core: one forward and at most one backward per batch serve every method.

A forward hook replaces the layer's output by a leaf tensor that requires grad, in map layout (B,K,h,w)
whatever the layer's own layout (camexp/models/layout.py). Parameters are frozen and the input needs no
grad, so autograd records nothing before the layer and the backward pass runs through the head only.
Methods that call the model get, through their context, the run's scorer, the tail of the network after
the layer, and further forward + head-backward passes on other inputs.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from pydantic import ValidationError
from torch import nn

from camexp import profile
from camexp.accel import chunks
from camexp.config import SMOOTH_KEY, SmoothSpec
from camexp.errors import CamexpError
from camexp.explain.maps import upsample_normalize
from camexp.explain.methods import METHODS, Method, MethodInputs
from camexp.explain.scoring import Scorer
from camexp.explain.smooth import smoothed
from camexp.models import LoadedModel
from camexp.models.layers import forward_hooks
from camexp.models.layout import FeatureLayout, grid_fits
from camexp.registry import own_traceback


@dataclass(frozen=True)
class MethodRun:
    """A method as a run uses it: the name its records carry, the registered method and its parameters."""

    name: str
    method: Method
    params: dict[str, Any] = field(default_factory=dict)
    smooth: SmoothSpec | None = None

    @property
    def resolved(self) -> dict[str, Any]:
        """Every parameter the method runs with: its defaults, overridden by the config's, and its `smooth`
        setting (defaults filled in) when it has one."""
        smooth = {SMOOTH_KEY: self.smooth.model_dump()} if self.smooth else {}
        return {**self.method.params, **self.params, **smooth}

    def cost(self, channels: int | None) -> str:
        """What the method adds per image (`Method.cost`), n times over with `smooth`."""
        once = self.method.cost(channels, {**self.method.params, **self.params})
        if self.smooth is None:
            return once
        shared = "" if self.method.pixel else " + its own forward (+ head backward)"
        return f"{self.smooth.n} noisy copies x ({once}{shared})"

    def __call__(self, inputs: MethodInputs) -> torch.Tensor:
        """The method's maps of the batch, smoothed when it has a `smooth` setting."""
        if self.smooth is None:
            return self.method(inputs, **self.params)
        return smoothed(self.method, {**self.method.params, **self.params}, self.smooth, inputs)


def method_runs(specs: list[str] | list[tuple[str, str, dict[str, Any]]] | list[MethodRun]) -> list[MethodRun]:
    """Resolve method names (or (name, method, params) triples) against the registry; runs already
    resolved pass through, so that a run resolves its methods once."""
    if specs and all(isinstance(s, MethodRun) for s in specs):
        return [s for s in specs if isinstance(s, MethodRun)]
    triples = [(s, s, {}) if isinstance(s, str) else cast(tuple[str, str, dict[str, Any]], s) for s in specs]
    unknown = METHODS.unknown([m for _, m, _ in triples])
    if unknown:
        raise CamexpError(METHODS.plugin_failure(unknown) or f"unknown method(s) {unknown}; known: {METHODS.names()}")
    runs = []
    for name, m, params in triples:
        entry = METHODS.get(m)
        own = {k: v for k, v in params.items() if k != SMOOTH_KEY}
        problem = entry.param_problem(own)
        if problem:
            raise CamexpError(f"method {name!r} ({m}): {problem}")
        runs.append(MethodRun(name, entry, own, _smooth_spec(name, params.get(SMOOTH_KEY))))
    return runs


def _smooth_spec(name: str, value: object) -> SmoothSpec | None:
    """A method's `smooth` setting validated (one line naming the key on a bad one), None when it has none."""
    if value is None or isinstance(value, SmoothSpec):
        return value
    try:
        return SmoothSpec.model_validate(value)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, (SMOOTH_KEY, *err["loc"])))
        raise CamexpError(f"method {name!r}: {where}: {err['msg']}") from None


def run_method(r: MethodRun, inputs: MethodInputs, image_ids: list[str] | None = None) -> torch.Tensor:
    """The method's (B, h, w) maps of the batch. A method that raises or returns something else stops the
    run with one line naming it (for a plug-in, its import path), the batch and what was wrong, and below it
    the method's own traceback (a bug in a plug-in is its author's to fix) -- never torch's error alone."""
    b, device, (h, w) = len(inputs.targets), inputs.A.device, inputs.A.shape[2:]
    who = f"method {r.name!r}" + (f" ({r.method.name})" if r.method.name != r.name else "")
    more = " ..." if image_ids and len(image_ids) > 3 else ""
    batch = f"a batch of {b}" + (f" (images {image_ids[:3]}{more})" if image_ids else "")
    module = getattr(r.method.fn, "__module__", None)
    try:
        raw = r(inputs)
    except CamexpError:  # a method's own one-line refusal
        raise
    except Exception as e:
        raise CamexpError(f"{who} raised {e.__class__.__name__} on {batch}: {e}{own_traceback(e, module)}") from None
    if not isinstance(raw, torch.Tensor):
        got = f"a {type(raw).__module__}.{type(raw).__qualname__}, not a torch.Tensor"
    elif raw.dim() != 3 or raw.shape[0] != b or not grid_fits((raw.shape[1], raw.shape[2]), (h, w)):
        got = f"shape {tuple(raw.shape)}"
    elif raw.device != device:
        got = f"a tensor on {raw.device}"
    else:
        return raw
    raise CamexpError(
        f"{who} returned {got} for {batch}; expected (B, h, w): a torch.Tensor ({b}, h, w) shaped "
        f"like the layer's {h}x{w} maps, on {device}{_defined_at(r.method.fn)}"
    )


def _defined_at(fn: object) -> str:
    """' (defined at FILE:LINE)' for a function whose source is known, else ''."""
    try:
        return f" (defined at {inspect.getsourcefile(fn)}:{inspect.getsourcelines(fn)[1]})"  # type: ignore[arg-type]
    except (TypeError, OSError):
        return ""


@dataclass
class Explanation:
    """Everything one batch yields: logits on the full images, targets, and per method the normalised
    maps (B,H,W) with flags of constant maps and of non-finite maps, the method's counters (forwards
    run, channels skipped: `MethodInputs.count`) and its maps as it returned them, at the layer's resolution
    (B,h,w), before upsampling and normalisation, signs and scale kept (what `output.maps` keeps; the `mprt`
    sanity check compares their absolute values)."""

    logits: torch.Tensor
    targets: torch.Tensor
    maps: dict[str, torch.Tensor]
    constant: dict[str, torch.Tensor]
    finite: dict[str, torch.Tensor]
    inputs: MethodInputs
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    layer_maps: dict[str, torch.Tensor] = field(default_factory=dict)


@contextmanager
def leaf_activation(layer: nn.Module, layout: FeatureLayout) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
    """While active, `layer`'s output becomes a fresh leaf in map layout that requires grad; each call
    appends (leaf maps, detached native output) to the yielded list.

    The model continues on a clone of the leaf, so an in-place op after the layer (VGG's ReLU(inplace))
    cannot modify A or trip autograd's leaf check.
    """
    store: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
        native = output.detach()
        maps = layout.to_maps(native)
        leaf = (maps if maps is native else maps.contiguous()).requires_grad_(True)  # a permuted view: dense
        store.append((leaf, native))
        return layout.to_native(leaf.clone(), native)

    with forward_hooks([(layer, hook)]):
        yield store


class Explainer:
    """Computes maps of several methods for a batch of pixel-space images on the model's device."""

    def __init__(
        self,
        loaded: LoadedModel,
        methods: list[str] | list[tuple[str, str, dict[str, Any]]] | list[MethodRun],
        score: str = "logit",
        scorer: Scorer | None = None,
    ):
        if score not in ("logit", "softmax"):
            raise CamexpError(f"score must be 'logit' or 'softmax', not {score!r}")
        self.runs = method_runs(methods)
        for r in self.runs:
            why = r.method.unavailable(loaded)
            if why:
                raise CamexpError(why)
        self.loaded = loaded
        self.methods = [r.name for r in self.runs]
        self.score = score
        self.scorer = scorer or Scorer(loaded.model)
        self.needs_grad = any(r.method.needs_grad for r in self.runs)

    def only(self, name: str) -> Explainer:
        """An explainer of method run `name` alone, sharing this one's model and scorer: a metric that
        re-explains one method's own images (ADCC's coherency) computes no other method's maps."""
        return Explainer(self.loaded, [r for r in self.runs if r.name == name], self.score, self.scorer)

    def forward_backward(
        self, x: torch.Tensor, targets: torch.Tensor | None = None, grad: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One forward (and with `grad`, one head backward) of pixel images x: logits, targets, A and G in
        map layout, and the layer's native output. `targets` None means the top-1 prediction of each image."""
        with leaf_activation(self.loaded.layer, self.loaded.layout) as store, torch.enable_grad():
            logits = self.loaded.model(x)
            A, native = store[-1]
            t = logits.argmax(1) if targets is None else targets.to(logits.device)
            G = None
            if grad:
                scores = logits if self.score == "logit" else logits.float().softmax(1)
                (G,) = torch.autograd.grad(scores.gather(1, t[:, None]).sum(), A)
        return logits.detach(), t, A.detach().float(), None if G is None else G.float(), native

    def activations(
        self, x: torch.Tensor, targets: torch.Tensor | None = None, image_ids: list[str] | None = None
    ) -> tuple[torch.Tensor, MethodInputs]:
        """Forward (and, if any method needs it, backward) pass: logits and the methods' context.
        `image_ids` (one per image) seed the methods that draw noise; without them they seed by pixels."""
        logits, t, A, G, native = self.forward_backward(x, targets, self.needs_grad)

        def tail(a: torch.Tensor, which: torch.Tensor | None = None) -> torch.Tensor:
            return self.tail(a, x, native, which)

        inputs = MethodInputs(
            A=A,
            G=G,
            targets=t,
            cam_weight=self.loaded.cam_weight,
            x=x,
            logits=logits,
            scorer=self.scorer,
            score=self.score,
            image_ids=image_ids,
            tail=tail,
            grads=self.grads,
            model=self.loaded.model,
            at=lambda other: self.activations(other, t, image_ids)[1],
        )
        return logits, inputs

    def grads(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A and G of images x for classes t: one more forward + head backward (`MethodInputs.grads`)."""
        _, _, A, G, _ = self.forward_backward(x, t)
        assert G is not None  # forward_backward takes the gradient by default
        return A, G

    def tail(
        self, a: torch.Tensor, x: torch.Tensor, native: torch.Tensor, which: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits of the network after the layer for activations `a` (N,K,h,w) in map layout; row n belongs
        to image which[n] of the batch (default: row n is image n). Inference mode, float32 whatever the run's
        amp: the tail computes map weights (Ablation-CAM's small score differences), and maps must not depend
        on a speed setting. A full-forward tail (a model that cannot be split at the layer) runs in the
        scorer's chunks, as any forward of whole images."""
        which = torch.arange(len(a), device=a.device) if which is None else which
        lay = self.loaded.layout
        with torch.inference_mode():
            a_native = lay.to_native(a.to(native.dtype), native, which)
            if self.loaded.tail.split is not None:
                return self.loaded.tail(a_native)
            return torch.cat(
                [
                    self.loaded.tail(a_native[span], self.loaded.model.normalize(x[which[span]]))
                    for span in chunks(len(a), self.scorer.chunk)
                ]
            )

    def explain(
        self, x: torch.Tensor, targets: torch.Tensor | None = None, image_ids: list[str] | None = None
    ) -> Explanation:
        """Maps of every method for images `x` (B,3,H,W in [0,1]); see `activations` for `targets` and
        `image_ids`."""
        logits, inputs = self.activations(x, targets, image_ids)
        profile.lap(profile.SHARED_PASS)
        maps, constant, finite, counts, layer_maps = {}, {}, {}, {}, {}
        for r in self.runs:
            inputs.counts = {}
            raw = run_method(r, inputs, image_ids)
            counts[r.name] = inputs.counts
            maps[r.name], constant[r.name] = upsample_normalize(raw, (x.shape[-2], x.shape[-1]))
            finite[r.name] = torch.isfinite(raw).all(dim=(1, 2))
            layer_maps[r.name] = raw.detach()
            profile.lap(profile.METHOD + r.name)
        return Explanation(logits, inputs.targets, maps, constant, finite, inputs, counts, layer_maps)
