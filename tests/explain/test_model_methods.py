"""Score-CAM, Ablation-CAM and Smooth Grad-CAM++ on a small random-weights timm model: they cost exactly their
floor (counted model calls), do not depend on blocks, chunks or batch-mates, and give defined maps in the
degenerate cases (constant channels, a zero target score)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from camexp.config import ModelConfig
from camexp.explain import model_methods
from camexp.explain.core import Explainer
from camexp.explain.maps import upsample_normalize
from camexp.explain.methods import METHODS, MethodInputs
from camexp.explain.scoring import Scorer
from camexp.models import build_model
from tests.explain.conftest import SIZE


def context(tiny, x: torch.Tensor, chunk: int | None = None, **kw) -> MethodInputs:
    return Explainer(tiny, ["scorecam"], scorer=Scorer(tiny.model, chunk=chunk), **kw).activations(x)[1]


def images_seen(tiny) -> tuple[list[int], object]:
    """A counter of the images that go through the whole network (the scorer's forwards, full-forward tails)."""
    seen: list[int] = []
    handle = tiny.model.net.register_forward_pre_hook(lambda m, inp: seen.append(len(inp[0])))
    return seen, handle


def test_scorecam_forwards_exactly_the_non_constant_channels(tiny, images):
    ctx = context(tiny, images, chunk=5)
    ctx.A[0, :10] = 0.0  # all zero (what a ReLU layer gives)
    ctx.A[1, 20:23] = 0.7  # constant but not zero
    flat = ctx.A.flatten(2)
    constant = int((flat.amax(2) == flat.amin(2)).sum())
    assert constant == 13
    seen, handle = images_seen(tiny)
    try:
        out = METHODS["scorecam"](ctx)
    finally:
        handle.remove()
    assert sum(seen) == ctx.A.shape[0] * ctx.A.shape[1] - constant  # one masked image per live channel, no more
    assert max(seen) <= 5  # in the scorer's chunks
    assert ctx.counts == {"forwards": sum(seen), "constant_channels_skipped": constant}
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("weighting", ["probability", "softmax_logits"])
def test_scorecam_does_not_depend_on_blocks_chunks_or_batch(tiny, images, weighting, monkeypatch):
    whole = METHODS["scorecam"](context(tiny, images), weighting=weighting)
    monkeypatch.setattr(model_methods, "BLOCK_ELEMENTS", 7 * SIZE * SIZE)  # blocks of 6 masks in chunks of 3
    blocked = METHODS["scorecam"](context(tiny, images, 3), weighting=weighting)
    assert torch.allclose(blocked, whole, rtol=1e-5, atol=1e-7)
    alone = METHODS["scorecam"](context(tiny, images[1:2], 3), weighting=weighting)
    assert torch.allclose(alone[0], whole[1], rtol=1e-5, atol=1e-7)


def test_scorecam_all_constant_channels_give_a_zero_map(tiny, images):
    ctx = context(tiny, images[:1])
    ctx.A.zero_()
    for weighting in ("probability", "softmax_logits"):
        assert torch.equal(METHODS["scorecam"](ctx, weighting=weighting), torch.zeros(1, 2, 2))
    assert ctx.counts["forwards"] == 0


def scorecam_float64(loaded, x: torch.Tensor, targets: torch.Tensor, weighting: str) -> torch.Tensor:
    """docs/definitions.md D2 in float64, channel by channel, with a plain forward hook for A."""
    net = copy.deepcopy(loaded.model).double()
    store = {}
    h = net.get_submodule("net." + loaded.layer_name).register_forward_hook(lambda m, i, o: store.update(A=o))
    xd = x.double()
    with torch.no_grad():
        net(xd)
        h.remove()
        a = store["A"]
        maps = []
        for i in range(len(x)):
            live = [k for k in range(a.shape[1]) if a[i, k].max() != a[i, k].min()]
            masked = []
            for k in live:
                up = F.interpolate(a[i, k][None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
                masked.append((up - up.min()) / (up.max() - up.min()) * xd[i])
            out = net(torch.stack(masked))
            w = torch.zeros(a.shape[1], dtype=torch.float64)
            w[live] = out[:, targets[i]].softmax(0) if weighting == "softmax_logits" else out.softmax(1)[:, targets[i]]
            maps.append(torch.einsum("k,khw->hw", w, a[i]).clamp(min=0))
    return upsample_normalize(torch.stack(maps), tuple(x.shape[-2:]))[0]


@pytest.mark.parametrize("weighting", ["probability", "softmax_logits"])
def test_scorecam_equals_a_float64_loop_over_channels(tiny, images, weighting):
    ex = Explainer(tiny, [("s", "scorecam", {"weighting": weighting})]).explain(images[:2])
    ref = scorecam_float64(tiny, images[:2], ex.targets, weighting).float()
    assert (ex.maps["s"] - ref).abs().max() < 1e-4


@pytest.mark.slow
def test_scorecam_with_real_weights_on_real_images_equals_float64(ilsvrc_images):
    """Lite0's real weights explained at blocks.0 (16 channels, so that the float64 loop stays cheap), two
    ILSVRC2012 images at 112x112."""
    from camexp.data import PixelTransform
    from camexp.data.images import load_rgb

    lite0 = build_model(
        ModelConfig(name="tf_efficientnet_lite0", weights="efficientnet-lite0-package", layer="blocks.0")
    )
    tf = PixelTransform(lite0.spec)
    x = torch.stack([tf(load_rgb(p))[0] for p in sorted(ilsvrc_images.iterdir())[:2]])
    x = F.interpolate(x, size=(112, 112), mode="bilinear", antialias=True)
    ex = Explainer(lite0, ["scorecam"], scorer=Scorer(lite0.model, chunk=8)).explain(x)
    assert (ex.maps["scorecam"] - scorecam_float64(lite0, x, ex.targets, "probability")).abs().max() < 1e-4


@pytest.mark.slow
def test_scorecam_at_lite0s_head_with_the_peers_weighting_equals_float64(lite0, ilsvrc_images, record_property):
    """The peers' definition (softmax over channels of the target's logit; pixel-space masking, as they mask the
    input of the pixel-space model a user hands them) at Lite0's 1280-channel head with its real weights, one
    ILSVRC2012 image at 112x112 (the peers run all 1280 forwards). Ours to 1e-4; pytorch-grad-cam's and torchcam's
    ScoreCAM measured against the same float64 reference."""
    from peers import deviation, pytorch_grad_cam_maps, torchcam_maps
    from pytorch_grad_cam import ScoreCAM
    from torchcam.methods import ScoreCAM as TorchcamScoreCAM

    from camexp.data import PixelTransform
    from camexp.data.images import load_rgb

    x = PixelTransform(lite0.spec)(load_rgb(sorted(ilsvrc_images.iterdir())[0]))[0][None]
    x = F.interpolate(x, size=(112, 112), mode="bilinear", antialias=True)
    ex = Explainer(
        lite0, [("s", "scorecam", {"weighting": "softmax_logits"})], scorer=Scorer(lite0.model, chunk=8)
    ).explain(x)
    want = scorecam_float64(lite0, x, ex.targets, "softmax_logits")
    assert (ex.maps["s"] - want).abs().max() < 1e-4
    record_property("ours_max_deviation", deviation(ex.maps["s"], want))
    record_property(
        "pytorch_grad_cam_max_deviation", deviation(pytorch_grad_cam_maps(lite0, ScoreCAM, x, ex.targets), want)
    )
    record_property("torchcam_max_deviation", deviation(torchcam_maps(lite0, TorchcamScoreCAM, x, ex.targets), want))


def test_ablationcam_runs_the_tail_once_per_live_channel(tiny, images):
    ctx = context(tiny, images)
    ctx.A[0, :7] = 0.0
    rows: list[int] = []
    tail = ctx.tail
    ctx.tail = lambda a, which=None: (rows.append(len(a)), tail(a, which))[1]
    seen, handle = images_seen(tiny)
    try:
        out = METHODS["ablationcam"](ctx)
    finally:
        handle.remove()
    b, k = ctx.A.shape[:2]
    zero = int(ctx.A.flatten(2).eq(0).all(2).sum())
    assert zero == 7
    assert sum(rows) == b + b * k - zero  # the reference scores, then one ablation per channel not all zero
    assert not seen  # nothing before the layer runs again: the model splits at the layer
    assert ctx.counts == {"tail_passes": b * k - zero, "zero_channels_skipped": zero}
    assert torch.isfinite(out).all()


def linear_tail(weight: torch.Tensor):
    """A GAP + linear head without bias: logit_c = sum_k W[c,k] mean(A_k), so y - y_k = W[c,k] mean(A_k)."""
    return lambda a, which=None: a.mean((2, 3)) @ weight.T


def test_ablationcam_by_hand():
    a = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]])  # channel means 2 and 1
    weight = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    ctx = MethodInputs(A=a, G=None, targets=torch.tensor([0]), tail=linear_tail(weight))
    # y = 1*2 + 2*1 = 4; y_0 = 2, y_1 = 2 -> w = (0.5, 0.5); L = ReLU(0.5*A0 + 0.5*A1) = [1.5, 1.5]
    assert torch.allclose(METHODS["ablationcam"](ctx), torch.tensor([[[1.5, 1.5]]]))
    ctx = MethodInputs(A=a, G=None, targets=torch.tensor([0]), tail=linear_tail(weight), score="softmax")
    p = torch.softmax(torch.tensor([4.0, -1.0], dtype=torch.float64), 0)[0]
    p0 = torch.softmax(torch.tensor([2.0, -1.0], dtype=torch.float64), 0)[0]  # channel 0 ablated
    p1 = torch.softmax(torch.tensor([2.0, 0.0], dtype=torch.float64), 0)[0]  # channel 1 ablated
    w0, w1 = (p - p0) / p, (p - p1) / p
    want = torch.tensor([[[w0 * 1 + w1 * 2, w0 * 3]]], dtype=torch.float64).float()
    assert torch.allclose(METHODS["ablationcam"](ctx), want)


