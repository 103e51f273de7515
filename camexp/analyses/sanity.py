"""The sanity checks of Adebayo et al. (NeurIPS 2018) as analyses (docs/guide/trustworthiness.md, "Sanity checks").

`mprt` (cascading model-parameter randomisation): from the head down, one more block of the model
(camexp/models/blocks.py) is reset to the weights its own constructor draws (seeded by `sanity.seed`), the same
target is explained again, and each method's map is compared with its map on the trained model
(camexp/analyses/similarity.py). The work happens on a second copy of the model, loaded once per run; per batch
it is reset to the trained weights and randomised block by block, so memory holds two more copies of the
weights (the copy and the initial weights), never one per depth. The run's model is never touched.

`sanity.mprt_mode` chooses the variant: `cascading` (above); `independent` (Adebayo et al.'s second variant: each
block alone randomised, the others at their trained weights); `smooth` (Hedström et al.'s smooth MPRT: cascading,
every map, the trained one included, the mean over `sanity.mprt_samples` noisy copies of the image, the method's
`smooth` wrapper with the same noise for every model); `efficient` (Hedström et al.'s efficient MPRT: the relative
rise of the map's discrete entropy, `sanity.mprt_bins` equal-width bins, once every block is random). Each mode
writes files and main-table rows of its own (`MODES`), so that no two are confused.

`random_logit`: each image is explained again for a class drawn uniformly from the classes other than its
target (seeded per image by (`sanity.seed`, image id), recorded), and compared with the target's map by SSIM
and Spearman. Lower means more class-discriminative; a class-agnostic method (Eigen-CAM, the floors) must give
1 (the control).

Per-image values go to mprt.csv and random_logit.csv; the main table shows the fully randomised model's
similarity and the random-logit similarity, with the run's bootstrap intervals over images; the per-depth
curves get the same intervals (camexp/stats/bootstrap.py with the run's `stats:` settings) in mprt_curve.csv and
the figures.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from camexp.accel import channels_last
from camexp.analyses.base import analysis
from camexp.analyses.similarity import MEASURES, discrete_entropy, similarities
from camexp.analyses.store import recorded_rows
from camexp.analyses.thumbs import thumbnails
from camexp.config import SmoothSpec, field_if_set
from camexp.csvsafe import write_csv
from camexp.errors import CamexpError
from camexp.explain.core import Explainer, Explanation
from camexp.explain.model_methods import seed_of
from camexp.metrics import MetricResult, Row, settings_of
from camexp.metrics.batch import REEXPLANATION, BatchContext, class_maps_cost
from camexp.models import LoadedModel, build_model
from camexp.models.blocks import Block, checkpoints, initial_state, randomisation_blocks, randomisation_units
from camexp.results import append_records
from camexp.stats.bootstrap import LONG_COLUMNS, interval_tables, wide_metrics

if TYPE_CHECKING:
    from camexp.config import ExperimentConfig

MPRT_COLUMNS = ["index", "image_id", "method", "depth", "block", *MEASURES]
MPRT_KEY = ["index", "method", "depth"]
MAPS_COLUMNS = ["index", "image_id", "method", "depth", "block", "shape", "data"]
RANDOM_LOGIT_CSV = "random_logit.csv"
RANDOM_LOGIT_MEASURES = ("ssim", "spearman")
RANDOM_LOGIT_COLUMNS = ["index", "image_id", "method", "target", "other_class", *RANDOM_LOGIT_MEASURES]
FIGURE_INDEX = 0  # the data set image whose maps the mprt figure shows


class SanitySettings(BaseModel):
    """The sanity checks `mprt` and `random_logit` (docs/guide/trustworthiness.md, "Sanity checks")."""

    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, ge=0, description="seeds the re-initialised weights (mprt) and the other class (random_logit)")
    mprt_blocks: list[str] | None = Field(
        None,
        description="explain only after randomising these blocks and the last (every block above each is still "
        "randomised); default: after every block",
    )
    mprt_units: Literal["blocks", "layers"] = Field(
        "blocks",
        description="blocks: the model's blocks, reset to its constructor's weights; layers: every module with "
        "reset_parameters, one at a time, reset by PyTorch after seeding the global RNG with `seed` (Quantus' "
        "MPRT, whose seed s reseeds with s + 1)",
    )
    # Added after FINGERPRINT_VERSION 2 (`field_if_set`): in the fingerprint only when set, so run folders keep theirs.
    mprt_mode: Literal["cascading", "independent", "smooth", "efficient"] = field_if_set(
        "cascading",
        "cascading: randomise from the head down, cumulatively (Adebayo et al.); independent: each unit alone, the "
        "others trained; smooth: cascading with every map the mean over `mprt_samples` noisy copies of the image; "
        "efficient: the rise in the map's histogram entropy once every unit is random (Hedström et al.)",
    )
    mprt_samples: int = field_if_set(50, "smooth: noisy copies of each image a map is averaged over", ge=1)
    mprt_noise: float = field_if_set(
        0.1, "smooth: noise standard deviation as a fraction of each image's range (max - min)", ge=0.0
    )
    mprt_bins: int = field_if_set(100, "efficient: equal-width bins of each map's histogram", ge=1)

    @model_validator(mode="after")
    def _mode_settings(self) -> SanitySettings:
        if self.mprt_mode == "efficient" and self.mprt_blocks is not None:
            raise ValueError("mprt_blocks: efficient mprt explains only the fully randomised model; leave it out")
        return self


SETTINGS_KEY = "sanity"


def sanity_settings(cfg: ExperimentConfig) -> SanitySettings:
    """The validated `sanity:` settings that both checks read."""
    return settings_of(cfg, SETTINGS_KEY)


def random_logit_key(measure: str) -> str:
    return f"random_logit_{measure}"


SHORT = {"spearman": "Spearman", "spearman_abs": "Spearman |·|", "ssim": "SSIM", "hog": "HOG"}


@dataclass(frozen=True)
class Mode:
    """A similarity `sanity.mprt_mode` as its outputs name it: its files ({stem}.csv, {stem}_maps.csv,
    {stem}_curve.csv, figures {stem} and {stem}_maps), its main-table rows ({stem}_{measure}, titled `title`,
    `final` saying what the row summarises), what a depth is (`steps`), its figure link's `subject` and its
    curves' title (`curve`)."""

    name: str
    stem: str
    title: str
    final: str
    steps: str
    subject: str
    curve: str

    @property
    def csv(self) -> str:
        return f"{self.stem}.csv"

    @property
    def maps(self) -> str:
        return f"{self.stem}_maps.csv"

    @property
    def curve_csv(self) -> str:
        return f"{self.stem}_curve.csv"

    def key(self, measure: str) -> str:
        return f"{self.stem}_{measure}"

    @property
    def rows(self) -> tuple[Row, ...]:
        return tuple(
            Row(self.key(m), f"{self.title} {SHORT[m]}, {self.final}", lower_is_better=True, criterion="randomisation")
            for m in MEASURES
        )


