"""Frozen reference profiles: what they hold, how they are saved, read from
CSV / JSON lines / Parquet, built by ``modelmon reference build`` and loaded
by the exporter's config (``reference.path``: raw data or a profile)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelmon.app import load_profile
from modelmon.cli import main
from modelmon.config import FeatureConfig, config_from_dict
from modelmon.datasets import DataError, load_table
from modelmon.drift.reference import OTHER, ReferenceProfile, build_categorical, build_numerical, build_profile


def write_csv(path: Path, cols: dict[str, list]) -> Path:
    names = list(cols)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(names)
        for row in zip(*cols.values()):
            w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row])
    return path


def test_numerical_profile_bins_moments_and_sample() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(10, 2, 5000)
    x_missing = np.concatenate([x, [np.nan, np.inf]])
    prof = build_numerical("x", x_missing, bins=10, sample_size=1000)
    assert np.allclose(prof.edges, np.quantile(x, np.linspace(0, 1, 11)))
    assert (prof.min, prof.max, prof.n, prof.missing) == (x.min(), x.max(), 5000, 2)
    assert prof.mean == pytest.approx(x.mean()) and prof.std == pytest.approx(x.std())
    # slots: below-min, 10 bins, above-max; the reference never falls out of its own range
    assert prof.slots == 12 and prof.counts[0] == prof.counts[-1] == 0 and prof.counts.sum() == 5000
    assert np.all(np.abs(prof.counts[1:-1] - 500) <= 1)
    assert list(prof.bin_index(np.array([x.min() - 1, x.min(), x.max(), x.max() + 1, np.nan]))) == [0, 1, 10, 11, -1]
    # bounded sample: evenly spaced order statistics, keeping both extremes
    assert len(prof.sample) == 1000 and np.all(np.diff(prof.sample) >= 0)
    assert prof.sample[0] == x.min() and prof.sample[-1] == x.max()
    assert np.array_equal(build_numerical("x", x[:800], sample_size=1000).sample, np.sort(x[:800]))


def test_discrete_values_collapse_duplicate_edges() -> None:
    prof = build_numerical("k", np.array([0, 0, 0, 0, 1, 1, 2, 5] * 50, dtype=float), bins=10)
    assert list(prof.edges) == sorted(set(prof.edges))  # no empty zero-width bins
    assert prof.counts.sum() == 400 and prof.slots == len(prof.edges) + 1


def test_categorical_profile_top_k_and_other() -> None:
    values = ["a"] * 50 + ["b"] * 30 + ["c"] * 15 + ["d"] * 5 + [None, ""]
    prof = build_categorical("c", values, top_k=2)
    assert prof.categories == ["a", "b"] and prof.slot_labels() == ["a", "b", OTHER]
    assert list(prof.counts) == [50, 30, 20] and prof.missing == 2
    assert list(prof.codes(["a", "zz", None, "b"])) == [0, 2, -1, 1]
    configured = build_categorical("c", values, categories=["a", "z"])
    assert list(configured.counts) == [50, 0, 50]


def test_profile_save_load_keeps_hash_and_detects_edits(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    feats = [FeatureConfig(name="x"), FeatureConfig(name="c", type="categorical")]
    prof = build_profile({"x": rng.normal(size=300), "c": list(rng.choice(["u", "v"], 300))}, feats)
    path = tmp_path / "p.json"
    prof.save(path)
    back = ReferenceProfile.load(path)
    assert back.hash == prof.hash and back.rows == 300
    assert np.array_equal(back.features["x"].sample, prof.features["x"].sample)
    assert back.features["c"].categories == prof.features["c"].categories
    other = build_profile({"x": rng.normal(size=300), "c": list(rng.choice(["u", "v"], 300))}, feats)
    assert other.hash != prof.hash
    doc = json.loads(path.read_text())
    doc["features"]["x"]["mean"] += 1.0
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="does not match its hash"):
        ReferenceProfile.load(path)


def test_csv_jsonl_and_parquet_give_the_same_profile(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = [float(v) for v in rng.normal(size=200)]
    x[3] = None
    c = [str(v) for v in rng.choice(["red", "blue", "green"], 200)]
    feats = [FeatureConfig(name="x"), FeatureConfig(name="c", type="categorical")]
    csv_path = write_csv(tmp_path / "ref.csv", {"x": x, "c": c})
    jsonl = tmp_path / "ref.jsonl"
    jsonl.write_text("".join(json.dumps({"x": a, "c": b}) + "\n" for a, b in zip(x, c)))
    hashes = {build_profile(load_table(p), feats).hash for p in (csv_path, jsonl)}
    assert len(hashes) == 1
    pq.write_table(pa.table({"x": x, "c": c}), tmp_path / "ref.parquet")
    assert build_profile(load_table(tmp_path / "ref.parquet"), feats).hash in hashes
    (tmp_path / "other.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"other\.parquet: cannot read Parquet"):
        load_table(tmp_path / "other.parquet")


def test_data_file_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("a,b\n")
    (tmp_path / "ragged.csv").write_text("a,b\n1,2\n3\n")
    (tmp_path / "dupe.csv").write_text("a,a\n1,2\n")
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\nnot json\n')
    for name, msg in (("missing.csv", "no such file"), ("empty.csv", "empty file"), ("header.csv", "no data rows"),
                      ("ragged.csv", "1 fields, header has 2"), ("dupe.csv", "duplicate column 'a'"),
                      ("bad.jsonl", "invalid JSON")):
        with pytest.raises(DataError, match=msg) as info:
            load_table(tmp_path / name)
        assert name in str(info.value)


def test_reference_build_command_infers_types(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(3)
    data = write_csv(tmp_path / "ref.csv", {
        "age": [float(v) for v in rng.normal(40, 10, 300)],
        "count": [int(v) for v in rng.integers(0, 9, 300)],
        "region": [str(v) for v in rng.choice(["n", "s"], 300)],
        "code": [str(v) for v in rng.choice(["1", "2", "x"], 300)],  # mostly digits: still categorical
    })
    out = tmp_path / "prof.json"
    assert main(["reference", "build", str(data), "-o", str(out), "--bins", "5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["features"] == {"age": "numerical", "count": "numerical", "region": "categorical", "code": "categorical"}
    prof = ReferenceProfile.load(out)
    assert summary["hash"] == prof.hash and prof.rows == 300
    assert len(prof.features["age"].edges) == 6


def test_reference_build_with_config_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(4)
    data = write_csv(tmp_path / "ref.csv", {"x": [float(v) for v in rng.normal(size=100)],
                                           "k": [int(v) for v in rng.integers(0, 3, 100)], "empty": [None] * 100})
    cfg = tmp_path / "modelmon.yml"
    cfg.write_text(
        "models:\n- name: m\n  features:\n  - {name: x}\n  - {name: k, type: categorical}\n"
        "  drift: {bins: 4, top_k_categories: 2}\n  reference: {path: prof.json}\n"
    )
    prof_path = tmp_path / "prof.json"
    assert main(["reference", "build", str(data), "-o", str(prof_path), "--config", str(cfg)]) == 0
    prof = ReferenceProfile.load(prof_path)
    assert set(prof.features) == {"x", "k"} and prof.features["k"].type == "categorical"
    assert len(prof.features["k"].categories) == 2 and len(prof.features["x"].edges) == 5
    capsys.readouterr()
    # errors: exit 2 with the file and column named
    assert main(["reference", "build", str(tmp_path / "nope.csv"), "-o", str(prof_path)]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err
    assert main(["reference", "build", str(data), "-o", str(tmp_path / "p2.json")]) == 2
    assert "'empty'" in capsys.readouterr().err
    cfg2 = tmp_path / "other.yml"
    cfg2.write_text("models:\n- name: m\n  features:\n  - {name: y}\n")
    assert main(["reference", "build", str(data), "-o", str(tmp_path / "p3.json"), "--config", str(cfg2)]) == 2
    assert "no column 'y'" in capsys.readouterr().err


def test_config_reference_path_accepts_data_or_profile(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    write_csv(tmp_path / "ref.csv", {"x": [float(v) for v in rng.normal(size=400)],
                                     "c": [str(v) for v in rng.choice(["a", "b"], 400)]})
    assert main(["reference", "build", str(tmp_path / "ref.csv"), "-o", str(tmp_path / "prof.json")]) == 0
    profiles = []
    for ref in ("ref.csv", "prof.json"):
        cfg = config_from_dict({"models": [{"name": "m", "features": [{"name": "x"}, {"name": "c", "type": "categorical"}],
                                            "reference": {"path": ref}}]}, source=str(tmp_path / "modelmon.yml"))
        profiles.append(load_profile(cfg, 0, cfg.models[0]))
    assert profiles[0].hash == profiles[1].hash
