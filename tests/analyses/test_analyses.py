"""Run analyses: alpha statistics by hand and streamed, the area curve's θ = 0 identity, figures from a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data
import torch
import yaml
from typer.testing import CliRunner

import camexp.runner as runner
from camexp.analyses.alpha_hist import BINS, AlphaHistogram, summarize_alpha
from camexp.analyses.alpha_stats import merge_batches
from camexp.analyses.area_curve import THETAS, quantile_masks
from camexp.cli import app
from camexp.config import ExperimentConfig
from camexp.data import PixelTransform
from camexp.data.images import load_rgb
from camexp.experiment import load_experiment as load_config
from camexp.models import LoadedModel
from camexp.runner import run_experiment

PHOTOS = ["chelsea.png", "camera.png"]  # camera.png is grayscale; one image per batch: two batches stream
METHODS = ["gradcam", "gradcam++"]
ANALYSES = ["area_curve", "alpha_stats", "relperf_plot", "drop_dist"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, lite0: LoadedModel) -> Path:
    """A real run (EfficientNet-Lite0, 2 scikit-image photos, batches of 1) with every analysis enabled;
    the run gets the module's model instead of building its own (saves ~10 s)."""
    tmp = tmp_path_factory.mktemp("run")
    images = tmp / "images"
    images.mkdir()
    src = Path(skimage.data.__file__).parent
    for name in PHOTOS:
        (images / name).write_bytes((src / name).read_bytes())
    cfg = {
        "name": "figs",
        "dataset": {"kind": "folder", "root": str(images)},
        "model": {"name": "tf_efficientnet_lite0", "weights": "efficientnet-lite0-package"},
        "methods": METHODS,
        "analyses": ANALYSES,
        "runtime": {"device": "cpu", "batch_size": 1},
        "output": {"dir": str(tmp / "out")},
    }
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "build_model", lambda cfg, device: lite0)
        run_experiment(load_config(path), fresh=True, progress=False)
    return tmp / "out"


def test_alpha_summary_of_a_hand_built_tensor() -> None:
    values = torch.tensor([0.5] * 20 + [0.46, 0.55, 0.451, 0.6, 0.3, -30.0, 1e6, 0.52])
    alpha = torch.cat([torch.zeros(12), values]).view(4, 2, 5)  # zeros (vanished gradients) are left out
    h = AlphaHistogram()
    h.update(alpha[:2])
    h.update(alpha[2:])
    s = summarize_alpha(h)
    assert (s.total, s.nonzero) == (40, 28)
    assert (s.min, s.max) == (-30.0, 1e6)
    assert s.share_near_half == pytest.approx(24 / 28)  # 20 x 0.5, 0.46, 0.55, 0.451, 0.52
    bin_width = 2 / BINS  # on the u axis, ~ the same in alpha near 0.5
    for got, q in ((s.q1, 25), (s.median, 50), (s.q3, 75)):
        assert got == pytest.approx(np.percentile(values.numpy(), q), abs=bin_width)
    assert 0.45 <= s.whislo <= s.q1 and s.q3 <= s.whishi <= 0.6  # whiskers stay inside 1.5 IQR of the data
    assert int(h.counts.sum()) == 28 and int(h.counts[-1]) == 1 and int(h.counts[0]) == 1  # tanh saturates: end bins


def test_merge_batches_drops_redone_and_unrecorded_batches() -> None:
    def row(indices: str, value: float) -> dict[str, str]:
        h = AlphaHistogram()
        h.update(torch.full((len(indices.split()),), value))
        return {"indices": indices, "state": json.dumps(h.row())}

    rows = pd.DataFrame([row("0 1", 0.5), row("2 3", 0.7), row("2 3 4", 0.6), row("5", 0.4)])
    merged, images = merge_batches(rows, recorded={0, 1, 2, 3, 4})  # "2 3" was redone; 5 never recorded
    assert images == 5 and int(merged.nonzero) == 5
    assert (float(merged.lo), float(merged.hi)) == pytest.approx((0.5, 0.6))


def test_quantile_masks_keep_everything_at_0_and_the_maximum_at_1() -> None:
    maps = torch.rand(2, 8, 8)
    masks = quantile_masks(maps)
    assert masks.shape == (len(THETAS), 2, 8, 8)
    assert masks[0].all()
    assert torch.equal(masks[-1], maps == maps.amax((1, 2), keepdim=True))
    kept = masks.float().mean((2, 3))
    assert (kept[:-1] >= kept[1:]).all()  # a higher θ never keeps more


def test_area_curve_at_theta_0_equals_the_explanation_map_metric(run_dir: Path) -> None:
    records = pd.read_csv(run_dir / "per_image.csv")
    per_image = pd.read_csv(run_dir / "area_curve_per_image.csv")
    at0 = per_image[per_image["theta"] == 0].merge(records, on=["index", "method"], suffixes=("_curve", ""))
    assert len(at0) == len(records) == len(PHOTOS) * len(METHODS)
    np.testing.assert_allclose(at0["o_curve"] / at0["y_curve"], at0["o"] / at0["y"], rtol=1e-6)
    curve = pd.read_csv(run_dir / "area_curve.csv")
    assert sorted(curve["theta"].round(1).unique()) == list(THETAS) and set(curve["method"]) == set(METHODS)
    expected = (records["o"] / records["y"]).groupby(records["method"]).mean()
    first = curve[curve["theta"] == 0].set_index("method")["mean_o_over_y"]
    np.testing.assert_allclose(first[METHODS], expected[METHODS], rtol=1e-6)
    assert (curve[curve["theta"] == 1.0]["kept"] < 0.01).all()


