"""The streaming ablations in one table: every bench/results/cvr_streaming_ablation_*.json (one seed
each), one row per ablation x method, with the command that wrote it.

    python bench/stream_ablation_table.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def rows() -> list[tuple[str, str, float, float, float]]:
    out = []
    for path in sorted(RESULTS.glob("cvr_streaming_ablation_*.json")):
        payload = json.loads(path.read_text())
        name = path.stem[len("cvr_streaming_ablation_"):]
        for row in payload["table"]:
            if row["method"].startswith("ceiling") and len(payload["table"]) < 3:
                continue  # the ceiling is shown with the full method sets
            out.append((name, row["method"], row["auc"], row["logloss"], row.get("calibration", float("nan"))))
    return out


def main() -> None:
    print(f"{'ablation':34s} {'method':18s} {'AUC':>7s} {'logloss':>8s} {'pred/obs':>8s}")
    for name, method, auc, logloss, calibration in rows():
        print(f"{name:34s} {method:18s} {auc:7.4f} {logloss:8.4f} {calibration:8.3f}")
    print()
    for path in sorted(RESULTS.glob("cvr_streaming_ablation_*.json")):
        print(f"{path.name}: {json.loads(path.read_text()).get('command', '(command in docs/conversion.md)')}")


if __name__ == "__main__":
    main()
