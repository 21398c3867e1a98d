"""Two runs at once against one host, a busy partial converge, a commit killed with SIGKILL.

converge.yml leaves the result of each racing run (race-a.json, race-b.json,
their logs and end times) in molecule's ephemeral directory; side_effect.yml
adds busy.json and commit.json. The race tests hold after both verify steps
(the side effect changes only the top lower layers); the side-effect tests
(marker side_effect) are deselected in the verify before the side effect
(conftest.py says so in pytest's header) and fail without their results after it.
"""

from __future__ import annotations

import json
import os

import pytest

OUT = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")
DECLARED = {
    "a": (["/srv/race/%02d" % i for i in range(1, 11)], "/opt/race/a"),
    "b": (["/srv/race/%02d" % i for i in range(6, 16)], "/opt/race/b"),
}


def load(name: str) -> dict:
    path = os.path.join(OUT, name)
    assert os.path.exists(path), "%s missing: converge.yml or side_effect.yml did not write it" % path
    with open(path) as fh:
        return json.load(fh)


def text(name: str) -> str:
    with open(os.path.join(OUT, name)) as fh:
        return fh.read()


def order() -> tuple[str, str]:
    """(first, last): the run that waited for the host lock ran last."""
    a, b = load("race-a.json"), load("race-b.json")
    waited = [k for k, r in (("a", a), ("b", b)) if "waited_for" in r["lock"]]
    assert len(waited) == 1, (a["lock"], b["lock"])
    last = waited[0]
    return ("b" if last == "a" else "a"), last


def live_overlays(host) -> dict[str, list[str]]:
    out = json.loads(host.check_output("findmnt --json --list -t overlay -o TARGET,OPTIONS"))
    res = {}
    for fs in out["filesystems"]:
        if fs["target"].startswith("/srv/race/"):
            opts = dict(o.partition("=")[::2] for o in fs["options"].split(","))
            res[fs["target"]] = opts["lowerdir"].split(":")
    return res


def test_both_ended_one_after_the_other_and_the_waiter_says_so():
    first, last = order()
    runs = {k: load("race-%s.json" % k) for k in "ab"}
    assert runs[first]["lock"]["waited"] < runs[last]["lock"]["waited"]
    assert runs[last]["lock"]["waited"] > 0 and runs[last]["lock"]["waited_for"]["pid"] > 0
    assert "AnsiballZ_mounts" in runs[last]["lock"]["waited_for"]["cmdline"] or runs[last]["lock"]["waited_for"][
        "cmdline"
    ].startswith("/usr/bin/python3")
    assert float(text("race-%s.end" % first)) < float(text("race-%s.end" % last))
    assert "waited %.1f s for the host lock" % runs[last]["lock"]["waited"] in text("race-%s.log" % last)
    assert not any(r.get("failed") for k in "ab" for r in runs[k]["results"])


def test_live_mounts_agree_exactly_with_the_last_declaration(host):
    first, last = order()
    paths, lower = DECLARED[last]
    live = live_overlays(host)
    assert sorted(live) == paths
    committed = os.path.exists(os.path.join(OUT, "commit.json"))
    for p in paths:
        if committed and p == COMMITTED[0]:
            assert live[p][0] == COMMITTED[1] and live[p][-1] == lower, live[p]  # stacked by the side effect
        else:
            assert live[p][-1] == lower, (p, live[p])


def test_units_and_target_agree_exactly_with_the_last_declaration(host):
    first, last = order()
    paths, lower = DECLARED[last]
    managed = host.check_output(
        "grep -l '^X-OverlayfsSystemd-Role=overlay' /etc/systemd/system/srv-race-*.mount || true"
    ).split()
    units = sorted(host.check_output("systemd-escape --path --suffix=mount %s", p) for p in paths)
    assert sorted(os.path.basename(u) for u in managed) == units
    requires = host.check_output("systemctl show -p Requires --value overlays.target").split()
    assert sorted(u for u in requires if u.startswith("srv-race")) == units
    for u in units:
        props = host.check_output("systemctl show -p ActiveState,UnitFileState %s", u)
        assert "ActiveState=active" in props and "UnitFileState=enabled" in props
    assert host.service("overlays.target").is_running