def test_streaming_alpha_histogram_equals_all_alphas_at_once(run_dir: Path, lite0: LoadedModel) -> None:
    """Independent path: all images in one batch, A by a plain forward hook, G by backward through the whole
    network, alpha by the G^2 form of eq. (14) in float64, histogram by numpy."""
    stats = json.loads((run_dir / "alpha_stats.json").read_text())
    hist = pd.read_csv(run_dir / "alpha_hist.csv")
    loaded = lite0
    transform = PixelTransform(loaded.spec)
    images = ExperimentConfig.model_validate(json.loads((run_dir / "run.json").read_text())["config"]).dataset.root
    x = torch.stack([transform(load_rgb(images / n))[0] for n in sorted(PHOTOS)]).requires_grad_(True)
    seen: list[torch.Tensor] = []
    handle = loaded.layer.register_forward_hook(lambda m, i, o: seen.append(o))
    logits = loaded.model(x)
    handle.remove()
    A = seen[-1]
    A.retain_grad()
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    A64, G = A.detach().double(), A.grad.double()
    denom = 2 * G**2 + A64.sum((2, 3), keepdim=True) * G**3
    alpha = torch.where(denom != 0, G**2 / torch.where(denom != 0, denom, 1), 0.0)
    nz = alpha[alpha != 0].numpy()
    assert stats["total"] == alpha.numel() and stats["nonzero"] == nz.size
    assert stats["min"] == pytest.approx(nz.min(), rel=1e-4) and stats["max"] == pytest.approx(nz.max(), rel=1e-4)
    ref, _ = np.histogram(np.tanh(nz - 0.5), bins=BINS, range=(-1, 1))
    ours = np.zeros(BINS, dtype=np.int64)
    ours[np.round((hist["u_lo"] + 1) * BINS / 2).astype(int)] = hist["count"]
    assert ours.sum() == ref.sum()
    assert np.abs(ours - ref).sum() <= 0.002 * ref.sum()  # float32 vs float64 rounding at bin edges only


def test_run_writes_and_links_every_figure(run_dir: Path) -> None:
    summary = (run_dir / "summary.md").read_text()
    for stem in ("area_curve", "alpha_stats", "relperf_plot", "drop_dist"):
        assert (run_dir / f"{stem}.png").stat().st_size > 0 and (run_dir / f"{stem}.pdf").stat().st_size > 0
        assert f"]({stem}.png)" in summary
    assert "within [0.45, 0.55]" in summary


def test_plot_redraws_from_saved_files(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import camexp.explain.core as core

    monkeypatch.setattr(core.Explainer, "explain", lambda *a, **k: pytest.fail("plot must not run a model"))
    for stem in ("area_curve", "alpha_stats", "relperf_plot", "drop_dist"):
        (run_dir / f"{stem}.png").unlink()
    result = CliRunner().invoke(app, ["plot", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert all((run_dir / f"{s}.png").exists() for s in ("area_curve", "alpha_stats", "relperf_plot", "drop_dist"))
    bad = CliRunner().invoke(app, ["plot", str(run_dir / "nope")])
    assert bad.exit_code == 2 and "not a run folder" in bad.output


def test_record_figures_and_area_curve_take_named_method_specs(tmp_path: Path) -> None:
    """A method given as {name, method, params}: the figures drawn at the end of a run look its records up by
    its record name (it used to end the run with `TypeError: unhashable type: 'MethodSpec'`)."""
    from camexp.analyses import ANALYSES
    from camexp.analyses.area_curve import COLUMNS as CURVE_COLUMNS
    from camexp.analyses.area_curve import PER_IMAGE
    from camexp.results import COLUMNS, RECORDS

    methods = ["gradcam", {"name": "gc-again", "method": "gradcam"}]
    cfg = ExperimentConfig(
        name="specs",
        dataset={"root": "."},
        model={"name": "toy"},
        methods=methods,
        analyses=["relperf_plot", "drop_dist", "area_curve"],
    )
    names = cfg.method_names
    rows = [
        (i, f"im{i}", m, 0, -1, 0, 0.8, 0.4 + 0.1 * j + 0.05 * i, float("nan"), 0)
        for i in range(3)
        for j, m in enumerate(names)
    ]
    pd.DataFrame(rows, columns=COLUMNS).to_csv(tmp_path / RECORDS, index=False)
    curve = [(i, f"im{i}", m, t, 1 - t, 0.8, 0.4) for i in range(3) for m in names for t in THETAS]
    pd.DataFrame(curve, columns=CURVE_COLUMNS).to_csv(tmp_path / PER_IMAGE, index=False)
    for name in cfg.analyses:
        lines = ANALYSES.get(name).make(cfg).finish(tmp_path)
        assert any(".png" in line for line in lines), name
    written = pd.read_csv(tmp_path / "area_curve.csv")
    assert list(dict.fromkeys(written["method"])) == names
