"""Experiment configuration: YAML validated by pydantic, so every key, type and value is checked.

pydantic gives us typed models, `extra="forbid"` (unknown keys are errors) and error locations that name
the offending key path, which is what a one-line config error needs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from camexp.errors import ConfigError
from camexp.io import read_user_text

S = TypeVar("S", bound=BaseModel)
MIN_BOOTSTRAP = 100  # fewer resamples cannot place a 95 % interval's percentiles meaningfully
PAPER_TABLES = (
    "table1",
    "table2",
    "table3",
    "table4",
    "table5",
    "table6",
    "table7",
    "table8",
    "equiv1",
    "equiv2",
    "scorecam",
    "torchray_vgg16",
    "torchray_resnet50",
    "torchray_coco14_vgg16",
    "torchray_coco14_resnet50",
)


def _plain_name(v: str) -> str:
    """A name that becomes a file or folder name (results/<name>, checkpoints/<name>.pt) must stay there."""
    if not v or any(c in v for c in "/\\") or v.startswith("."):
        raise ValueError("must be a plain file name (no slashes, not starting with '.'), e.g. voc07_vgg16")
    return v


PlainName = Annotated[str, AfterValidator(_plain_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SubsetConfig(_Strict):
    """A deterministic subset of the listed images: every k-th one, or n drawn at random with a seed."""

    every: int | None = Field(None, ge=1, description="every k-th listed image, from the first")
    random: int | None = Field(None, ge=1, description="n images drawn at random (sorted back into listing order)")
    seed: int = Field(0, description="seed of the random draw")

    @model_validator(mode="after")
    def _exactly_one(self) -> SubsetConfig:
        if (self.every is None) == (self.random is None):
            raise ValueError("give exactly one of 'every: K' or 'random: N' (with an optional 'seed')")
        return self


class DatasetConfig(_Strict):
    """Where the images come from. `kind` picks a loader from `camexp.data`."""

    kind: str = "folder"
    root: Path
    split: str | None = None
    labels: Path | None = Field(None, description="folder kind: optional CSV with columns image_id,label")
    layout: Literal["auto", "wnid_folders", "kaggle_csv", "devkit"] = Field(
        "auto", description="imagenet_val: how labels are stored; auto detects it"
    )
    annotations: Path | None = Field(
        None,
        description="imagenet_val: LOC_val_solution.csv or ILSVRC2012_validation_ground_truth.txt "
        "(meta.mat beside it) when not found beside the images; coco: the instances JSON "
        "(default <root>/annotations/instances_<split>.json)",
    )
    min_true_prob: float | None = Field(
        None, ge=0.0, le=1.0, description="keep only images whose true class has full-image `confidence` above this"
    )
    year: Literal[2007, 2012] | None = Field(None, description="voc: which VOC20xx under the devkit")
    difficult: Literal["keep", "drop"] = Field(
        "keep", description="voc: 'drop' removes objects flagged difficult from labels and boxes"
    )
    subset: SubsetConfig | None = None
    limit: int | None = Field(None, ge=1)
    skip_bad_images: bool = False
    bad_boxes: Literal["error", "skip"] = Field(
        "error", description="a box that is inverted or outside its image: an error naming it, or skipped and counted"
    )
    extensions: list[str] = Field(
        [".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"],
        description="folder kind: the files listed as images",
    )


class ModelConfig(_Strict):
    """A timm model name (or `tv:NAME` for torchvision), its weights and the explained layer."""

    name: str
    weights: str = "timm"
    layer: str | None = None
    layout: str = Field(
        "auto",
        description="how the layer's output is laid out: auto (detected) or a registered "
        "layout (nchw, nhwc, tokens, a plug-in 'package.module:attr')",
    )

    @field_validator("layout")
    @classmethod
    def _registered_layout(cls, v: str, info: ValidationInfo) -> str:
        """Checked against the layout registry when the caller passes it as validation context (as methods are)."""
        registry = (info.context or {}).get("layouts")
        if v != "auto" and registry is not None and v not in registry:
            raise ValueError(
                registry.plugin_failure([v]) or f"unknown layout {v!r}; known: {['auto', *registry.names()]}"
            )
        return v


class RuntimeConfig(_Strict):
    """Where and how the run computes: device, batches, loader workers, decoding, precision."""

    device: Literal["auto", "cpu", "cuda"] | str = "auto"
    batch_size: int = Field(8, ge=1, description="images per batch")
    workers: int | Literal["auto"] = Field(
        "auto",
        description="DataLoader worker processes; auto: chosen per device (docs/guide/speed-gpu.md, 'GPU settings')",
    )
    decode: Literal["cpu", "gpu"] = Field(
        "cpu",
        description="where JPEGs are decoded: cpu (PIL) | gpu (torchvision "
        "decode_jpeg on the CUDA device, resized there)",
    )
    profile: bool = Field(
        False,
        description="synchronise the GPU at every stage mark so run.json's per-stage times "
        "are exact (`camexp run --profile` sets it)",
    )
    seed: int = Field(0, description="torch.manual_seed at the start of a run (`weights: random`) and ROAD's noise")
    forward_chunk: int | None = Field(None, ge=1, description="max images per no-grad forward of explanation images")
    amp: Literal["off", "bf16", "fp16"] = Field("off", description="autocast dtype of the forward passes")

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, v: Any) -> Any:
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise ValueError(f"give a number of worker processes (0, 1, ...) or auto, not {v!r}")
        return v


# Top-level keys that hold a per-batch metric's or an analysis' settings, as users write them (`road: {noise: 0}`);
# any other metric's settings go under `settings: {KEY: {...}}`. Each metric and analysis validates its own
# (camexp/metrics/base.py: `settings_of`); this leaf module keeps them as written.
SETTINGS_KEYS = ("perturbation", "keep", "pointing", "road", "localization", "sanity")


# `json_schema_extra` of a settings field added after FINGERPRINT_VERSION whose default computes what camexp computed
# before it: the fingerprint holds it only when set to another value, so run folders made before it keep theirs
# (camexp/metrics/base.py: `settings_fingerprint`).
FINGERPRINT_IF_SET: JsonDict = {"fingerprint": "if set"}


def field_if_set(default: Any, description: str, ge: float | None = None) -> Any:
    """A settings field marked FINGERPRINT_IF_SET: added after FINGERPRINT_VERSION, in the fingerprint only when
    set to another value than `default`."""
    return Field(default, description=description, json_schema_extra=FINGERPRINT_IF_SET, ge=ge)


# The key under which a method's `smooth` setting travels with its parameters (camexp/explain/core.py: MethodRun).
SMOOTH_KEY = "smooth"


class SmoothSpec(_Strict):
    """SmoothGrad / VarGrad around any method (docs/guide/methods-metrics.md, "Reference attributions"): the
    method on n noisy copies x + N(0, (sigma * (max x - min x))^2) of each image, their mean (SmoothGrad) or
    variance (VarGrad)."""

    n: int = Field(8, ge=1, description="noisy copies per image")
    sigma: float = Field(0.15, ge=0.0, description="noise standard deviation as a fraction of each image's range")
    kind: Literal["mean", "var"] = Field("mean", description="mean: SmoothGrad; var: VarGrad")
    seed: int = Field(0, ge=0, description="seeds the noise, per image id")


class MethodSpec(_Strict):
    """A method under a name of its own with parameters, so two settings of one method run side by side:
    `{name: scorecam-softmax, method: scorecam, params: {weighting: softmax}}`; `smooth` wraps it in
    SmoothGrad / VarGrad."""

    name: str = Field(description="the name records, tables and figures use; not another registered method's")
    method: str = Field(description="the registered method it runs")
    params: dict[str, Any] = Field({}, description="the method's parameters (`camexp methods NAME` lists them)")
    smooth: SmoothSpec | None = Field(None, description="SmoothGrad / VarGrad of the method (n, sigma, kind, seed)")

    @property
    def resolved_params(self) -> dict[str, Any]:
        """Its parameters as the explainer takes them: `smooth` (with its defaults) under the key SMOOTH_KEY."""
        return {**self.params, **({SMOOTH_KEY: self.smooth.model_dump()} if self.smooth else {})}


class OutputConfig(_Strict):
    """Where the run folder goes and what it keeps beyond the records."""

    dir: Path | None = Field(None, description="the run folder; default results/<name>")
    maps: bool = Field(
        False, description="keep every method's map per image, at the layer's resolution, in the run folder's maps/"
    )


class StatsConfig(_Strict):
    """Uncertainty of the summary numbers: percentile bootstrap over images (camexp/stats/bootstrap.py).

    Summaries only: changing these never changes a per-image value, so they are not in the fingerprint.
    """

    bootstrap: int = Field(1000, ge=0, description="resamples of the images; 0 turns the intervals off")
    level: float = Field(0.95, gt=0.0, lt=1.0, description="coverage of every interval")
    seed: int = Field(0, ge=0, description="seed of numpy's default_rng (PCG64) that draws the resamples")

    @model_validator(mode="after")
    def _enough_resamples(self) -> StatsConfig:
        if 0 < self.bootstrap < MIN_BOOTSTRAP:
            raise ValueError(f"bootstrap: use at least {MIN_BOOTSTRAP} resamples (or 0 to turn the intervals off)")
        return self


class ExperimentConfig(_Strict):
    """A whole experiment; every key: the docs' config guide and reference (docs/guide/config.md)."""

    name: PlainName
    paper: Literal[PAPER_TABLES] | None = None  # type: ignore[valid-type]
    dataset: DatasetConfig
    model: ModelConfig
    methods: list[str | MethodSpec] = ["gradcam", "gradcam++"]
    score: Literal["logit", "softmax"] = "logit"
    confidence: Literal["softmax", "sigmoid"] = "softmax"
    target: Literal["predicted", "true"] = "predicted"
    occlusion: Literal["pixel", "normalized"] = "pixel"
    metrics: list[str] = ["avg_drop", "increase", "win"]
    analyses: list[str] = []
    relperf_min_true_prob: float = Field(0.0, ge=0.0, le=1.0)
    localization: dict[str, Any] = Field({}, description="mloc analysis settings")
    sanity: dict[str, Any] = Field({}, description="mprt / random_logit analysis settings")
    perturbation: dict[str, Any] = Field({}, description="insertion / deletion settings (and the score ROAD uses)")
    keep: dict[str, Any] = Field({}, description="avg_drop@keep / increase@keep settings")
    pointing: dict[str, Any] = Field({}, description="pointing_game / energy_pointing settings")
    road: dict[str, Any] = Field({}, description="road settings")
    settings: dict[str, dict[str, Any]] = Field(
        {}, description="other (plug-in) metrics' settings, by the key each metric declares"
    )
    runtime: RuntimeConfig = RuntimeConfig()
    output: OutputConfig = OutputConfig()
    stats: StatsConfig = StatsConfig()

    @field_validator("methods", "metrics", "analyses")
    @classmethod
    def _registered(cls, v: list[Any], info: ValidationInfo) -> list[Any]:
        """Names must be distinct and, when the caller passes the registries as validation context
        (camexp/experiment.py does), registered. This module imports no registry: config is a leaf."""
        names = [n.name if isinstance(n, MethodSpec) else n for n in v]
        if len(set(names)) != len(names):
            raise ValueError(f"a name is listed twice in {info.field_name}")
        if info.field_name == "methods" and not v:
            raise ValueError("list at least one method")
        registry = (info.context or {}).get(info.field_name)
        if registry is not None:
            lookup = [n.method if isinstance(n, MethodSpec) else n for n in v]
            unknown = registry.unknown(lookup)
            if unknown:
                failure = registry.plugin_failure(unknown)  # a plug-in name: why it does not resolve
                raise ValueError(failure or f"unknown {info.field_name} {unknown}; known: {registry.names()}")
            shadow = [n for n in v if isinstance(n, MethodSpec) and n.name != n.method and n.name in registry.names()]
            if shadow:  # its records would pass for the other method's (and beside its published numbers)
                raise ValueError(
                    f"{{name: {shadow[0].name}, method: {shadow[0].method}}}: the name "
                    f"{shadow[0].name!r} is a registered method; give this setting a name of its own"
                )
        return v

    @field_validator("target", mode="before")
    @classmethod
    def _yaml_true(cls, v: Any) -> Any:
        """`target: true` reads as YAML's boolean true; it means the true class."""
        return "true" if v is True else v

    @model_validator(mode="after")
    def _metric_needs(self, info: ValidationInfo) -> ExperimentConfig:
        """A metric that compares methods (its entry's `compares`, from the metric registry passed as validation
        context, as names are checked) needs at least two."""
        registry = (info.context or {}).get("metrics")
        if registry is not None and len(self.methods) < 2:
            for name in self.metrics:
                if registry.get(name).compares:
                    raise ValueError(f"metric {name!r} compares methods: list at least two methods (or drop {name!r})")
        return self

    @property
    def method_names(self) -> list[str]:
        """The names the records carry, in config order."""
        return [m.name if isinstance(m, MethodSpec) else m for m in self.methods]

    def method_specs(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(record name, registered method, parameters) per listed method."""
        return [(m, m, {}) if isinstance(m, str) else (m.name, m.method, m.resolved_params) for m in self.methods]

    def metric_settings(self, key: str) -> dict[str, Any]:
        """The settings a metric reads under `key`, as written (validated by the metric: `settings_of`)."""
        return dict(getattr(self, key)) if key in SETTINGS_KEYS else dict(self.settings.get(key, {}))

    @property
    def output_dir(self) -> Path:
        return self.output.dir if self.output.dir is not None else Path("results") / self.name

    def fingerprinted(
        self,
        method_params: dict[str, dict[str, Any]] | None = None,
        metric_settings: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Everything that changes per-image values (not batch size, device, workers, output or stats; amp
        does; dataset.bad_boxes only changes which boxes the mloc analysis sees), as a nested dict, under
        `FINGERPRINT_VERSION`: a run folder of another version is refused, never compared key by key.

        `method_params`: every method's parameters with its defaults filled in (record name -> params; the
        registry knows the defaults, this leaf module does not), so that a changed default cannot mix two
        settings in one run folder. `metric_settings`: every metric settings key, validated and dumped by its
        metric with the defaults filled in (key -> settings; camexp/metrics/base.py: `settings_fingerprint`).
        """
        skip = dict.fromkeys(
            (
                "runtime",
                "output",
                "metrics",
                "analyses",
                "relperf_min_true_prob",
                "paper",
                "stats",
                "settings",
                *SETTINGS_KEYS,
            ),
            True,
        )
        keep = self.model_dump(mode="json", exclude={**skip, "dataset": {"bad_boxes"}})
        keep["fingerprint_version"] = FINGERPRINT_VERSION
        keep["method_params"] = method_params or {}
        keep["amp"] = self.runtime.amp  # reduced precision changes Y and O
        for key, values in (metric_settings or {}).items():
            (keep if key in SETTINGS_KEYS else keep.setdefault("settings", {}))[key] = values
        return keep

    def fingerprint(
        self,
        method_params: dict[str, dict[str, Any]] | None = None,
        metric_settings: dict[str, dict[str, Any]] | None = None,
    ) -> str:
        """Hash of `fingerprinted()`: a run folder resumes only a run with the same one (or an extension)."""
        return fingerprint_hash(self.fingerprinted(method_params, metric_settings))


# What `fingerprinted()` holds and how: raise it whenever that changes, so that run folders of the older form are
# refused with one line (camexp/resume.py) instead of being compared key by key under rules that no longer hold.
# 2: every method's and metric's parameters with defaults filled in, amp, model.layout and sanity always present.
FINGERPRINT_VERSION = 2


def fingerprint_hash(fingerprinted: dict[str, Any]) -> str:
    """The 16 hex digits a run folder records for a `fingerprinted()` dict."""
    return hashlib.sha256(json.dumps(fingerprinted, sort_keys=True).encode()).hexdigest()[:16]


def _format_error(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "missing":
        msg = "required key is missing"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{path}: {loc}: {msg}{more}"


class _DuplicateKey(yaml.YAMLError):
    """A mapping that names one key twice: YAML lets the last one win, which silently changes what runs."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (a `<<` merge may still be overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in lines:
                    raise _DuplicateKey(
                        f"the key {key!r} is given twice (lines {lines[key]} and {line}); keep one of them"
                    )
            except TypeError:  # an unhashable key: the base loader refuses it with its own message
                break
            lines[key] = line
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file; a missing file, text that is not UTF-8, bad YAML or a key
    given twice is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.load(read_user_text(path), Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (name, dataset, model, ...)")
    return raw


def load_yaml(
    path: str | Path,
    schema: type[S],
    overrides: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
    raw: dict[str, Any] | None = None,
) -> S:
    """Read a YAML file, apply dotted-key `overrides` (None values are skipped) and validate it as `schema`
    (`context` is handed to the validators: the registries that names are checked against). `raw`: the
    file's mapping when the caller read it (`read_yaml`) and took out a section of its own."""
    path = Path(path)
    raw = read_yaml(path) if raw is None else raw
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    _resolve_paths(raw, path.parent)
    try:
        return schema.model_validate(raw, context=context)
    except ValidationError as e:
        raise ConfigError(_format_error(path, e)) from None


def _resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Relative dataset paths are taken relative to the config file's folder when they exist there."""
    ds = raw.get("dataset")
    if not isinstance(ds, dict):
        return
    for key in ("root", "labels", "annotations"):
        v = ds.get(key)
        if isinstance(v, str) and not Path(v).is_absolute() and not Path(v).exists() and (base / v).exists():
            ds[key] = str(base / v)
