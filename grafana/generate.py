"""Write labq's Grafana dashboards (grafana/dashboards/*.json) from grafana/boards.py.

    .venv/bin/python -m grafana.generate          # rewrite the JSON files
    .venv/bin/python -m grafana.generate --check  # exit 1 if a committed file is out of date

Needs `grafana-foundation-sdk` (the `test` extra). The JSON is committed so that a lab admin
needs nothing but Grafana to provision it; tests/test_grafana_dashboards.py checks that the
committed files are exactly what this script writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as m

from grafana.boards import DASHBOARDS

OUT = Path(__file__).resolve().parent / "dashboards"


def render(dashboard: m.Dashboard) -> str:
    """The dashboard as Grafana's JSON, keys sorted so the committed files diff cleanly."""
    return json.dumps(dashboard, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def rendered() -> dict[str, str]:
    return {name: render(build()) for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only check that the committed JSON is up to date")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="folder to write (default: %(default)s)")
    args = parser.parse_args(argv)
    stale = []
    for name, text in rendered().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    if stale:
        print("out of date (run: .venv/bin/python -m grafana.generate): " + ", ".join(stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
