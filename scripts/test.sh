#!/usr/bin/env bash
# Install everything the tests need, then run them all (this is what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --test
.venv/bin/ruff check .
.venv/bin/mypy   # files and strictness in pyproject.toml: strict on cxr_core
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
