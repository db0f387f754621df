#!/usr/bin/env bash
# Idempotent setup: a virtualenv in .venv with Choreo and its dev tools, then the Kafka jars.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
need() { command -v "$1" >/dev/null 2>&1 || { echo "error: '$1' not found. $2" >&2; exit 1; }; }
need "$PYTHON" "Install Python 3.11+."
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "error: Python 3.11+ is required (found $("$PYTHON" -V))." >&2; exit 1; }
need java "Install a Java 17+ runtime (Debian/Ubuntu: apt-get install openjdk-17-jre-headless)."
need mvn "Install Apache Maven (Debian/Ubuntu: apt-get install maven)."

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.choreo-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "==> installing Python dependencies (first run takes a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev,bench,graph]"
  touch "$stamp"
fi
echo "==> resolving the Kafka broker jars with Maven (cached after the first run)"
.venv/bin/python -c 'from choreography.broker import ensure_jars; print("    jars in", ensure_jars())'
