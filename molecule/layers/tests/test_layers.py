"""What the layers scenario leaves, read on each box after converge.

The fleet is back on the base layer (the imported k2 layer removed, its
overlay mounted on the base only, the merged view the one before the
change): test_layers_fleet.py; the golden box runs its committed layer and
shows the golden view: test_layers_golden.py. Each file selects its boxes
by inventory group (testinfra_hosts), so no test is skipped on a box.
"""


def test_kiosk_unit_active(host):
    out = host.check_output("systemctl show -p ActiveState srv-kiosk.mount")
    assert out == "ActiveState=active"