def test_ablationcam_zero_target_score_gives_a_zero_map_not_nan():
    a = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]])
    weight = torch.tensor([[1.0, -2.0]])  # y = 2 - 2 = 0
    out = METHODS["ablationcam"](MethodInputs(A=a, G=None, targets=torch.tensor([0]), tail=linear_tail(weight)))
    assert torch.equal(out, torch.zeros(1, 1, 2))


def test_ablationcam_on_a_negative_target_score_flips_and_is_counted_and_abs_restores_it():
    """Issue 22: every classifier bias - 100 keeps the top-1 and the softmax, and y - y_k (a shared bias cancels),
    but turns y negative: w_k = (y - y_k) / y flips every weight's sign. A0 = [1, 3, 0], A1 = [2, 0, 1] (means 4/3
    and 1), W[0] = (1, 2): y - y_0 = 4/3, y - y_1 = 2, so the unshifted map is proportional to
    4/3 A0 + 2 A1 = [16/3, 4, 2]; shifted, the default map is ReLU(negative) = 0 and `denominator: abs` gives
    the unshifted map up to the positive factor y / |y - 100|."""
    a = torch.tensor([[[[1.0, 3.0, 0.0]], [[2.0, 0.0, 1.0]]]])
    weight = torch.tensor([[1.0, 2.0], [0.0, -1.0]])

    def run(bias: float, **params: object) -> tuple[torch.Tensor, dict[str, int]]:
        ctx = MethodInputs(
            A=a, G=None, targets=torch.tensor([0]), tail=lambda x, which=None: linear_tail(weight)(x) + bias
        )
        return METHODS["ablationcam"](ctx, **params), ctx.counts

    unshifted, counts = run(0.0)
    y = 4 / 3 + 2
    assert torch.allclose(unshifted, torch.tensor([[[16 / 3, 4.0, 2.0]]]) / y)
    assert "negative_score_images" not in counts
    flipped, counts = run(-100.0)
    assert torch.equal(flipped, torch.zeros(1, 1, 3)) and counts["negative_score_images"] == 1
    restored, counts = run(-100.0, denominator="abs")
    assert torch.allclose(restored, unshifted * y / (100 - y)) and "negative_score_images" not in counts
    assert torch.allclose(run(0.0, denominator="abs")[0], unshifted)  # a positive score: the same map
    assert "denominator must be one of ['score', 'abs']" in METHODS["ablationcam"].param_problem({"denominator": "x"})


