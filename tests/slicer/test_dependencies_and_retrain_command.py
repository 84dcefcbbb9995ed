"""First-run dependency checks, the CPU/GPU choice, and the retrain command."""

from __future__ import annotations

import sys

import pytest
from SlicerCXRLib import dependencies, devices
from SlicerCXRLib.logic import retrain_command


def test_installed_requirements_are_not_reported_missing():
    assert dependencies.missing_packages() == []  # this venv has everything
    assert not dependencies.torch_missing()


def test_absent_and_too_old_packages_are_reported():
    missing = dependencies.missing_packages(
        ["slicercxr-no-such-package>=1", "numpy<1.0", "pydicom>=3.0"])
    assert [m.requirement for m in missing] == ["slicercxr-no-such-package>=1", "numpy<1.0"]
    assert missing[0].installed_version is None
    assert missing[1].installed_version is not None  # installed, but too new
    assert "not installed" in missing[0].describe()


def test_unparsable_requirement_is_refused():
    with pytest.raises(ValueError, match="requirements: 'numpy >>> 2'"):
        dependencies.missing_packages(["numpy >>> 2"])


def test_install_reports_progress_in_order():
    missing = dependencies.missing_packages(["slicercxr-no-such-a>=1", "slicercxr-no-such-b"])
    installed, steps = [], []
    dependencies.install_packages(missing, installed.append,
                                  lambda done, total, name: steps.append((done, total, name)))
    assert installed == ["slicercxr-no-such-a>=1", "slicercxr-no-such-b"]
    assert steps == [(0, 2, "slicercxr-no-such-a>=1"), (1, 2, "slicercxr-no-such-b"),
                     (2, 2, "")]


def test_cpu_choice_forces_the_cpu_torch_build():
    assert dependencies.torch_backend(use_gpu=False) == "cpu"
    assert dependencies.torch_backend(use_gpu=True) is None  # PyTorchUtils picks the CUDA build


def test_device_choice(engine):
    assert devices.available_devices()[0] == "cpu"
    devices.place_engine(engine, "cpu")
    assert next(engine.lung.network.parameters()).device.type == "cpu"
    if "cuda" not in devices.available_devices():
        with pytest.raises(ValueError, match="device: 'cuda' is not available"):
            devices.place_engine(engine, "cuda")


def test_retrain_command_needs_an_exported_store(tmp_path):
    with pytest.raises(ValueError, match="store_root: no datalist.json"):
        retrain_command(tmp_path, tmp_path / "out")
    (tmp_path / "datalist.json").write_text('{"training": []}')
    with pytest.raises(ValueError, match="epochs: 0"):
        retrain_command(tmp_path, tmp_path / "out", epochs=0)


def test_retrain_command_is_a_valid_cxr_invocation(tmp_path):
    (tmp_path / "datalist.json").write_text('{"training": []}')
    command = retrain_command(tmp_path, tmp_path / "out", python=sys.executable)
    assert "--datalist-only" in command
    from cxr_core.cli import build_parser

    args = build_parser().parse_args(command[3:])  # after "<python> -m cxr_core.cli"
    assert args.datalist == tmp_path / "datalist.json" and args.datalist_only
    assert args.init_from == "lung_seg"
