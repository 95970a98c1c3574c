#!/usr/bin/env python3
"""Writes grafana/dashboards/*.json from the code in grafana/dashgen/.

    python3 grafana/generate.py          # regenerate the committed JSON
    python3 grafana/generate.py --check  # exit 1 if the committed JSON differs

The JSON is committed so Grafana provisions it with nothing to build; the
test suite runs ``--check`` so code and JSON never drift apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
sys.path.insert(0, str(HERE))

from dashgen import build_all  # noqa: E402


def render(dashboard: dict) -> str:
    """Stable text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    return {f"{name}.json": render(d) for name, d in build_all().items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args(argv)
    files = rendered()
    stale = sorted(p.name for p in args.out.glob("*.json") if p.name not in files)
    if args.check:
        bad = [n for n, text in files.items()
               if not (args.out / n).exists() or (args.out / n).read_text(encoding="utf-8") != text]
        for name in bad + stale:
            print(f"{args.out / name}: differs from grafana/dashgen (run python3 grafana/generate.py)", file=sys.stderr)
        return 1 if bad or stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    for name in stale:
        (args.out / name).unlink()
    print(f"wrote {len(files)} dashboards to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
