"""Backbones: build a frozen, eval-mode model that takes pixel-space input, and resolve its explained layer."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch import nn

from camexp.config import ModelConfig
from camexp.data.transforms import InputSpec
from camexp.errors import CamexpError
from camexp.models.layers import auto_layer, find_cam_classifier, get_module, probe_layer
from camexp.models.layout import LAYOUTS, FeatureLayout, LayerProbe, resolve_layout
from camexp.models.tail import Tail, build_tail
from camexp.models.weights import (
    NAMED_SOURCES,
    PACKAGES,
    check_download_possible,
    load_package,
    load_state,
    offline_hint,
    read_checkpoint,
)

TV_PREFIX = "tv:"
_TV_SPEC = InputSpec(
    size=(224, 224),
    interpolation="bilinear",
    crop_pct=0.875,
    crop_mode="center",
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
)


class PixelModel(nn.Module):
    """`net` preceded by the backbone's mean/std normalisation, so callers pass [0,1] RGB images."""

    mean: torch.Tensor  # buffers (register_buffer), which Module.__getattr__ types as Tensor | Module
    std: torch.Tensor

    def __init__(self, net: nn.Module, spec: InputSpec):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


@dataclass
class LoadedModel:
    """A ready backbone: pixel-space model, its preprocessing, the explained layer (with the layout of its
    output and the network after it) and the CAM weights."""

    model: PixelModel
    spec: InputSpec
    layer: nn.Module
    layer_name: str
    layout: FeatureLayout
    tail: Tail
    maps_shape: tuple[int, int, int]  # (K, h, w) of the layer's output in map layout, at the model's input size
    num_classes: int
    class_names: list[str] | None
    cam_weight: torch.Tensor | None
    cam_unavailable: str
    name: str

    def to(self, device: torch.device) -> LoadedModel:
        self.model.to(device)
        if self.cam_weight is not None:
            self.cam_weight = self.cam_weight.to(device)
        return self


def _create(cfg: ModelConfig, num_classes: int | None) -> tuple[nn.Module, InputSpec]:
    pretrained = cfg.weights in ("timm", "pretrained")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    if cfg.name.startswith(TV_PREFIX):
        import torchvision

        arch = cfg.name[len(TV_PREFIX) :]
        if arch not in torchvision.models.list_models():
            raise CamexpError(f"model.name {cfg.name!r}: torchvision has no model {arch!r}")
        if pretrained:
            url = torchvision.models.get_model_weights(arch).DEFAULT.url
            if not (Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name).is_file():
                check_download_possible(cfg.name, url)
        try:
            net = torchvision.models.get_model(arch, weights="DEFAULT" if pretrained else None, **kwargs)
        except Exception as e:  # network / cache failures from torch.hub
            raise offline_hint(cfg.name, e) from None
        return net, _TV_SPEC
    import timm

    from camexp.models import wrn as wrn  # registers the CIFAR Wide-ResNets (wrn_16_2, ...) in timm's registry

    if not timm.is_model(cfg.name):
        raise CamexpError(
            f"model.name {cfg.name!r} is not a timm model (see timm.list_models()); "
            "torchvision models are named 'tv:NAME'"
        )
    if pretrained:
        check_download_possible(cfg.name, os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        # timm's stub types create_model's **kwargs as its named options, not the model's own (num_classes)
        net = timm.create_model(cfg.name, pretrained=pretrained, **kwargs)  # type: ignore[arg-type]
    except Exception as e:  # HF hub offline / missing cache / HTTP errors
        raise offline_hint(cfg.name, e) from None
    return net, InputSpec.from_timm(timm.data.resolve_data_config({}, model=net))


def build_model(cfg: ModelConfig, device: torch.device | str = "cpu") -> LoadedModel:
    """Create the backbone with its weights, freeze it, resolve the layer and check the CAM head."""
    ckpt = None
    if cfg.weights not in NAMED_SOURCES:
        ckpt = read_checkpoint(Path(cfg.weights))
        if ckpt.get("model_name", cfg.name) != cfg.name:
            raise CamexpError(
                f"model.weights {cfg.weights}: a checkpoint of {ckpt['model_name']!r}, but model.name is "
                f"{cfg.name!r}; set model.name to {ckpt['model_name']!r}"
            )
    net, spec = _create(cfg, ckpt.get("num_classes") if ckpt else None)
    if cfg.weights in PACKAGES:
        load_package(net, cfg.weights, cfg.name)
    elif ckpt is not None:
        load_state(net, ckpt["state_dict"], Path(cfg.weights))
    net.eval().requires_grad_(False)
    probe = torch.rand(1, 3, *spec.size, generator=torch.Generator().manual_seed(0))
    try:
        declared = None if cfg.layout == "auto" else LAYOUTS.get(cfg.layout)
    except CamexpError as e:
        raise CamexpError(f"model.layout: {e}") from None
    layer_name = cfg.layer or auto_layer(net, probe, declared)
    layer = get_module(net, layer_name)
    a, logits = probe_layer(net, layer, probe)
    layout = resolve_layout(LayerProbe(net, layer_name, layer, a, spec.size), cfg.layout)  # type: ignore[arg-type]
    assert isinstance(a, torch.Tensor)
    maps = layout.to_maps(a)
    maps_shape = cast(tuple[int, int, int], tuple(maps.shape[1:]))  # to_maps returns (B, C, h, w)
    cam_weight, why = find_cam_classifier(net, maps, logits)
    num_classes = logits.shape[1]
    class_names = ckpt.get("class_names") if ckpt else None
    if class_names is None and num_classes == 1000:
        from camexp.data.wnids import imagenet_class_names

        class_names = list(imagenet_class_names())
    loaded = LoadedModel(
        model=PixelModel(net, spec),
        spec=spec,
        layer=layer,
        layer_name=layer_name,
        layout=layout,
        tail=build_tail(net, layer, layer_name, a, logits),
        maps_shape=maps_shape,
        num_classes=num_classes,
        class_names=class_names,
        cam_weight=cam_weight,
        cam_unavailable=why,
        name=cfg.name,
    )
    return loaded.to(torch.device(device))