def test_a_run_counts_negative_score_images_in_run_json_and_the_summary(tmp_path, make_jpeg, monkeypatch):
    """The same shift on a real (random) model, end to end: run.json counts the images and carries the note,
    summary.md says what the definition does there, and the `abs` setting shows no constant map."""
    import json

    import camexp.runner
    from camexp.config import ExperimentConfig
    from camexp.runner import run_experiment

    def shifted(cfg, device=None):
        loaded = build_model(cfg, device)
        with torch.no_grad():
            loaded.model.net.get_classifier().bias -= 100.0
        return loaded

    monkeypatch.setattr(camexp.runner, "build_model", shifted)
    for name, color in (("a", (200, 30, 30)), ("b", (30, 200, 90))):
        make_jpeg(tmp_path / "images" / f"{name}.jpg", size=(64, 64), color=color)
    cfg = ExperimentConfig(
        name="neg",
        dataset={"kind": "folder", "root": str(tmp_path / "images")},
        model={"name": "test_convnext", "weights": "random"},
        runtime={"device": "cpu"},
        methods=["ablationcam", {"name": "ablation-abs", "method": "ablationcam", "params": {"denominator": "abs"}}],
        output={"dir": str(tmp_path / "out")},
    )
    run_experiment(cfg, progress=False)
    meta = json.loads((tmp_path / "out" / "run.json").read_text())
    assert meta["method_counts"]["ablationcam"]["negative_score_images"] == 2
    assert "negative_score_images" not in meta["method_counts"]["ablation-abs"]  # abs does not flip: no flag
    assert meta["methods"]["ablation-abs"]["params"] == {"denominator": "abs"}
    [note] = meta["method_notes"]
    assert note.startswith("ablationcam: the target's score y was negative on 2 image(s)")
    assert "{denominator: abs}" in note
    assert note in (tmp_path / "out" / "summary.md").read_text()


