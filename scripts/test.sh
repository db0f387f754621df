#!/usr/bin/env bash
# Quick start 2: set up, start a local Kafka broker, run the whole test suite against it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/choreo kafka start --no-topics
.venv/bin/python -m pytest "$@"
