#!/usr/bin/env bash
# Regenerate constraints.txt from a fresh resolve of pyproject.toml's dependencies and extras:
# the exact versions CI installs. Run it when you change a dependency, then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --upgrade pip
"$tmp/venv/bin/python" -m pip install --quiet ".[dev,bench,graph]"
{
  echo "# The exact versions CI tested (pip install -c constraints.txt). Regenerate: scripts/lock.sh"
  "$tmp/venv/bin/python" -m pip freeze | grep -v '^choreo'
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pins"
