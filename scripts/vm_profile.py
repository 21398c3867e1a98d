"""Per-task durations of the VM tests' plays (saved with OVERLAYFS_VM_PLAYS=DIR): the slowest tasks of each play
and, over all plays, the time by task name.

    python3 scripts/vm_profile.py DIR [TOP]
"""

from __future__ import annotations

import collections
import datetime
import glob
import json
import os
import sys


def seconds(duration: dict) -> float:
    def parse(stamp: str) -> datetime.datetime:
        return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    return (parse(duration["end"]) - parse(duration["start"])).total_seconds()


def main() -> None:
    folder = sys.argv[1]
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    totals: collections.Counter = collections.Counter()
    counts: collections.Counter = collections.Counter()
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        with open(path, encoding="utf-8") as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError:
                continue
        rows = []
        for play in data.get("plays", []):
            for task in play.get("tasks", []):
                info = task.get("task", {})
                if "duration" not in info:
                    continue
                skipped = all(h.get("skipped") for h in task.get("hosts", {}).values())
                rows.append((seconds(info["duration"]), info.get("name", "?"), skipped))
        total = sum(r[0] for r in rows)
        print(f"== {os.path.basename(path)}: {total:.1f} s in {len(rows)} tasks")
        for secs, name, skipped in sorted(rows, reverse=True)[:top]:
            print(f"  {secs:7.2f}  {name}{' (skipped)' if skipped else ''}")
        for secs, name, _skipped in rows:
            totals[name] += secs
            counts[name] += 1
    print("== over all plays")
    for name, secs in totals.most_common(top * 3):
        print(f"  {secs:7.1f}  x{counts[name]:<3} {name}")


if __name__ == "__main__":
    main()
