"""Layer paths with backslash, comma, colon, space, % mount with the right layers (mountinfo read back)."""

from __future__ import annotations

import re

import pytest

B = "\\"
ALL = "all" + B + ",: %x"
NAMES = ["back" + B + "slash", "com,ma", "co:lon", "spa ce", "per%cent", ALL]


def mountinfo_layers(host, mount_point: str) -> dict[str, list[str]]:
    """lowerdir/upperdir of the overlay at mount_point, decoded from /proc/self/mountinfo by hand."""

    def octal(s: str) -> str:
        return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)

    def split_unescape(s: str, sep: str) -> list[str]:
        parts, cur, chars = [], [], iter(s)
        for c in chars:
            if c == B:
                cur.append(next(chars, ""))
            elif c == sep:
                parts.append("".join(cur))
                cur = []
            else:
                cur.append(c)
        return parts + ["".join(cur)]

    for line in host.file("/proc/self/mountinfo").content_string.splitlines():
        fields = line.split(" ")
        if octal(fields[4]) != mount_point:
            continue
        sep = fields.index("-")
        layers: dict[str, list[str]] = {}
        for opt in fields[sep + 3].split(","):
            key, dummy, value = opt.partition("=")
            if key in ("lowerdir", "upperdir", "workdir"):
                layers[key] = split_unescape(octal(value), ":" if key == "lowerdir" else "")
            elif key == "lowerdir+":
                layers.setdefault("lowerdir+", []).append(octal(value))
        return layers
    raise AssertionError("no mount at %r" % mount_point)


@pytest.mark.parametrize("name", NAMES)
def test_mountinfo_shows_the_declared_lowers(host, name):
    layers = mountinfo_layers(host, "/srv/e/" + name)
    assert layers["lowerdir"] == ["/opt/e/" + name, "/opt/e/base"]


@pytest.mark.parametrize("name", NAMES)
def test_merged_view_has_both_layers(host, name):
    assert host.file("/srv/e/%s/marker" % name).content_string == "/opt/e/%s\n" % name


def test_all_characters_in_the_upper_too(host):
    layers = mountinfo_layers(host, "/srv/e/" + ALL)
    assert layers["upperdir"] == ["/srv/persist/%s/upper" % ALL]
    assert host.file("/srv/persist/%s/upper/written" % ALL).content_string == "written\n"
    assert not host.file("/opt/e/%s/written" % ALL).exists


def test_long_stack_in_the_form_this_util_linux_takes(host):
    # util-linux 2.38 (legacy mount(2)) takes the 484-byte lowerdir= list; 2.41
    # (fsconfig: 255 bytes a value) gets one lowerdir+= a layer.
    lowers = ["/opt/e/%s%d" % ("L" * 75, i) for i in range(5)]
    version = tuple(int(x) for x in re.search(r"util-linux (\d+)\.(\d+)", host.run("mount --version").stdout).groups())
    layers = mountinfo_layers(host, "/srv/e/long")
    form = "lowerdir+" if version >= (2, 39) else "lowerdir"
    assert layers == {form: lowers}
    assert host.file("/srv/e/long/marker").content_string == lowers[0] + "\n"
