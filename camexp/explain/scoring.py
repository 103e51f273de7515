"""Target confidences of pixel-space images: the forwards that every metric and model-calling method shares.

One set of rules for all of them, the explanation forward's: inference mode (no autograd bookkeeping),
chunks of `chunk` images (camexp/accel.py's forward_chunk), channels_last where the device prefers it, and
the run's `amp` autocast. Masked images L * I are built chunk by chunk, so a caller may score thousands of
masks per batch (Score-CAM) without ever holding all the masked images at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from camexp.accel import MAX_FORWARD, autocast, channels_last, chunks, even_chunk
from camexp.models import PixelModel


def confidence(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Post-softmax (single-label) or post-sigmoid (multi-label) confidences, or with `logit` the scores
    before either (what Ablation-CAM and Score-CAM's softmax weighting read), in float64."""
    z = logits.double()
    return z if kind == "logit" else z.softmax(1) if kind == "softmax" else z.sigmoid()


def target_scores(logits: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """(N,) float64 `confidence` of class targets[n] in row n of `logits` (N, C)."""
    return confidence(logits, kind).gather(1, targets[:, None])[:, 0]


def activation_bytes(model: PixelModel, image: torch.Tensor) -> int:
    """Bytes of every leaf module's output in one forward of `image` (1,3,H,W): about what a forward that will be
    backpropagated keeps per image (Lite0 at 224: 96 MiB summed, 80 MiB measured as peak memory per image)."""
    total = 0

    def add(module: torch.nn.Module, inputs: object, output: object) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    leaves = [m for m in model.net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(add) for m in leaves]
    try:
        with torch.inference_mode():
            model.net(model.normalize(Scorer._layout(image)))
    finally:
        for h in handles:
            h.remove()
    return total


@dataclass
class Scorer:
    """Scores images for one model under the run's rules.

    `occlusion`: `pixel` masks the [0,1] RGB image and normalises after (the paper); `normalized` masks the
    already-normalised tensor (torchcam's variant, where black becomes the mean colour). `kind`: softmax
    or sigmoid confidences (or `logit`, see `confidence`)."""

    model: PixelModel
    occlusion: str = "pixel"
    kind: str = "softmax"
    chunk: int | None = None
    amp: str = "off"
    pass_budget: int | None = None  # accel.pass_budget; None: generated images run in `chunk`s
    _per_image: dict[tuple[int, ...], int] = field(default_factory=dict, repr=False)

    def pass_chunk(self, x: torch.Tensor, n: int) -> int | None:
        """Images per pass for n images shaped like x's that a method generates (IG steps, SmoothGrad copies,
        RISE masks, occlusion windows), in passes of near-equal sizes (`even_chunk`): as many as `pass_budget`
        holds were they all backpropagated (their activations measured once per image shape by
        `activation_bytes`), at most MAX_FORWARD; without a budget, `chunk`."""
        if self.pass_budget is None:
            return even_chunk(n, self.chunk)
        shape = tuple(x.shape[1:])
        if shape not in self._per_image:
            self._per_image[shape] = max(1, activation_bytes(self.model, x[:1]))
        return even_chunk(n, max(1, min(MAX_FORWARD, self.pass_budget // self._per_image[shape])))

    def logits(self, images: torch.Tensor, normalized: bool = False, chunk: int | None = None) -> torch.Tensor:
        """Logits of (N,3,H,W) images (pixel space, or model space when `normalized`), in forwards of `chunk`
        images (default: the scorer's)."""
        outs = []
        with torch.inference_mode(), autocast(images.device, self.amp):
            for span in chunks(len(images), chunk or self.chunk):
                part = self._layout(images[span])
                outs.append(self.model.net(part if normalized else self.model.normalize(part)))
        return torch.cat(outs)

    def images(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N,) float64 confidence of `targets` (N,) on pixel-space images (N,3,H,W)."""
        return target_scores(self.logits(images), targets, self.kind)

    def masked(self, x: torch.Tensor, masks: torch.Tensor, which: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(N,) float64 confidence of `targets[which]` on the masked images masks[n] * x[which[n]].

        x: (B,3,H,W) pixel-space images; masks: (N,H,W) in [0,1]; which: (N,) image index of each mask.
        The occlusion rule decides whether the mask multiplies the pixel image or the normalised tensor.
        """
        base = x if self.occlusion == "pixel" else self.model.normalize(x)
        t = targets[which]
        outs = []
        with torch.inference_mode(), autocast(x.device, self.amp):
            for span in chunks(len(masks), self.chunk):
                part = self._layout(masks[span, None] * base[which[span]])
                net_in = self.model.normalize(part) if self.occlusion == "pixel" else part
                outs.append(target_scores(self.model.net(net_in), t[span], self.kind))
        return torch.cat(outs) if outs else torch.empty(0, dtype=torch.float64, device=x.device)

    def explanations(self, x: torch.Tensor, maps: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """(B, M) confidence of each image's target on every method's explanation image E = L * I."""
        b = len(x)
        stacked = torch.cat([maps[m] for m in maps])  # (M*B,H,W), method-major like the records
        which = torch.arange(b, device=x.device).repeat(len(maps))
        return self.masked(x, stacked, which, targets).view(len(maps), b).T

    @staticmethod
    def _layout(images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if channels_last(images.device) else images
