"""The golden box runs its committed layer and shows the golden view."""

from layers_view import LAYERS, lowerdirs, manifest, saved

testinfra_hosts = ["ansible://golden"]


def test_golden_runs_its_committed_layer(host):
    assert lowerdirs(host)[0] == LAYERS + "/golden-k2"
    assert manifest(host) == saved(host, "golden-k2.txt")
    assert not host.file("/srv/kiosk/etc/old.conf").exists
    assert host.file("/srv/kiosk/cache/fresh").content_string == "fresh\n"
