#!/usr/bin/env bash
# Builds the collection's documentation as a static HTML site, offline: every plugin and filter (from their
# DOCUMENTATION), every role with each entry point of its meta/argument_specs.yml, the environment variables
# they read, and the guides of docs/ (Markdown, through myst-parser). antsibull-docs writes the RST from ansible-doc's output, Sphinx the HTML; warnings fail the build.
# References to the Ansible docsite and to other collections become links to docs.ansible.com
# (scripts/docs_sphinx_ext.py); nothing is downloaded.
#   bash scripts/docs.sh [DEST]     default DEST: build/docs; open DEST/html/index.html in a browser (file://)
#   DOCS_COLLECTIONS_PATH=DIR       document the enclave.prefect installed under DIR (e.g. from the release tarball)
#                                   instead of the checkout (linked into .venv/collections by scripts/setup.sh)
# Needs the toolchain of scripts/setup.sh (.venv).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
dest=$(realpath -m "${1:-build/docs}")
bin=$top/.venv/bin
collections=$(realpath -m "${DOCS_COLLECTIONS_PATH:-$top/.venv/collections}")
if [ ! -x "$bin/antsibull-docs" ] || [ ! -d "$collections/ansible_collections/enclave/prefect/roles" ]; then
  echo "[docs] no toolchain, or no enclave.prefect under $collections: run bash scripts/setup.sh" >&2
  exit 1
fi
quiet() {  # run "$@", showing its output only when it fails
  local out
  if ! out=$("$@" 2>&1); then printf '%s\n' "$out" >&2; echo "[docs] failed: $1 $2" >&2; exit 1; fi
}
export PATH="$bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$collections" ANSIBLE_NOCOLOR=1
work="$dest.work"
rm -rf "$work" && mkdir -p "$work"
version=$("$bin/python" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["version"])' galaxy.yml)
quiet antsibull-docs sphinx-init --use-current --squash-hierarchy --fail-on-error --no-add-antsibull-docs-version \
  --project enclave.prefect --title "enclave.prefect $version" --html-short-title enclave.prefect \
  --copyright "enclave.prefect maintainers" --dest-dir "$work" enclave.prefect
# Offline: no intersphinx (it downloads inventories); the extension resolves what it would have.
cat >> "$work/conf.py" <<CONF

# scripts/docs.sh: built offline.
import sys
sys.path.insert(0, '$top/scripts')
extensions = [name for name in extensions if name != 'sphinx.ext.intersphinx'] + ['docs_sphinx_ext', 'myst_parser']
# The Markdown guides of docs/ (copied into guides/ below).
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
myst_heading_anchors = 3
CONF
mkdir -p "$work/rst" && chmod og-w "$work/rst"  # antsibull-docs wants that directory writable by itself only
quiet antsibull-docs --config-file "$work/antsibull-docs.cfg" collection --cleanup everything --fail-on-error --use-current \
  --squash-hierarchy --dest-dir "$work/rst" enclave.prefect
# The guides of docs/, Markdown as they are in the repository, after the plugin and role pages.
mkdir -p "$work/rst/guides"
guides=""
for guide in docs/*.md; do
  # A role's README link becomes its page here; mermaid diagrams show as their text (no renderer offline).
  sed -E -e 's#\]\(\.\./roles/([a-z_]+)/README\.md\)#](../\1_role.rst)#g' -e 's/^```mermaid$/```text/' \
    "$guide" > "$work/rst/guides/$(basename "$guide")"
  guides="$guides   guides/$(basename "$guide" .md)"$'\n'
done
printf '\n.. toctree::\n   :maxdepth: 1\n   :caption: Guides\n\n%s' "$guides" >> "$work/rst/index.rst"
sphinx-build -q -b html -c "$work" -W --keep-going "$work/rst" "$work/html"
rm -rf "$dest" && mkdir -p "$dest" && mv "$work/html" "$dest/html" && rm -rf "$work"
echo "[docs] $dest/html/index.html"