def test_smoothgradcampp_seeded_per_image_and_counted(tiny, images):
    ids = ["a", "b"]
    explainer = Explainer(tiny, [("s", "smoothgradcam++", {"n": 3}), ("t", "smoothgradcam++", {"n": 3, "seed": 1})])
    whole = explainer.explain(images, image_ids=ids)
    assert whole.counts["s"] == {"forwards": 6, "head_backwards": 6}
    alone = explainer.explain(images[1:], image_ids=ids[1:])
    assert torch.allclose(alone.maps["s"][0], whole.maps["s"][1], atol=1e-5)
    assert not torch.allclose(whole.maps["s"], whole.maps["t"], atol=1e-3)  # the seed is used
    other = explainer.explain(images[1:], image_ids=["c"])  # the id, not the position or the pixels, seeds the noise
    assert not torch.allclose(other.maps["s"][0], whole.maps["s"][1], atol=1e-3)


def test_smoothgradcampp_without_noise_is_gradcampp(tiny, images):
    ex = Explainer(tiny, ["gradcam++", ("s", "smoothgradcam++", {"n": 2, "spread": 0.0})]).explain(images)
    assert torch.allclose(ex.maps["s"], ex.maps["gradcam++"], atol=1e-5)


@pytest.mark.parametrize(
    "name, params, problem",
    [
        ("scorecam", {"weighting": "softmax"}, "weighting must be one of"),
        ("smoothgradcam++", {"n": 0}, "n must be at least 1"),
        ("smoothgradcam++", {"n": 2.5}, "parameter 'n' must be of type int"),
        ("smoothgradcam++", {"sigma": 0.2}, "no parameter(s) ['sigma']"),
        ("random", {"seed": True}, "parameter 'seed' must be of type int"),
    ],
)
def test_bad_parameters_are_named(name, params, problem):
    assert problem in METHODS[name].param_problem(params)


def test_integer_spread_is_a_valid_float():
    assert METHODS["smoothgradcam++"].param_problem({"spread": 1}) == ""
