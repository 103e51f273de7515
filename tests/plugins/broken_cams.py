"""Plug-in methods with the bugs a plug-in author makes: each must stop a run with one line naming the
plug-in and the batch, and (when it raised) its own traceback below."""

from __future__ import annotations

import numpy as np
import torch

from camexp.explain.methods import MethodInputs


def _channel_weights(x: MethodInputs) -> torch.Tensor:
    return torch.einsum("bk,bkhw->bhw", x.G.mean((2, 3)), x.A.flatten(2))  # flattened A: one dimension short


def raises(x: MethodInputs) -> torch.Tensor:
    """Raises inside torch, two calls deep in the plug-in."""
    return _channel_weights(x)


def numpy_map(x: MethodInputs) -> np.ndarray:
    """Returns a numpy array."""
    return x.A.sum(1).numpy()


def wrong_shape(x: MethodInputs) -> torch.Tensor:
    """Returns (B, 224): one row per image instead of a map."""
    return torch.zeros(len(x.targets), 224)


def wrong_grid(x: MethodInputs) -> torch.Tensor:
    """Returns (B, B, h*w): a batched product that broadcast the batch into the map's rows."""
    return x.G.mean((2, 3)) @ x.A.flatten(2)
