"""Writes the example's data files (deterministic): the training-time reference
and a new training set drawn from the same distributions.  Stand-ins for your
own data; `python examples/ci/make_data.py` recreates them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
COUNTRIES = ["DE", "FR", "GB", "US"]
DEVICES = ["desktop", "mobile", "tablet"]


def sample(rng: np.random.Generator, rows: int) -> dict[str, list]:
    return {
        "amount": np.round(rng.lognormal(3.5, 0.8, rows), 2).tolist(),
        "age": np.round(rng.normal(41, 12, rows)).clip(18, 95).astype(int).tolist(),
        "country": rng.choice(COUNTRIES, rows, p=[0.3, 0.2, 0.15, 0.35]).tolist(),
        "device": rng.choice(DEVICES, rows, p=[0.45, 0.45, 0.1]).tolist(),
    }


def write(path: Path, cols: dict[str, list]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(list(cols))
        w.writerows(zip(*cols.values(), strict=True))


if __name__ == "__main__":
    write(HERE / "data" / "reference.csv", sample(np.random.default_rng(2024), 2000))
    write(HERE / "data" / "train-new.csv", sample(np.random.default_rng(2025), 2000))
