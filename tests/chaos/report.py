"""Print the chaos report table (``make chaos``) from test-artifacts/chaos.json."""

from __future__ import annotations

import json
import sys

from tests.fakes.moto_server import ARTIFACTS


def main() -> int:
    path = ARTIFACTS / "chaos.json"
    if not path.exists():
        print("no chaos report: run `make chaos`", file=sys.stderr)
        return 1
    rows = json.loads(path.read_text())
    columns = ["tasks", "faults injected", "completed", "lost", "duplicated"]
    print(f"| scenario | {' | '.join(columns)} |")
    print("|---|" + "---:|" * len(columns))
    for scenario, row in rows.items():
        print(f"| {scenario} | {' | '.join(str(row[c]) for c in columns)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
