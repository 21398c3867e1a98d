#!/usr/bin/env bash
# make demo: build the bench, boot a long-lived systemd container
# (overlayfs-demo), apply playbooks/demo.yml to it, use the overlays, reboot
# it, and show what survived. `make demo-clean` removes the container.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. scripts/lib.sh
export NO_COLOR=1 PY_COLORS=0 ANSIBLE_FORCE_COLOR=0
C=overlayfs-demo

timed "venv" scripts/venv.sh
export PATH="$ROOT/.venv/bin:$PATH"
mkdir -p .cache/collections/ansible_collections/overlayfs
ln -sfn "$ROOT" .cache/collections/ansible_collections/overlayfs/systemd
export ANSIBLE_COLLECTIONS_PATH="$ROOT/.cache/collections"

if [ "${1:-}" = clean ]; then
  timed "remove demo container" molecule destroy -s demo
  scripts/bench.sh docker-down
  exit 0
fi

scripts/bench.sh up   # times its own steps
# The container is made by molecule from the shared platform settings
# (.config/molecule/config.yml), so the demo boots exactly like the tests.
timed "boot demo container" molecule create -s demo

# run 'SHELL CODE': runs in the container, so its $ expand there.
# shellcheck disable=SC2016
run() { docker exec "$C" bash -c "$1"; }
# report: the overlayfs.systemd.mount_info table of the container
# (playbooks/report.yml). The YAML result format prints the table as plain
# lines; only those are shown (everything, if the playbook fails).
report() {
  local out
  out=$(ANSIBLE_CALLBACK_RESULT_FORMAT=yaml ansible-playbook -i "$C," -c community.docker.docker \
    -e ansible_python_interpreter=/usr/bin/python3 playbooks/report.yml 2>&1) || { printf '%s\n' "$out"; return 1; }
  printf '%s\n' "$out" | sed -n '/^ *msg: |-$/,/^$/{/msg: |-/d;/^$/d;s/^        //;p}'
}
# shellcheck disable=SC2016
show() {
  echo
  echo "==================== $1 ===================="
  report
  echo "--- units"
  run 'systemctl list-units --no-legend --plain "*.mount" "overlayfs-*" | grep -E "kiosk|overlayfs" | cut -c1-100'
  echo "--- what the app sees"
  run 'for f in /srv/kiosk/app.conf /srv/kiosk/session.log /etc/kiosk/kiosk.conf /usr/share/kiosk-assets/logo.txt; do
         printf "%-36s " "$f:"; if [ -e "$f" ]; then tr "\n" " " < "$f"; echo; else echo "(absent)"; fi; done'
}

timed "apply playbooks/demo.yml" ansible-playbook -i "$C," -c community.docker.docker \
  -e ansible_python_interpreter=/usr/bin/python3 -e ansible_become=false playbooks/demo.yml
show "after the playbook"

echo
echo "--- using the appliance: the app writes a session log, an operator changes the volume"
run 'echo "user tapped start" >> /srv/kiosk/session.log; sed -i s/volume=40/volume=70/ /etc/kiosk/kiosk.conf'
# shellcheck disable=SC2016
run 'echo "writing to the read-only assets: $(touch /usr/share/kiosk-assets/x 2>&1 || true)"'
show "before the reboot"

reboot_demo() {
  docker stop --time 60 "$C" >/dev/null
  docker start "$C" >/dev/null
  local _
  for _ in $(seq 1 120); do
    state=$(docker exec "$C" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) return 0 ;; esac
    sleep 0.5
  done
  die "demo container did not finish booting (state: $state)"
}
timed "reboot" reboot_demo
show "after the reboot: session.log gone (tmpfs upper), volume=70 kept (persistent upper), lowers unchanged"
echo
echo "The factory defaults are untouched:"
run 'printf "%-36s " /opt/kiosk/config-defaults/kiosk.conf:; tr "\n" " " < /opt/kiosk/config-defaults/kiosk.conf; echo'
echo
echo "The demo container keeps running: docker exec -it $C bash   (remove it: make demo-clean)"
