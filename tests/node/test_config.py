"""Configuration: the example loads, bad values fail naming their key, flags work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dicom_node.cli import _parser, build_config
from dicom_node.config import (
    ConfigError,
    RetryPolicy,
    config_from_mapping,
    load_config,
    parse_destination,
)
from dicom_node.spool import UnsafeUID, checked_uid

EXAMPLE = Path(__file__).resolve().parents[2] / "resources" / "node.example.toml"
MINIMAL = {"security": {"allowed_ae_titles": ["PACS"]}}


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.ae_title == "CXRNODE" and config.port == 11112
    assert config.allowed_ae_titles == ("PACS",)
    assert [(d.name, d.in_doubt) for d in config.destinations] == [("pacs", "resend")]
    assert config.retry.max_attempts == 5 and config.filters.other_instances == "ignore"


@pytest.mark.parametrize(("data", "key"), [
    ({"node": {"port": 70000}}, "[node].port"),
    ({"node": {"port": "11112"}}, "[node].port"),
    ({"node": {"ae_title": "A" * 17}}, "[node].ae_title"),
    ({"node": {"prot": 1}}, "[node].prot"),
    ({"jobs": {"workers": 0}}, "[jobs].workers"),
    ({"jobs": {"quiet_period_s": -1}}, "[jobs].quiet_period_s"),
    ({"retry": {"max_attempts": 0}}, "[retry].max_attempts"),
    ({"filters": {"sop_classes": ["CT-ish"]}}, "[filters].sop_classes"),
    ({"filters": {"other_instances": "drop"}}, "[filters].other_instances"),
    ({"security": {"allowed_ips": ["not-an-ip"]}}, "[security].allowed_ips"),
    ({"destinations": [{"ae_title": "PACS", "port": 104}]}, "destinations[0].host"),
    ({"destinations": [{"ae_title": "PACS", "host": "h", "port": 0}]}, "destinations[0].port"),
    ({"destinations": [{"ae_title": "PACS", "host": "h", "port": 1, "in_doubt": "ask"}]},
     "destinations[0].in_doubt"),
    ({"tls": {"certificate": "/nonexistent.crt", "private_key": "/nonexistent.key"}},
     "[tls].certificate"),
    ({"destinations": [{"ae_title": "P", "host": "h", "port": 1, "tls": True}]},
     "destinations[0].tls"),
    ({"surprise": {}}, "(top level).surprise"),
])
def test_bad_values_name_their_key(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(").replace(")", r"\)")):
        config_from_mapping({**MINIMAL, **data})


def test_allowed_ae_titles_are_required() -> None:
    with pytest.raises(ConfigError, match=r"\[security\].allowed_ae_titles"):
        config_from_mapping({})


def test_flags_alone_make_a_config(tmp_path: Path) -> None:
    args = _parser().parse_args([
        "serve", "--ae-title", "CXRNODE", "--port", "11112", "--allow-ae", "PACS",
        "--destination", "PACS@127.0.0.1:11113", "--storage", str(tmp_path),
        "--quiet-period", "2"])
    config = build_config(args)
    assert config.quiet_period_s == 2.0 and config.storage == tmp_path
    assert config.destinations[0].ae_title == "PACS" and config.destinations[0].port == 11113


def test_flags_override_the_file() -> None:
    args = _parser().parse_args(["serve", "--config", str(EXAMPLE), "--port", "4242"])
    config = build_config(args)
    assert config.port == 4242 and config.allowed_ae_titles == ("PACS",)


def test_bad_flag_fails_at_start_naming_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dicom_node", "serve", "--allow-ae", "PACS", "--port", "0",
         "--storage", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "--port" in result.stderr and "1..65535" in result.stderr


def test_bad_file_fails_at_start_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[security]\nallowed_ae_titles = ["PACS"]\n[jobs]\nworkers = "two"\n')
    result = subprocess.run([sys.executable, "-m", "dicom_node", "serve", "--config",
                             str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "[jobs].workers" in result.stderr


def test_destination_flag_syntax() -> None:
    assert parse_destination("archive=ARCH@10.0.0.5:104").name == "archive"
    with pytest.raises(ConfigError, match="--destination"):
        parse_destination("PACS:104")


def test_retry_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(initial_backoff_s=2, multiplier=3, max_backoff_s=20)
    assert [policy.delay_after(n) for n in (1, 2, 3, 4)] == [2, 6, 18, 20]


@pytest.mark.parametrize("value", [
    "../../etc/passwd", "1.2.3/4", "1.2.3\\4", "1.2..3/..", "1." + "2" * 70, "", None,
    "1.2.3 4", "1.2.3\x00/x", "C:\\dicom", "1.2.3.", ".1.2",
])
def test_unsafe_uids_never_become_file_names(value: object) -> None:
    with pytest.raises(UnsafeUID):
        checked_uid(value, "SOPInstanceUID")


def test_valid_uids_pass() -> None:
    assert checked_uid("1.2.840.10008.5.1.4.1.1.1 ", "x") == "1.2.840.10008.5.1.4.1.1.1"
    assert checked_uid("1.2.03.4", "x") == "1.2.03.4"  # leading zeros: seen in the wild


def test_model_pins_reach_the_engine() -> None:
    from dicom_node.node import default_engine_factory

    config = config_from_mapping(MINIMAL | {"node": {"model_pins": ["lung_seg@1.0.0"]}})
    assert config.model_pins == (("lung_seg", "1.0.0"),)
    engine = default_engine_factory(config)()
    assert engine.pins == {"lung_seg": "1.0.0"}
    assert "lung_seg@1.0.0" in [card.identifier for card in engine.cards]
    with pytest.raises(ConfigError, match=r"\[node\]\.model_pins"):
        config_from_mapping(MINIMAL | {"node": {"model_pins": ["lung_seg"]}})
    missing = config_from_mapping(MINIMAL | {"node": {"model_pins": ["lung_seg@0.0.1"]}})
    with pytest.raises(FileNotFoundError, match="lung_seg@0.0.1 is not available"):
        default_engine_factory(missing)()
