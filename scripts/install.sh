#!/usr/bin/env bash
# Install SlicerCXR into ./.venv (and the DICOM peers the tests use).
#   scripts/install.sh          engine + node + CLI
#   scripts/install.sh --test   also the test tools (pytest, ruff, slicer-core) and apt peers
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=false
[[ "${1:-}" == "--test" ]] && with_test=true

if $with_test; then
  missing=()
  for tool in storescu dciodvfy dsrdump Orthanc; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    echo "installing DICOM peers (missing: ${missing[*]})"
    if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dcmtk dicom3tools orthanc >/dev/null
  fi
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# torch first and pinned: the CPU wheel of 2.13.0 is what this project is built and
# tested with; any other version resolves to GBs of CUDA packages.
.venv/bin/pip install -q "torch==2.13.0"
if $with_test; then
  .venv/bin/pip install -q -e ".[test]"
else
  .venv/bin/pip install -q -e .
fi
echo "installed into $(pwd)/.venv"
