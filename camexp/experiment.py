"""Loading an experiment: the YAML schema of camexp/config.py, checked against the registries it names.

config.py is a leaf that knows no registry; this module hands the registries of methods, metrics, analyses
and layouts to its validators, so that an unknown (or unimportable plug-in) name is a one-line error naming
the config file and the key; method parameters are checked against their method, and metric settings
against the metric that reads them, here too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from camexp.analyses import ANALYSES
from camexp.config import ExperimentConfig, load_yaml
from camexp.errors import CamexpError, ConfigError
from camexp.explain.core import method_runs
from camexp.explain.methods import METHODS
from camexp.metrics import METRICS, validate_settings
from camexp.models.layout import LAYOUTS


def registries() -> dict[str, Any]:
    """The validation context: config list key -> the registry its names must be in."""
    return {"methods": METHODS, "metrics": METRICS, "analyses": ANALYSES, "layouts": LAYOUTS}


def load_experiment(
    path: str | Path, overrides: dict[str, Any] | None = None, raw: dict[str, Any] | None = None
) -> ExperimentConfig:
    """Read and validate a YAML experiment; `overrides` maps dotted keys (e.g. 'runtime.batch_size'); `raw`:
    the file's mapping, already read (`read_yaml`), less sections other loaders own (a study's `study:`)."""
    cfg = load_yaml(path, ExperimentConfig, overrides, context=registries(), raw=raw)
    try:
        method_runs(cfg.method_specs())
    except CamexpError as e:
        raise ConfigError(f"{path}: methods: {e}") from None
    try:
        validate_settings(cfg)
    except CamexpError as e:
        raise ConfigError(f"{path}: {e}") from None
    return cfg
