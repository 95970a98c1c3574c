"""Reference data whose categories cannot be label values.  Every kept
category becomes the ``bin`` label of ``modelmon_reference_bin_ratio`` and
``modelmon_feature_bin_values_total``; a 5000-character category used to
reach /metrics as a 5000-character label value (events carrying the same
value are refused by the ingest rule, so it could never even match)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from modelmon.app import Exporter
from modelmon.cli import main
from modelmon.config import ConfigError, config_from_dict
from modelmon.drift.reference import ProfileError, ReferenceProfile, build_categorical
from modelmon.labelsafe import MAX_LABEL_LENGTH

LONG = "L" * 5000


def write_ref(d: Path, cats: list[str]) -> Path:
    p = d / "ref.csv"
    p.write_text("x,c\n" + "".join(f'{i},"{cats[i % len(cats)]}"\n' for i in range(300)))
    return p


def test_building_a_profile_refuses_an_over_long_kept_category() -> None:
    with pytest.raises(ValueError, match=rf"feature 'c': category 'L+'\.\.\. is longer than {MAX_LABEL_LENGTH}"):
        build_categorical("c", [LONG, "a", "b"] * 50)
    # a rare long value outside the top-k is folded into __other__ and harmless
    prof = build_categorical("c", ["a"] * 50 + ["b"] * 40 + [LONG], top_k=2)
    assert prof.categories == ["a", "b"] and prof.counts.tolist() == [50, 40, 1]


def test_exporter_and_cli_name_the_file_and_feature(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ref = write_ref(tmp_path, [LONG, "ok", "fine"])
    cfg = {"models": [{"name": "m", "features": [{"name": "x"}, {"name": "c", "type": "categorical"}],
                       "reference": {"path": str(ref)}}]}
    with pytest.raises(ConfigError) as err:
        Exporter(config_from_dict(cfg))
    assert err.value.field_path == "models[0].reference.path" and str(ref) in str(err.value)
    assert "feature 'c'" in str(err.value)
    assert main(["reference", "build", str(ref), "-o", str(tmp_path / "p.json")]) == 2
    out = capsys.readouterr().err
    assert "feature 'c'" in out and "Traceback" not in out and not (tmp_path / "p.json").exists()


def test_profile_with_a_lone_surrogate_category_is_refused(tmp_path: Path) -> None:
    # A profile edited by hand (hash recomputed) with "\ud800" as a category would make every
    # /metrics scrape fail to encode its bin label.
    ok = write_ref(tmp_path, ["a", "b", "c"])
    assert main(["reference", "build", str(ok), "-o", str(tmp_path / "good.json")]) == 0
    prof = ReferenceProfile.load(tmp_path / "good.json")
    prof.features["c"].categories[0] = "\ud800"
    prof.save(tmp_path / "bad.json")
    text = (tmp_path / "bad.json").read_text()
    assert "\\ud800" in text
    with pytest.raises(ProfileError, match=r"features\['c'\]\.categories: .*lone surrogate"):
        ReferenceProfile.load(tmp_path / "bad.json")
    assert json.loads(text)["features"]["c"]["categories"][0] == "\ud800"
