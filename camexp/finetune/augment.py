"""Training augmentation in pixel space: random resized crop + horizontal flip, then [0,1] RGB.

It is the eval `PixelTransform` with another geometry, so it fits `ImageDataset` and maps boxes alike;
mean/std normalisation stays in the model wrapper.
"""

from __future__ import annotations

from torchvision.transforms import InterpolationMode, v2

from camexp.data.transforms import InputSpec, PixelTransform


class TrainTransform(PixelTransform):
    def __init__(self, spec: InputSpec, crop_scale: tuple[float, float], hflip: float):
        super().__init__(spec)
        self._geometry = v2.Compose(
            [
                v2.RandomResizedCrop(
                    spec.size, scale=crop_scale, interpolation=InterpolationMode(spec.interpolation), antialias=True
                ),
                v2.RandomHorizontalFlip(hflip),
            ]
        )
