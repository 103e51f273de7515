"""pytorch-grad-cam and torchcam as a library user calls them, for the tests that measure the peers' deviation
from our float64 references. The deviations are recorded as test properties and reported in
docs/guide/methods-metrics.md ("The CAM family"), never asserted: a fix on their side must not fail our suite."""

from __future__ import annotations

import copy

import torch

from camexp.explain.maps import upsample_normalize


def user_model(loaded) -> torch.nn.Module:
    """A trainable copy of the pixel-space model, as a user hands it to the peers (they need parameter grads)."""
    return copy.deepcopy(loaded.model).requires_grad_(True)


def pytorch_grad_cam_maps(loaded, cls: type, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,H,W) maps of pytorch-grad-cam's `cls` at the explained layer, re-normalised to [0,1] by min-max."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = user_model(loaded)
    with cls(model=model, target_layers=[model.net.get_submodule(loaded.layer_name)]) as cam:
        out = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return upsample_normalize(torch.from_numpy(out), tuple(x.shape[-2:]))[0]


def torchcam_maps(loaded, cls: type, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,H,W) maps of torchcam's `cls` at the explained layer, upsampled and min-max normalised as ours are."""
    model = user_model(loaded)
    with cls(model, target_layer="net." + loaded.layer_name, input_shape=tuple(x.shape[1:])) as extractor:
        low_res = extractor(class_idx=targets.tolist(), scores=model(x))[0]
    return upsample_normalize(low_res.detach(), tuple(x.shape[-2:]))[0]


def deviation(maps: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute difference of two sets of normalised maps."""
    return float((maps.float() - reference.float()).abs().max())