MODES = {
    m.name: m
    for m in (
        Mode(
            "cascading",
            "mprt",
            "MPRT",
            "all blocks random",
            "blocks randomised",
            "Cascading model-parameter randomisation",
            "Cascading randomisation, from the head down",
        ),
        Mode(
            "independent",
            "mprt_independent",
            "MPRT independent",
            "mean over blocks",
            "block randomised alone",
            "Independent model-parameter randomisation",
            "Independent randomisation, each block alone",
        ),
        Mode(
            "smooth",
            "smooth_mprt",
            "Smooth MPRT",
            "all blocks random",
            "blocks randomised",
            "Smooth MPRT (maps averaged over noisy copies)",
            "Smooth MPRT: cascading randomisation, maps averaged over noisy copies",
        ),
    )
}
CASCADING = MODES["cascading"]
MPRT_CSV, MPRT_MAPS, MPRT_CURVE = CASCADING.csv, CASCADING.maps, CASCADING.curve_csv
MPRT_ROWS = CASCADING.rows
EFFICIENT_CSV = "efficient_mprt.csv"
EFFICIENT_COLUMNS = ["index", "image_id", "method", "entropy_trained", "entropy_random", "efficient_mprt"]
EFFICIENT_ROW = Row(
    "efficient_mprt",
    "Efficient MPRT: rise in entropy, all blocks random",
    lower_is_better=False,
    criterion="randomisation",
)
RANDOM_LOGIT_ROWS = tuple(
    Row(random_logit_key(m), f"Random logit {SHORT[m]}", lower_is_better=True, criterion="randomisation")
    for m in RANDOM_LOGIT_MEASURES
)