def test_mount_info_agrees_with_the_last_declaration(host):
    first, last = order()
    paths, lower = DECLARED[last]
    res = host.ansible("overlayfs.systemd.mount_info", "managed_only=true", check=False)
    assert not res.get("failed"), res
    report = {o["path"]: o for o in res["overlays"] if o["path"].startswith("/srv/race/")}
    assert sorted(report) == paths
    for p in paths:
        assert report[p]["drift"] == [], report[p]
        assert report[p]["mounted"]


def test_no_upper_data_lost():
    """Every file written before the race is still in its upper, live or not (exclusive keeps data)."""
    uppers = load("race-uppers.json")
    assert len(uppers) == 15


COMMITTED = ("/srv/race/09", "/srv/persist/layers/race09-v2")


@pytest.mark.parametrize("n", range(1, 16))
def test_upper_file_kept(host, n):
    path = "/srv/race/%02d" % n
    upper = load("race-uppers.json")[path]
    if path == COMMITTED[0] and os.path.exists(os.path.join(OUT, "commit.json")):
        upper = COMMITTED[1]  # the side effect committed this upper into a new lower layer
    assert host.file(upper + "/before.txt").content_string == path + "\n"
    first, last = order()
    if path in DECLARED[last][0]:
        assert host.file(path + "/before.txt").content_string == path + "\n"


@pytest.mark.side_effect
def test_busy_partial_converge_brought_the_target_and_the_app_back(host):
    busy = load("busy.json")
    assert busy["failed"] and "busy, left untouched: /srv/race/08" in busy["msg"]
    assert {"overlays.target", "race-app.service"} <= set(busy["restarted_units"])
    assert host.service("overlays.target").is_running
    assert host.service("race-app.service").is_running
    live = live_overlays(host)
    first, last = order()
    paths, lower = DECLARED[last]
    assert live["/srv/race/08"] == [lower]  # untouched
    for p in paths:
        if p not in ("/srv/race/08", "/srv/race/09"):
            assert live[p] == ["/opt/race/c", lower], p
    assert live["/srv/race/09"] == [COMMITTED[1], "/opt/race/c", lower]
    assert host.file("/srv/race/08/before.txt").exists


@pytest.mark.side_effect
def test_sigkilled_stacked_copy_undone_and_committed_again(host):
    """SIGKILL in the middle of a stacked copy (overlay stopped): the re-run undoes it and commits, view unchanged."""
    res = load("commit.json")
    partial = res["partial"]
    assert "/.race09-v2.overlayfs-partial-" in partial
    # the kill landed mid-copy: overlay stopped, journal at the move step, the partial copy incomplete
    assert res["at_kill"] == "stopped"
    assert res["journal"]["phase"] == "move" and res["journal"]["method"] == "copy", res["journal"]
    assert res["journal"]["pid"] == int(partial.rsplit("-", 1)[1])
    assert 0 <= res["partial_files"] < 20003, res["partial_files"]
    rerun = res["rerun"]
    assert rerun["interrupted_commit"]["action"] == "back", rerun["interrupted_commit"]
    assert rerun["method"] == "copy" and rerun["changed"] and rerun["mounted"]
    assert [c["path"] for c in rerun["cleaned"]] == [partial]
    assert rerun["cleaned"][0]["kind"] == "partial" and rerun["cleaned"][0]["action"] == "removed"
    assert not host.file(partial).exists
    assert res["same"], "the merged view of /srv/race/09 changed across the commit"
    assert live_overlays(host)["/srv/race/09"][0] == "/srv/persist/layers/race09-v2"
    assert host.check_output("ls -A /srv/persist/layers") == "race09-v2"
    assert host.check_output("ls -A %s", rerun["upperdir"]) == ""
    assert host.check_output("ls -a /var/lib/overlayfs/*/ | grep -c overlayfs- || true") == "0"
