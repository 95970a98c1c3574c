"""Start-up cost: the CLI parser loads neither numpy, scipy nor pyarrow, and
an exporter whose reference is a frozen profile never loads pyarrow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from modelmon.config import FeatureConfig
from modelmon.drift import registry
from modelmon.drift.reference import build_profile
from modelmon.drift_cli import METHOD_NAMES
from modelmon.quality import average_ranks
from scipy.stats import rankdata

pytestmark = pytest.mark.e2e  # starts Python subprocesses that import modelmon

EXPORTER = str(Path(__file__).resolve().parents[1] / "exporter")


def loaded_after(code: str) -> list[str]:
    probe = code + "\nimport sys, json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'scipy', 'pyarrow'})))"
    env = {**os.environ, "PYTHONPATH": EXPORTER}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cli_parser_imports_no_heavy_module() -> None:
    assert loaded_after("from modelmon.cli import build_parser\nbuild_parser().format_help()") == []


def test_method_names_in_the_help_are_the_registered_ones() -> None:
    assert list(METHOD_NAMES) == registry.names()


def test_profile_reference_does_not_load_pyarrow(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    prof = build_profile({"x": rng.normal(size=500), "c": list(rng.choice(["a", "b"], 500))},
                         [FeatureConfig(name="x"), FeatureConfig(name="c", type="categorical")])
    prof.save(tmp_path / "prof.json")
    code = (
        "from modelmon.app import load_profile\nfrom modelmon.config import config_from_dict\n"
        f"cfg = config_from_dict({{'models': [{{'name': 'm', 'features': [{{'name': 'x'}}, "
        f"{{'name': 'c', 'type': 'categorical'}}], 'reference': {{'path': {str(tmp_path / 'prof.json')!r}}}}}]}})\n"
        "assert load_profile(cfg, 0, cfg.models[0]).rows == 500"
    )
    assert "pyarrow" not in loaded_after(code)


def test_exporter_imports_no_scipy_or_pyarrow() -> None:
    """scipy loads on the first KS / chi-square p-value, pyarrow on the first data file."""
    assert loaded_after("import modelmon.app, modelmon.cli") == ["numpy"]


def test_average_ranks_equal_scipy_rankdata() -> None:
    rng = np.random.default_rng(1)
    for x in (rng.integers(0, 4, 500).astype(float), rng.normal(size=301), np.array([3.0]), np.full(5, 2.0)):
        assert np.array_equal(average_ranks(x), rankdata(x))


def test_config_validation_catalog_is_the_registry() -> None:
    """Config validation reads the light method table, the engine the registry: they must agree."""
    from modelmon.drift.catalog import METHOD_FEATURE_TYPES

    assert METHOD_FEATURE_TYPES == {name: registry.get(name).feature_types for name in registry.names()}