@dataclass
class Randomiser:
    """A working copy of the run's model whose blocks are reset, head first, to their initial weights; with
    `layers` (`sanity.mprt_units`) its modules are reset one at a time by their own `reset_parameters`, after
    the global RNG is seeded with `seed` (forked: the run's RNG stays put), as Quantus 0.6 does."""

    work: LoadedModel
    trained: dict[str, torch.Tensor]  # the run's own network state (references, never written)
    initial: dict[str, torch.Tensor]  # blocks: the constructor's weights; layers: unused
    blocks: list[Block]
    layers: bool = False
    seed: int = 0

    def reset(self) -> None:
        """Back to the trained weights."""
        self.work.model.net.load_state_dict(self.trained)

    def randomise(self, block: Block) -> None:
        """Reset `block`'s parameters and buffers (in place: the CAM weights, which share the classifier's
        storage, follow): to their initial values, or by the module's `reset_parameters` (layers)."""
        if self.layers:
            device = next(iter(self.trained.values())).device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
                torch.manual_seed(self.seed)
                module: Any = self.work.model.net.get_submodule(block.name)
                module.reset_parameters()
            return
        state = self.work.model.net.state_dict()
        with torch.no_grad():
            for key in block.keys:
                state[key].copy_(self.initial[key])


def make_randomiser(cfg: ExperimentConfig, run: LoadedModel, device: torch.device) -> Randomiser:
    """A second copy of the run's model (loaded again from its config) and its initial weights on `device`."""
    with torch.random.fork_rng(devices=[]):  # `weights: random` draws (then overwritten): the run's RNG stays put
        work = build_model(cfg.model, device)
    if channels_last(device):  # as the runner lays out the run's model
        work.model.to(memory_format=torch.channels_last)
    net_state = run.model.net.state_dict()
    settings = sanity_settings(cfg)
    if settings.mprt_units == "layers":
        return Randomiser(work, net_state, {}, randomisation_units(run.model.net, "layers"), True, settings.seed)
    initial = initial_state(cfg.model, run.num_classes, settings.seed)
    if set(initial) != set(net_state):
        raise CamexpError(
            f"mprt: {cfg.model.name}'s constructor builds other parameters than the loaded model's "
            f"({sorted(set(initial) ^ set(net_state))[:3]} ...); the model cannot be re-initialised block by block"
        )
    return Randomiser(
        work,
        net_state,
        {k: v.to(device=device, dtype=net_state[k].dtype) for k, v in initial.items()},
        randomisation_blocks(run.model.net),
    )


def _frame(ctx: BatchContext, method: str, extra: dict[str, object], values: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {"index": ctx.batch["index"].tolist(), "image_id": ctx.image_ids, "method": method, **extra, **values}
    )


