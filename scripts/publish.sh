#!/usr/bin/env bash
# What a user meets before running anything: the Galaxy import, the release
# notes and the documentation site.
#
#   publish.sh check   galaxy-importer (Galaxy's defaults, offline, no
#                      ansible-test container) on the built tarball; a
#                      release-notes preview (antsibull-changelog release on a
#                      scratch copy) that must list every module, role and filter;
#                      the install paths of README.md (git, requirements.yml,
#                      tarball) and its collections: keyword pitfall
#   publish.sh docs    the antsibull-docs site with the guides of docs/*.md,
#                      diagrams (graphviz) and plots (matplotlib), built
#                      offline with -W into .cache/publish/html; then every
#                      page loaded in headless Chromium (no broken link or
#                      image) and screenshots in .cache/publish/screenshots/
#
# Tools: a venv of its own, .cache/publish-venv (requirements-publish.txt);
# Debian's chromium and graphviz (installed when missing, as root).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
. scripts/lib.sh
OUT=$ROOT/.cache/publish
VENV=$ROOT/.cache/publish-venv
COLL=overlayfs.systemd

venv() {
  local stamp=$VENV/.requirements.sha256 want
  want=$(sha256sum requirements-publish.txt | cut -d' ' -f1)
  if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements-publish.txt > "$ROOT/.cache/publish-venv.log" 2>&1 \
      || { tail -n 30 "$ROOT/.cache/publish-venv.log"; die "pip install -r requirements-publish.txt failed"; }
    echo "$want" > "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}

need_apt() {
  local missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v dot >/dev/null 2>&1 || missing+=(graphviz)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "install ${missing[*]} (Debian packages) first"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" fonts-dejavu-core >/dev/null
}

# Discovered, never listed by hand: every module, filter and role of the tree.
plugins() {
  local f
  for f in plugins/modules/*.py; do echo "module $(basename "$f" .py)"; done
  for f in plugins/filter/*.py; do echo "filter $(basename "$f" .py)"; done
  for f in roles/*/; do echo "role $(basename "$f")"; done
}

# A copy of the tracked files laid out as ansible_collections/overlayfs/systemd.
scratch() {
  local dest=$1/ansible_collections/overlayfs/systemd
  rm -rf "$1"
  mkdir -p "$dest"
  git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$dest"
  echo "$dest"
}

importer() {
  local dir=$OUT/import tarball log
  rm -rf "$dir"
  mkdir -p "$dir"
  ansible-galaxy collection build "$ROOT" --output-path "$dir" --force >/dev/null
  tarball=$(ls "$dir"/overlayfs-systemd-*.tar.gz)
  log=$dir/importer.log
  # Galaxy's defaults: ansible-doc and ansible-lint on, ansible-test off (it
  # would need a container and the network).
  (cd "$dir" && env GALAXY_IMPORTER_CONFIG=/dev/null GALAXY_IMPORTER_RUN_ANSIBLE_TEST=False \
    python -m galaxy_importer.main "$tarball") > "$log" 2>&1 || { cat "$log"; die "galaxy-importer failed"; }
  grep -v '^Loading ' "$log"
  grep -q '^Importer processing completed successfully' "$log" || die "no pass line from galaxy-importer"
  if grep -E -i '^(WARNING|ERROR)' "$log"; then die "galaxy-importer warned"; fi
  # Every plugin and role came through with its docs, every role with a README.
  python - "$dir/importer_result.json" <<'PY'
import json, sys
from pathlib import Path
res = json.load(open(sys.argv[1]))
blob = {(c["content_type"], c["content_name"]): c for c in res["docs_blob"]["contents"]}
want = [("module", p.stem) for p in Path("plugins/modules").glob("*.py")]
want += [("filter", p.stem) for p in Path("plugins/filter").glob("*.py")]
want += [("role", p.name) for p in Path("roles").iterdir() if p.is_dir()]
bad = []
for kind, name in want:
    c = blob.get((kind, name))
    if c is None:
        bad.append("%s %s missing" % (kind, name))
    elif kind == "role" and not c.get("readme_html"):
        bad.append("role %s has no README Galaxy shows" % name)
    elif kind != "role" and not (c.get("doc_strings") or {}).get("doc"):
        bad.append("%s %s has no documentation" % (kind, name))
if bad:
    sys.exit("galaxy-importer result: " + "; ".join(bad))
print("galaxy-importer result: %d plugins and roles with docs, every role with a README" % len(want))
PY
}

release_notes() {
  local dest version notes incomplete=0 kind name
  dest=$(scratch "$OUT/changelog")
  version=$(python -c 'import yaml,sys; print(yaml.safe_load(open("galaxy.yml"))["version"])')
  (cd "$dest" && antsibull-changelog lint && antsibull-changelog release --version "$version" --date 2000-01-01 >/dev/null)
  notes=$dest/CHANGELOG.rst
  cp "$notes" "$OUT/CHANGELOG-preview.rst"
  while read -r kind name; do
    if ! grep -q "^- $COLL\.$name - " "$notes"; then
      echo "release notes preview: $kind $name is not listed (version_added: $version missing?)"
      incomplete=1
    fi
  done < <(plugins)
  for section in 'New Modules' 'New Roles' 'Filter' 'Release Summary'; do
    grep -q "^$section\$" "$notes" || { echo "release notes preview: no section $section"; incomplete=1; }
  done
  [ "$incomplete" = 0 ] || die "release notes preview incomplete: $OUT/CHANGELOG-preview.rst"
  echo "release notes preview $version: every module, role and filter listed ($(plugins | wc -l)), $OUT/CHANGELOG-preview.rst"
}

docs() {
  local src=$OUT/docs-src html=$OUT/html start
  start=$(date +%s)
  rm -rf "$src" "$html"
  mkdir -p "$src/collection"
  chmod 755 "$src/collection"
  # Plugin and role pages of this tree (a scratch copy, so nothing else installed is documented).
  scratch "$OUT/docs-collection" >/dev/null
  ANSIBLE_COLLECTIONS_PATH=$OUT/docs-collection antsibull-docs collection --use-current --squash-hierarchy \
    --fail-on-error --no-add-antsibull-docs-version --dest-dir "$src/collection" "$COLL" >/dev/null
  python scripts/docs_site.py "$ROOT" "$src"
  sphinx-build -q -W --keep-going -b html "$src" "$html"
  echo "docs site: $(find "$html" -name '*.html' | wc -l) pages in $html, built in $(( $(date +%s) - start ))s"
  # A page for every plugin, role and guide.
  local page md absent=0 pages
  pages=$(plugins | awk '{print "collection/" $2 "_" $1}')
  for md in docs/*.md; do
    page=$(basename "$md" .md)
    pages+=" ${page/#README/index}"
  done
  for page in $pages; do
    [ -f "$html/$page.html" ] || { echo "docs site: no page $page.html"; absent=1; }
  done
  [ "$absent" = 0 ] || die "docs site incomplete"
  rm -rf "$OUT/screenshots"
  python scripts/docs_browser.py "$html" "$OUT/screenshots" index.html kiosk.html collection/mounts_module.html
}

# quiet LOG CMD...: run CMD with its output in LOG, shown only when it fails.
quiet() {
  local logf=$1
  shift
  "$@" > "$logf" 2>&1 || { cat "$logf"; die "failed: $*"; }
}

# The install paths README.md gives, with a file:// URL standing in for the
# forge: from git (ansible-galaxy and a requirements.yml, as AWX and
# ansible-pull use it) and from the tarball.
install_paths() {
  local dir=$OUT/install ref name
  ref=$(git rev-parse HEAD)
  rm -rf "$dir"
  mkdir -p "$dir"
  # Each into an empty path that is the only one Ansible looks in (a copy
  # installed elsewhere would make ansible-galaxy skip the install).
  ANSIBLE_COLLECTIONS_PATH=$dir/git quiet "$dir/git.log" \
    ansible-galaxy collection install "git+file://$ROOT,$ref" -p "$dir/git"
  cat > "$dir/requirements.yml" <<YML
---
collections:
  - name: git+file://$ROOT
    type: git
    version: $ref
YML
  ANSIBLE_COLLECTIONS_PATH=$dir/requirements quiet "$dir/requirements.log" \
    ansible-galaxy collection install -r "$dir/requirements.yml" -p "$dir/requirements"
  ANSIBLE_COLLECTIONS_PATH=$dir/tarball quiet "$dir/tarball.log" \
    ansible-galaxy collection install "$OUT"/import/overlayfs-systemd-*.tar.gz -p "$dir/tarball"
  for name in git requirements tarball; do
    [ -f "$dir/$name/ansible_collections/overlayfs/systemd/galaxy.yml" ] \
      || [ -f "$dir/$name/ansible_collections/overlayfs/systemd/MANIFEST.json" ] || die "install from $name: nothing installed"
    ANSIBLE_COLLECTIONS_PATH=$dir/$name ansible-doc overlayfs.systemd.mount >/dev/null
    echo "install from $name: ok, ansible-doc overlayfs.systemd.mount loads"
  done
}

# README's warning: with `collections: [overlayfs.systemd]`, a bare `mount:`
# meant for ansible.posix.mount is ours (checked in check mode on the
# controller; the argument check refuses it before anything runs).
pitfall() {
  local out play=$OUT/collections_keyword_pitfall.yml
  cat > "$play" <<'YML'
---
- name: The collections keyword pitfall
  hosts: localhost
  gather_facts: false
  collections:
    - overlayfs.systemd
  tasks:
    - name: An fstab entry, meant for ansible.posix.mount
      mount:
        path: /mnt/data
        src: /dev/vdb1
        fstype: ext4
        state: present
YML
  if out=$(cd "$OUT" && ANSIBLE_COLLECTIONS_PATH=$OUT/install/tarball ansible-playbook -i localhost, -c local --check \
    -e 'ansible_python_interpreter={{ ansible_playbook_python }}' "$play" 2>&1); then
    die "a bare mount: under collections: [overlayfs.systemd] did not resolve to our module"
  fi
  echo "$out" | grep -q 'state is present but all of the following are missing: lowerdir' \
    || { echo "$out"; die "the collections: pitfall changed; update README.md"; }
  echo "collections: pitfall as README says: a bare mount: resolves to overlayfs.systemd.mount"
}

case "${1:-}" in
  check) venv; importer; release_notes; install_paths; pitfall ;;
  docs) need_apt; venv; docs ;;
  *) die "usage: $0 check|docs" ;;
esac
