#!/usr/bin/env bash
# Install SlicerCXR into ./.venv (and the DICOM peers the tests use).
#   scripts/install.sh          engine + node + CLI
#   scripts/install.sh --test   also the test tools (pytest, ruff, slicer-core) and apt peers
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=false
[[ "${1:-}" == "--test" ]] && with_test=true

if $with_test; then
  # the DICOM peers and the readers the SEG is checked with (tests/test_seg_readers.py):
  # each tool's package is installed only when the tool is missing
  declare -A package_of=(
    [storescu]=dcmtk [dsrdump]=dcmtk [dciodvfy]=dicom3tools [Orthanc]=orthanc
    [gdcminfo]=libgdcm-tools [DicomSRValidator]=pixelmed-apps
    [javac]=default-jdk-headless  # PixelMed runs as a single-file Java program
    [node]=nodejs [npm]=npm
    # the distributed node's tests (tests/node/test_distributed.py) start their own
    [rabbitmq-server]=rabbitmq-server
    # the review page's browser test (tests/node/test_web_browser.py)
    [chromium]=chromium [chromedriver]=chromium-driver
  )
  missing=()
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
  for tool in "${!package_of[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("${package_of[$tool]}")
  done
  # Orthanc's DICOMweb plugin pushes to the node's STOW-RS (tests/node/test_web.py)
  [[ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]] || missing+=(orthanc-dicomweb)
  if ((${#missing[@]})); then
    packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
    echo "installing test peers: $packages"
    if [[ $(id -u) -eq 0 ]]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $packages >/dev/null
  fi
  # OHIF's SEG loader and dcmjs, at the versions in tests/js/package-lock.json
  npm ci --prefix tests/js --ignore-scripts --no-audit --no-fund --loglevel=error
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