class Mprt:
    """Streams the randomised models' similarities (the mode's CSV) and the figure image's maps (its maps CSV), or
    with `efficient` each map's entropy on the trained and the fully randomised model (efficient_mprt.csv)."""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg
        self.settings = s = sanity_settings(cfg)
        smoothed = [m.name for m in cfg.methods if not isinstance(m, str) and m.smooth is not None]
        if s.mprt_mode == "smooth" and smoothed:
            raise CamexpError(
                f"sanity.mprt_mode smooth averages every method's maps over noisy copies itself; {smoothed} already "
                "have a `smooth` setting (list them without it, or use another mode)"
            )
        self.smooth = SmoothSpec(n=s.mprt_samples, sigma=s.mprt_noise, seed=s.seed) if s.mprt_mode == "smooth" else None
        self.randomiser: Randomiser | None = None  # built at the first batch, on its device
        self.explainer: Explainer | None = None

    def _start(self, ctx: BatchContext) -> tuple[Randomiser, Explainer]:
        if self.randomiser is None or self.explainer is None:
            self.randomiser = make_randomiser(self.cfg, ctx.explainer.loaded, ctx.x.device)
            run = ctx.explainer
            runs = [replace(r, smooth=self.smooth) for r in run.runs] if self.smooth else run.runs
            self.explainer = Explainer(
                self.randomiser.work, runs, run.score, replace(run.scorer, model=self.randomiser.work.model)
            )
        return self.randomiser, self.explainer

    def _states(self, randomiser: Randomiser) -> Iterator[tuple[int, Block]]:
        """Puts the working copy in each state the mode explains, yielding (depth, block) once it is there: after
        `block` and every block above it is random (cascading, smooth), after `block` alone is (independent), or
        once every block is (efficient)."""
        mode = self.settings.mprt_mode
        blocks = randomiser.blocks
        explained = [len(blocks)] if mode == "efficient" else checkpoints(blocks, self.settings.mprt_blocks)
        randomiser.reset()
        for depth, block in enumerate(blocks, 1):
            if mode == "independent":
                if depth not in explained:
                    continue
                randomiser.reset()
            randomiser.randomise(block)
            if depth in explained:
                yield depth, block

    def update(self, ctx: BatchContext) -> None:
        randomiser, explainer = self._start(ctx)
        mode = self.settings.mprt_mode
        if mode == "efficient":
            self._efficient(ctx, randomiser, explainer)
            return
        files = MODES[mode]
        reference: Explanation = ctx.explanation
        if self.smooth:  # the trained model's map is averaged over the same noisy copies
            randomiser.reset()
            reference = explainer.explain(ctx.x, ctx.targets, ctx.image_ids)
        figure = (ctx.batch["index"] == FIGURE_INDEX).nonzero().flatten().tolist()[:1]
        maps_rows = []
        if figure:
            maps_rows = [[FIGURE_INDEX, ctx.image_ids[figure[0]], "", -1, "(image)", *thumbnails(ctx.x[figure])[0]]]
            maps_rows += self._maps_rows(ctx, figure, reference.maps, 0, "(trained)")
        frames = []
        for depth, block in self._states(randomiser):
            ex = explainer.explain(ctx.x, ctx.targets, ctx.image_ids)
            for m in ctx.methods:
                values = similarities(
                    reference.maps[m], ex.maps[m], MEASURES, reference.layer_maps[m], ex.layer_maps[m]
                )
                frames.append(_frame(ctx, m, {"depth": depth, "block": block.name}, values))
            if figure:
                maps_rows += self._maps_rows(ctx, figure, ex.maps, depth, block.name)
        append_records(ctx.path(files.csv), pd.concat(frames, ignore_index=True), MPRT_COLUMNS)
        if maps_rows:
            append_records(ctx.path(files.maps), pd.DataFrame(maps_rows, columns=MAPS_COLUMNS), MAPS_COLUMNS)

    def _efficient(self, ctx: BatchContext, randomiser: Randomiser, explainer: Explainer) -> None:
        """Each map's entropy on the trained and on the fully randomised model, and the relative rise."""
        for _ in self._states(randomiser):
            ex = explainer.explain(ctx.x, ctx.targets, ctx.image_ids)
        bins = self.settings.mprt_bins
        frames = []
        for m in ctx.methods:
            before, after = discrete_entropy(ctx.maps[m], bins), discrete_entropy(ex.maps[m], bins)
            rise = [(b - a) / a if a > 0 else float("nan") for a, b in zip(before, after)]
            frames.append(
                _frame(ctx, m, {}, {"entropy_trained": before, "entropy_random": after, "efficient_mprt": rise})
            )
        append_records(ctx.path(EFFICIENT_CSV), pd.concat(frames, ignore_index=True), EFFICIENT_COLUMNS)

    @staticmethod
    def _maps_rows(
        ctx: BatchContext, figure: list[int], maps: dict[str, torch.Tensor], depth: int, block: str
    ) -> list[list[object]]:
        """Rows of the maps CSV: the figure image's map of every method at `depth`."""
        image_id = ctx.image_ids[figure[0]]
        return [[FIGURE_INDEX, image_id, m, depth, block, *thumbnails(v[figure])[0]] for m, v in maps.items()]

    def finish(self, out_dir: Path) -> list[str]:
        from camexp.analyses.sanity_plots import draw_mprt_curves, draw_mprt_maps
        from camexp.savefig import figure_link, save_figure

        s = self.settings
        if s.mprt_mode == "efficient":
            return []  # its row and its entropies are in the main table (`mprt_result`)
        files = MODES[s.mprt_mode]
        rows = recorded_rows(out_dir, files.csv, MPRT_COLUMNS, MPRT_KEY)
        if rows.empty:
            return ["", f"mprt: no values in {files.csv} (enable the analysis before the run)."]
        curve = mprt_curve(rows, self.cfg)
        write_csv(curve, out_dir / files.curve_csv, index=False, float_format="%.6f")
        lines = figure_link(f"{files.subject}: similarity to the trained model's map", files.stem)
        save_figure(draw_mprt_curves(curve, files.curve), out_dir, files.stem)
        maps = recorded_rows(out_dir, files.maps, MAPS_COLUMNS, ["index", "method", "depth"])
        if not maps.empty:
            save_figure(draw_mprt_maps(maps, self.cfg.method_names), out_dir, f"{files.stem}_maps")
            lines += figure_link(
                f"Maps of image {maps['image_id'].iloc[0]} as the blocks are randomised", f"{files.stem}_maps"
            )
        smooth = f"; maps averaged over {s.mprt_samples} noisy copies (noise {s.mprt_noise:g})" if self.smooth else ""
        return lines + [
            "",
            f"Mean similarity per depth with {100 * self.cfg.stats.level:g} % bootstrap intervals over "
            f"{rows['index'].nunique()} images in [{files.curve_csv}]({files.curve_csv}); blocks re-initialised with "
            f"the model's own initialisation, seed {s.seed}{smooth}.",
        ]


