"""Pixel-space geometry: resize + crop to [0,1] RGB tensors, with boxes mapped through the same geometry.

Mean/std normalisation is *not* done here: it belongs to the model wrapper, so explanation images
E = L * I can be formed in pixel space (docs/definitions.md, D3). torchvision.transforms.v2 moves
bounding boxes through Resize/CenterCrop exactly like the image, which is why we use it rather than
hand-written box arithmetic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from camexp.errors import CamexpError

# torchvision is imported where a transform is built or applied: `camexp methods` and the other listings import this
# module (InputSpec, through camexp.models) and would otherwise load all of torchvision, its detection ops included.


@dataclass(frozen=True)
class InputSpec:
    """The backbone's own preprocessing (timm data config)."""

    size: tuple[int, int]
    interpolation: str
    crop_pct: float
    crop_mode: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_timm(cls, cfg: dict[str, Any]) -> InputSpec:
        _, h, w = cfg["input_size"]
        return cls(
            size=(int(h), int(w)),
            interpolation=str(cfg.get("interpolation", "bilinear")),
            crop_pct=float(cfg.get("crop_pct", 0.875) or 1.0),
            crop_mode=str(cfg.get("crop_mode", "center")),
            mean=tuple(float(m) for m in cfg["mean"]),  # type: ignore[arg-type]
            std=tuple(float(s) for s in cfg["std"]),  # type: ignore[arg-type]
        )

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> InputSpec:
        """The spec as run.json's `input` keeps it (its fields, tuples as JSON lists)."""
        (h, w), (r, g, b), (sr, sg, sb) = d["size"], d["mean"], d["std"]
        return cls(
            size=(int(h), int(w)),
            interpolation=str(d["interpolation"]),
            crop_pct=float(d["crop_pct"]),
            crop_mode=str(d["crop_mode"]),
            mean=(float(r), float(g), float(b)),
            std=(float(sr), float(sg), float(sb)),
        )


_INTERP = ("bilinear", "bicubic", "nearest", "lanczos")  # the values of torchvision's InterpolationMode we accept


class PixelTransform:
    """PIL image (+ optional boxes in xyxy original pixels) -> float tensor (3,H,W) in [0,1] (+ mapped boxes).

    Matches timm's eval transform without its final Normalize: resize so that the crop is `crop_pct` of
    the resized image (shorter side for `center`, both sides for `squash`), then center-crop.
    """

    def __init__(self, spec: InputSpec):
        from torchvision.transforms import InterpolationMode, v2

        h, w = spec.size
        if spec.interpolation not in _INTERP:
            raise CamexpError(f"unsupported interpolation {spec.interpolation!r} in the model's data config")
        interp = InterpolationMode(spec.interpolation)
        if spec.crop_mode == "center":
            scale = (
                math.floor(h / spec.crop_pct)
                if h == w
                else (math.floor(h / spec.crop_pct), math.floor(w / spec.crop_pct))
            )
        elif spec.crop_mode == "squash":
            scale = (math.floor(h / spec.crop_pct), math.floor(w / spec.crop_pct))
        else:
            raise CamexpError(
                f"crop_mode {spec.crop_mode!r} of the model's data config is not supported (center, squash)"
            )
        self.spec = spec
        self._resize = scale
        self._geometry = v2.Compose([v2.Resize(scale, interpolation=interp, antialias=True), v2.CenterCrop((h, w))])
        self._to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])

    def scale(self, height: int, width: int) -> tuple[float, float]:
        """(sy, sx): input pixels per original pixel for an image of `height` x `width`, vertically and
        horizontally, as torchvision's Resize sizes it (an int resizes the shorter side and truncates the
        longer one; a pair is the exact size); the centre crop moves pixels without scaling them."""
        if isinstance(self._resize, int):
            short, long = sorted((height, width))
            new_short, new_long = self._resize, int(self._resize * long / short)
            new_h, new_w = (new_short, new_long) if height <= width else (new_long, new_short)
        else:
            new_h, new_w = self._resize
        return new_h / height, new_w / width

    def __call__(
        self, image: Image.Image, boxes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        mapped = None if boxes is None else self.map_boxes(boxes, image.height, image.width)
        return self._to_tensor(self._geometry(image)), mapped

    def map_boxes(self, boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Boxes (N,4) xyxy in the pixels of a `height` x `width` image, through the same resize and crop as
        its pixels, clamped to the input; needs only the image's size, not its pixels."""
        from torchvision import tv_tensors

        bb = tv_tensors.BoundingBoxes(boxes.float(), format="XYXY", canvas_size=(height, width))
        h, w = self.spec.size
        bb = self._geometry(bb).as_subclass(torch.Tensor).clone()
        bb[:, 0::2] = bb[:, 0::2].clamp(0, w)
        bb[:, 1::2] = bb[:, 1::2].clamp(0, h)
        return bb

    def map_masks(self, masks: torch.Tensor, empty: bool = False) -> torch.Tensor:
        """Masks (N,h,w) of an image's pixels through the same resize (nearest neighbour) and crop: (N,H,W) bool;
        `empty`: all False (an image that could not be decoded)."""
        from torchvision import tv_tensors

        if empty:
            return torch.zeros(len(masks), *self.spec.size, dtype=torch.bool)
        return self._geometry(tv_tensors.Mask(masks.to(torch.uint8))).as_subclass(torch.Tensor).bool()

    def tensor(self, image: torch.Tensor) -> torch.Tensor:
        """A decoded uint8 image tensor (3,h,w), on any device, through the same geometry as a PIL image:
        torchvision's antialiased resize of tensors and the same centre crop, then [0,1] float32. Resampling
        rounds differently from PIL's (docs/guide/speed-gpu.md, 'GPU settings', decode). Tensors have no lanczos
        resampling."""
        return self._to_tensor(self._geometry(image)).as_subclass(torch.Tensor)
