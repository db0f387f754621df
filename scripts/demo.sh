#!/usr/bin/env bash
# Quick start 1: set up, start a local Kafka broker, place a few thousand orders, summarise from ClickHouse.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/choreo kafka start
.venv/bin/choreo demo "$@"
