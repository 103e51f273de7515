"""Each analysis owns its settings model (mloc's `localization:`, the sanity checks' `sanity:`): validated once
with the metrics', fingerprinted in the form they had as config sections, so run folders and study ids made
before the move keep theirs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from camexp.analyses import ANALYSES
from camexp.config import fingerprint_hash
from camexp.errors import CamexpError, ConfigError
from camexp.experiment import load_experiment
from camexp.explain.core import method_runs
from camexp.metrics import settings_fingerprint, validate_settings
from camexp.resume import fingerprinted_of

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo.yaml"


def test_analysis_settings_are_fingerprinted_as_the_config_sections_were() -> None:
    cfg = load_experiment(DEMO)
    assert settings_fingerprint(cfg, ANALYSES) == {
        "localization": {"thresholds": [0.0, 0.25, 0.5], "topk": 5},
        "sanity": {"seed": 0, "mprt_blocks": None, "mprt_units": "blocks"},
    }
    # Hashes computed by camexp 941c5de, when both were sections of ExperimentConfig: the run folder's fingerprint
    # and the one a study's id hashes (`cfg.fingerprint()` then).
    params = {r.name: r.resolved for r in method_runs(cfg.method_specs())}
    assert fingerprint_hash(fingerprinted_of(cfg, params)) == "7fb8cd6d1891f96e"
    assert cfg.fingerprint(None, settings_fingerprint(cfg, ANALYSES)) == "caa6464d5ce5bfdb"
    changed = load_experiment(DEMO, {"sanity.seed": 3, "localization.topk": 2})
    assert fingerprint_hash(fingerprinted_of(changed, params)) == "52bbc3ef2a3650ab"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"sanity.sed": 3}, "sanity.sed: unknown key"),
        ({"localization.topk": 0}, "localization.topk: Input should be greater than or equal to 1"),
        ({"localization.thresholds": [0.5, 0.5]}, "localization.thresholds: Value error, give one or more distinct"),
        ({"sanity.mprt_units": "modules"}, "sanity.mprt_units: Input should be 'blocks' or 'layers'"),
    ],
)
def test_bad_analysis_settings_name_the_key(override: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_experiment(DEMO, override)


def test_a_metrics_only_process_validates_the_metrics_and_leaves_the_analyses_keys_alone() -> None:
    """The metrics layer cannot see the analyses registry (a later layer): a process that never imports it (a
    metric's test, the metrics bench) validates what its metrics read and is not stopped by `sanity:`."""
    code = (
        "import sys\n"
        "from camexp.config import ExperimentConfig\n"
        "from camexp.metrics import validate_settings\n"
        "cfg = ExperimentConfig(name='f', dataset={'root': '.'}, model={'name': 'toy'}, sanity={'seed': 3})\n"
        "assert 'camexp.analyses' not in sys.modules\n"
        "print(sorted(validate_settings(cfg)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "'perturbation'" in out and "'sanity'" not in out and "'localization'" not in out
    cfg = load_experiment(DEMO, {"sanity.seed": 3})  # with the analyses registered, both are validated
    settings = validate_settings(cfg)
    assert settings["sanity"].seed == 3 and settings["localization"].topk == 5
    with pytest.raises(CamexpError, match="settings.nope: no metric or analysis reads settings"):
        validate_settings(load_experiment(DEMO).model_copy(update={"settings": {"nope": {}}}))
