"""First-run dependency checks, the CPU/GPU choice, and the retrain command."""

from __future__ import annotations

import sys

import pytest
from SlicerCXRLib import dependencies, devices
from SlicerCXRLib.logic import retrain_command

import cxr_core
from tests.conftest import REPO


def test_requirements_derive_from_pyproject():
    """One place for the requirements: the Slicer list is pyproject's dependencies and
    train extra, minus torch (PyTorch extension), Slicer's own SimpleITK and the node's."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    listed = project["dependencies"] + project["optional-dependencies"]["train"]
    left_out = {"torch", "simpleitk", "pynetdicom", "prometheus-client"}
    expected = [r for r in listed if r.split("=")[0].split(">")[0].lower() not in left_out]
    assert list(dependencies.REQUIREMENTS) == expected
    torch_pin = next(r for r in listed if r.startswith("torch"))
    assert ">=" + torch_pin.split("==")[1] == dependencies.TORCH_REQUIREMENT
    assert dependencies.find_pyproject() == REPO / "pyproject.toml"


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


def _devices_of(engine: cxr_core.Engine) -> dict[str, set[str]]:
    return {stage: {p.device.type for n in networks for p in n.parameters()}
            for stage, networks in engine.networks().items()}


def test_device_choice_places_every_stage_network(engine):
    assert devices.available_devices()[0] == "cpu"
    devices.place_engine(engine, "cpu")
    stages = ("gate", "lungs", "findings", "pneumothorax")
    assert _devices_of(engine) == {s: {"cpu"} for s in stages}
    if "cuda" not in devices.available_devices():
        with pytest.raises(ValueError, match="device: 'cuda' is not available"):
            devices.place_engine(engine, "cuda")
    # the engine moves every stage's network, not only the lungs' (a GPU choice once left
    # pneumothorax on the CPU); "meta" stands in for a GPU this machine may not have
    moved = cxr_core.Engine().to("meta")
    assert _devices_of(moved) == {s: {"meta"} for s in stages}


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
    assert args.datalist == [tmp_path / "datalist.json"] and args.datalist_only
    assert args.init_from == "lung_seg"