def mprt_long(rows: pd.DataFrame, final: bool = False, mode: Mode = CASCADING) -> pd.DataFrame:
    """A mode's CSV rows in long form (image_id, method, metric, value), metric `measure@depth`; with `final`,
    the values the main table's rows summarise (`final_values`), under their keys (`Mode.key`)."""
    if final:
        rows = final_values(rows, mode)
    long = rows.melt(["image_id", "method", "depth"], list(MEASURES), "measure", "value")
    metric = long["measure"].map(mode.key) if final else long["measure"] + "@" + long["depth"].astype(str)
    return long.assign(metric=metric)[LONG_COLUMNS]


def final_values(rows: pd.DataFrame, mode: Mode) -> pd.DataFrame:
    """Per image and method, the similarities the main table's rows summarise: the fully randomised model's
    (cascading, smooth), or their mean over the blocks explained (independent: there is no fully random model)."""
    if mode.name == "independent":
        means = rows.groupby(["index", "image_id", "method"], as_index=False)[list(MEASURES)].mean()
        return means.assign(depth=0)
    return rows[rows["depth"] == rows["depth"].max()]


def mprt_curve(rows: pd.DataFrame, cfg: ExperimentConfig) -> pd.DataFrame:
    """Per measure, depth and method: the mean over images with its bootstrap interval (the run's `stats:`
    settings; the same engine and draws as summary_long.csv) and the images with a defined value."""
    s = cfg.stats
    per_method, _ = interval_tables(wide_metrics(mprt_long(rows), cfg.method_names), s.bootstrap, s.level, s.seed)
    measure_depth = per_method["metric"].str.split("@", expand=True)
    blocks = rows.drop_duplicates("depth").set_index("depth")["block"]
    depth = measure_depth[1].astype(int)
    out = per_method.assign(measure=measure_depth[0], depth=depth, block=depth.map(blocks)).drop(columns="metric")
    return out[["measure", "depth", "block", "method", "value", "lo", "hi", "n"]].sort_values(
        ["measure", "depth"], kind="stable"
    )


def _final_rows(run_dir: Path, records: pd.DataFrame, methods: list[str], name: str, cols: list[str]) -> pd.DataFrame:
    df = recorded_rows(run_dir, name, cols, ["index", "method"] + (["depth"] if "depth" in cols else []))
    return df[df["index"].isin(records["index"]) & df["method"].isin(methods)]


