"""Sum the summary lines of every pytest session in a log into one line.

Usage: pytest_totals.py LOG EXIT_STATUS. Prints "overlayfs.systemd: N passed,
N failed" (plus ", N skipped" when any were): the closing line of make test.
A run that failed outside pytest (a linter, a build step) still counts as
failed: the exit status is kept by the caller; this only reports.
"""

from __future__ import annotations

import re
import sys

SUMMARY = re.compile(r"^(?:=+ )?(?P<body>\d+ (?:passed|failed|errors?|skipped)\b.*) in [0-9.]+s\b.*$")
COUNT = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")


def totals(lines: list[str]) -> dict[str, int]:
    out = {"passed": 0, "failed": 0, "skipped": 0, "sessions": 0}
    for line in lines:
        m = SUMMARY.match(line.strip())
        if not m:
            continue
        out["sessions"] += 1
        for n, kind in COUNT.findall(m.group("body")):
            key = {"error": "failed", "errors": "failed", "xpassed": "passed", "xfailed": "skipped"}.get(kind, kind)
            out[key] += int(n)
    return out


def main() -> int:
    with open(sys.argv[1], encoding="utf-8", errors="replace") as fh:
        t = totals(fh.read().splitlines())
    line = f"overlayfs.systemd: {t['passed']} passed, {t['failed']} failed"
    if t["skipped"]:
        line += f", {t['skipped']} skipped"
    print(f"({t['sessions']} pytest sessions, exit status {sys.argv[2]})")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
