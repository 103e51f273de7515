"""The wide view of records keeps the config's method order, whatever its alphabetical order."""

from __future__ import annotations

import pandas as pd
import torch

from camexp.results import records_view


def test_methods_in_reverse_alphabetical_order() -> None:
    df = pd.DataFrame(
        {
            "index": [0, 0, 1, 1],
            "image_id": ["a", "a", "b", "b"],
            "method": ["gradcam++", "gradcam", "gradcam++", "gradcam"],
            "y": [0.9, 0.9, 0.8, 0.8],
            "o": [0.7, 0.5, 0.6, 0.4],
            "p_true": [0.9, 0.9, 0.8, 0.8],
        }
    )
    view = records_view(df, ["gradcam++", "gradcam"])
    assert torch.equal(view.o, torch.tensor([[0.7, 0.5], [0.6, 0.4]], dtype=torch.float64))