def _mode_rows(run_dir: Path, records: pd.DataFrame, methods: list[str]) -> Iterator[tuple[Mode, pd.DataFrame]]:
    """(mode, its recorded rows of the final images and methods) for every similarity mode with a CSV here."""
    for mode in MODES.values():
        if (run_dir / mode.csv).exists():
            yield mode, _final_rows(run_dir, records, methods, mode.csv, MPRT_COLUMNS)


def mprt_per_image(run_dir: Path, records: pd.DataFrame, methods: list[str]) -> pd.DataFrame | None:
    """Each image's values that the main table's rows summarise, long form; None without any mode's CSV."""
    parts = [mprt_long(rows, final=True, mode=mode) for mode, rows in _mode_rows(run_dir, records, methods)]
    if (run_dir / EFFICIENT_CSV).exists():
        rows = _final_rows(run_dir, records, methods, EFFICIENT_CSV, EFFICIENT_COLUMNS)
        parts.append(rows.assign(metric=EFFICIENT_ROW.key, value=rows[EFFICIENT_ROW.key])[LONG_COLUMNS])
    return pd.concat(parts, ignore_index=True) if parts else None


def _undefined(name: str, rows: pd.DataFrame, columns: list[str], what: str) -> str:
    return f"{name}: {rows['index'].nunique()} images; {what} are left out: " + ", ".join(
        f"{m} {int(n)}" for m, n in rows[columns].isna().sum().items()
    )


def mprt_result(run_dir: Path, records: pd.DataFrame, methods: list[str]) -> MetricResult:
    """Per mode recorded: the main table's rows (the similarities of `final_values`; efficient: the rise in
    entropy) and the per-depth means of Spearman (abs) (efficient: the mean entropies)."""
    out = MetricResult()
    for mode, rows in _mode_rows(run_dir, records, methods):
        if rows.empty:
            continue
        final = final_values(rows, mode).groupby("method")[list(MEASURES)].mean()
        table = rows.groupby(["depth", "block", "method"])["spearman_abs"].mean().unstack("method")
        table.index = [f"{d}: {b}" for d, b in table.index]
        title = f"{mode.title}: mean Spearman rank correlation (absolute values) by {mode.steps}"
        out.merge(
            MetricResult(
                rows={r.label: {m: float(final.at[m, x]) for m in final.index} for x, r in zip(MEASURES, mode.rows)},
                tables={title: table.reindex(columns=methods)},
                notes=[_undefined(mode.stem, rows, list(MEASURES), "undefined correlations (a constant map)")],
            )
        )
    rows = _final_rows(run_dir, records, methods, EFFICIENT_CSV, EFFICIENT_COLUMNS)
    if not rows.empty:
        means = rows.groupby("method")[EFFICIENT_COLUMNS[3:]].mean()
        out.merge(
            MetricResult(
                rows={EFFICIENT_ROW.label: means[EFFICIENT_ROW.key].to_dict()},
                tables={"Efficient MPRT: mean entropy of the maps": means.T.reindex(columns=methods)},
                notes=[_undefined("efficient_mprt", rows, [EFFICIENT_ROW.key], "rises from a zero entropy")],
            )
        )
    return out


def other_class(seed: int, key: str, target: int, classes: int) -> int:
    """A class other than `target`, uniform over the other classes-1, drawn from (seed, image key)."""
    g = torch.Generator().manual_seed(seed_of(seed, "random_logit", key))
    r = int(torch.randint(classes - 1, (1,), generator=g))
    return r + (r >= target)


