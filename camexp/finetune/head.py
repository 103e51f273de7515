"""Swap a backbone's ImageNet classifier for a new head, the same way `build_model` creates one from a
checkpoint's `num_classes` (timm `num_classes=`, torchvision `num_classes=`), so the state dicts match."""

from __future__ import annotations

from torch import nn

from camexp.errors import CamexpError


def replace_head(net: nn.Module, num_classes: int) -> nn.Module:
    """Give `net` a freshly initialised `num_classes`-way classifier and return that classifier module."""
    if hasattr(net, "reset_classifier"):  # timm
        net.reset_classifier(num_classes)  # type: ignore[operator]  # timm method, typed via Module.__getattr__
        return net.get_classifier()  # type: ignore[operator]  # timm method, typed via Module.__getattr__
    linears = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise CamexpError(f"model.name: {type(net).__name__} has no linear classifier to replace")
    name, old = linears[-1]
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    parent, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent), attr, new)
    return new