class RandomLogit:
    """Streams each image's random-class similarities to random_logit.csv."""

    def __init__(self, cfg: ExperimentConfig):
        self.cfg = cfg

    def update(self, ctx: BatchContext) -> None:
        classes = ctx.logits.shape[1]
        if classes < 2:
            raise CamexpError("analyses: random_logit needs a model with at least 2 classes")
        targets = ctx.targets.tolist()
        seed = ctx.settings(SETTINGS_KEY).seed
        others = [other_class(seed, k, t, classes) for k, t in zip(ctx.image_keys(), targets)]
        pos = torch.arange(len(targets), device=ctx.x.device)
        maps = ctx.class_maps(pos, torch.tensor(others, device=ctx.x.device))
        frames = [
            _frame(
                ctx,
                m,
                {"target": targets, "other_class": others},
                similarities(ctx.maps[m], maps[m], RANDOM_LOGIT_MEASURES),
            )
            for m in ctx.methods
        ]
        append_records(ctx.path(RANDOM_LOGIT_CSV), pd.concat(frames, ignore_index=True), RANDOM_LOGIT_COLUMNS)

    def finish(self, out_dir: Path) -> list[str]:
        return []  # its rows are in the main table (`random_logit_result`)


def random_logit_per_image(run_dir: Path, records: pd.DataFrame, methods: list[str]) -> pd.DataFrame | None:
    if not (run_dir / RANDOM_LOGIT_CSV).exists():
        return None
    rows = _final_rows(run_dir, records, methods, RANDOM_LOGIT_CSV, RANDOM_LOGIT_COLUMNS)
    long = rows.melt(["image_id", "method"], list(RANDOM_LOGIT_MEASURES), "measure", "value")
    return long.assign(metric=long["measure"].map(random_logit_key))[LONG_COLUMNS]


def random_logit_result(run_dir: Path, records: pd.DataFrame, methods: list[str]) -> MetricResult:
    rows = _final_rows(run_dir, records, methods, RANDOM_LOGIT_CSV, RANDOM_LOGIT_COLUMNS)
    if rows.empty:
        return MetricResult()
    means = rows.groupby("method")[list(RANDOM_LOGIT_MEASURES)].mean()
    return MetricResult(
        rows={
            r.label: {m: float(means.at[m, x]) for m in means.index}
            for x, r in zip(RANDOM_LOGIT_MEASURES, RANDOM_LOGIT_ROWS)
        },
        notes=[
            f"random_logit: {rows['index'].nunique()} images, each explained again for a class drawn uniformly "
            f"from the others (seeded by sanity.seed and the image id; the classes are in {RANDOM_LOGIT_CSV})."
        ],
    )


def mprt_check(cfg: ExperimentConfig, loaded: LoadedModel) -> list[tuple[str, str]]:
    """`camexp check`: the model's randomisation units (`sanity.mprt_units`), head first, the configured ones
    among them, and the mode when it is not the default."""
    settings = sanity_settings(cfg)
    blocks = randomisation_units(loaded.model.net, settings.mprt_units)
    checkpoints(blocks, settings.mprt_blocks)
    mode = [] if settings.mprt_mode == "cascading" else [("mprt mode", settings.mprt_mode)]
    return [(f"mprt {settings.mprt_units} (head first)", ", ".join(b.name for b in blocks)), *mode]


analysis(
    "mprt",
    {
        **{name: cols for m in MODES.values() for name, cols in ((m.csv, MPRT_COLUMNS), (m.maps, MAPS_COLUMNS))},
        EFFICIENT_CSV: EFFICIENT_COLUMNS,
    },
    rows=(*(r for m in MODES.values() for r in m.rows), EFFICIENT_ROW),
    read=mprt_result,
    per_image=mprt_per_image,
    check=mprt_check,
    settings=SanitySettings,
    settings_key=SETTINGS_KEY,
    cost=f"one re-explanation of every method ({REEXPLANATION}) per explained depth of a randomised copy of the "
    "model (sanity.mprt_blocks and the last; default every block), and the copy's weights reloaded per batch; "
    "mprt_mode independent: the same; smooth: mprt_samples times (1 + the depths explained); efficient: one",
)(Mprt)
analysis(
    "random_logit",
    {RANDOM_LOGIT_CSV: RANDOM_LOGIT_COLUMNS},
    rows=RANDOM_LOGIT_ROWS,
    read=random_logit_result,
    per_image=random_logit_per_image,
    settings=SanitySettings,
    settings_key=SETTINGS_KEY,
    cost=class_maps_cost("image, for a random class other than its target"),
)(RandomLogit)
