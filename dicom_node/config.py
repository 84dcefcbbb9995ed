"""Node configuration: a TOML file and/or command-line flags, validated up front.

Every problem raises :class:`ConfigError` whose message names the offending key
(``[node].port``, ``destinations[1].host`` ...), so a bad config fails at start.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import uid as uids
from pydicom.uid import UID

from cxr_core import CHEST_BODY_PARTS

if TYPE_CHECKING:
    from dicom_node.store import Store

# A DICOM AE title: 1-16 characters of the default repertoire, no backslash or control.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
SOP_CLASS_ALIASES: dict[str, UID] = {
    "CR": uids.ComputedRadiographyImageStorage,
    "DX": uids.DigitalXRayImageStorageForPresentation,
    "DX-PROCESSING": uids.DigitalXRayImageStorageForProcessing,
    "SC": uids.SecondaryCaptureImageStorage,
}
DEFAULT_BODY_PARTS: tuple[str, ...] = ("", *sorted(CHEST_BODY_PARTS))
"""The engine's chest list, plus "" (not given: the engine analyses those too)."""
OTHER_INSTANCE_POLICIES = ("ignore", "refuse")
REUSED_UID_POLICIES = ("refuse", "version")
"""What a SOP Instance UID already accepted with other content, or in another study,
becomes: refused (C-STORE 0xC0D1) or stored as a new version with its own analysis."""
IN_DOUBT_POLICIES = ("resend", "c-find")
"""What the node does with a delivery whose last C-STORE got no status (it died during
it, or the association was lost): send it again, or first ask the destination with a
C-FIND at IMAGE level whether it holds that SOP Instance UID (only then resend)."""
ROLES = ("all", "ingest", "worker")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the key."""


@dataclass(frozen=True, kw_only=True)
class Destination:
    """A peer the results are sent to: by C-STORE, or by STOW-RS when ``stow_url`` is set
    (then ``authorization`` is sent as the HTTP Authorization header)."""

    name: str
    ae_title: str = ""
    host: str = ""
    port: int = 0
    stow_url: str | None = None
    authorization: str | None = None
    tls: bool = False
    timeout_s: float = 30.0
    """Connection, association and DIMSE timeout of each attempt (its own sender thread,
    so a slow or hung destination delays only its own deliveries)."""
    in_doubt: str = "resend"
    """An unconfirmed C-STORE: ``resend`` (the DIMSE-safe default: the same file, same
    SOP Instance UID) or ``c-find`` (query the destination first; resend only when it
    does not hold the instance or cannot answer)."""


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Bounded exponential backoff for deliveries.

    Attempt ``n`` (1-based) that fails waits ``initial_backoff_s * multiplier**(n-1)``
    seconds (at most ``max_backoff_s``); after ``max_attempts`` failures the delivery is
    dead-lettered until an operator runs ``cxr-node retry``.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 5.0
    max_backoff_s: float = 300.0
    multiplier: float = 2.0

    def delay_after(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts."""
        return min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempts - 1))


@dataclass(frozen=True, kw_only=True)
class Filters:
    """Which received instances are analysed; empty tuples mean "any".

    ``other_instances`` decides what happens to SOP classes outside ``sop_classes``:
    ``"ignore"`` accepts and stores them without analysis (a PACS routing a whole study
    gets no errors), ``"refuse"`` does not offer them at association.
    """

    sop_classes: tuple[UID, ...] = tuple(SOP_CLASS_ALIASES.values())
    modalities: tuple[str, ...] = ("CR", "DX")
    body_parts: tuple[str, ...] = DEFAULT_BODY_PARTS
    views: tuple[str, ...] = ()
    other_instances: str = "ignore"


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    """TLS for the SCP (and for destinations marked ``tls = true``, which must present a
    certificate signed by ``ca_certificates``; the node presents its own)."""

    certificate: Path
    private_key: Path
    ca_certificates: Path | None = None
    require_client_certificate: bool = False


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one input or one peer may cost the node (``[limits]``).

    ``max_dataset_mb`` bounds a received dataset as streamed to disk (it is never held in
    memory whole); ``max_decoded_mb`` bounds an image's declared decoded pixel data (Rows
    x Columns x samples x bits x frames; compressed frames must declare the same size in their own
    SOF/SIZ); ``max_inflated_mb`` bounds a deflated dataset once inflated. Before an
    association is accepted, every PDU must arrive within ``pdu_timeout_s`` of its first
    byte, an A-ASSOCIATE-RQ may hold at most ``max_associate_request_kb``, a TLS handshake
    must finish within ``tls_handshake_timeout_s`` and one peer address may hold at most
    ``max_connections_per_address`` connections.
    """

    max_decoded_mb: float = 256.0
    max_dataset_mb: float = 512.0
    max_inflated_mb: float = 256.0
    pdu_timeout_s: float = 10.0
    tls_handshake_timeout_s: float = 10.0
    max_connections_per_address: int = 4
    max_associate_request_kb: float = 64.0


@dataclass(frozen=True, kw_only=True)
class WebConfig:
    """The web face on the HTTP port (``[http]`` besides address and port).

    ``review_page`` also keeps the display layers the page shows for each analysed
    instance; ``tokens_file`` holds the hashes of the API tokens (default: in the storage
    folder); ``max_upload_mb`` bounds one STOW-RS or analysis request;
    ``analysis_retention_hours`` is how long ``POST /api/analyze`` results are kept.
    """

    review_page: bool = True
    tls: bool = False
    """Serve HTTPS with the node's ``[tls]`` certificate (TLS 1.2 or later)."""
    stow: bool = True
    analysis_api: bool = True
    tokens_file: Path | None = None
    max_upload_mb: float = 256.0
    analysis_retention_hours: float = 24.0


@dataclass(frozen=True, kw_only=True)
class NodeConfig:
    """Everything ``cxr-node serve`` needs; see ``resources/node.example.toml``."""

    ae_title: str = "CXRNODE"
    role: str = "all"
    """``all`` (one process: SCP, scheduler, workers, senders), ``ingest`` (SCP, spool,
    scheduler: jobs go to the broker) or ``worker`` (engine and delivery: jobs come from
    the broker)."""
    broker_url: str | None = None
    """``amqp://...`` (RabbitMQ, via Dramatiq); none: the in-process queue."""
    store_url: str | None = None
    """``postgresql://...``; none: SQLite in the storage folder."""
    bind_address: str = "0.0.0.0"
    port: int = 11112
    allowed_ae_titles: tuple[str, ...] = ()
    allowed_ips: tuple[str, ...] = ()
    destinations: tuple[Destination, ...] = ()
    storage: Path = Path("cxr-node-data")
    quiet_period_s: float = 10.0
    workers: int = 1
    torch_threads: int = 0
    """Torch threads of each worker's analysis; 0: the machine's cores shared among the
    workers (:meth:`analysis_threads`)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    filters: Filters = field(default_factory=Filters)
    overlay: bool = False
    heatmap_seg: bool = False
    reused_uids: str = "refuse"
    min_free_disk_mb: float = 500.0
    http_address: str = "127.0.0.1"
    http_port: int = 8080
    web: WebConfig = field(default_factory=WebConfig)
    models_dir: Path | None = None
    model_pins: tuple[tuple[str, str], ...] = ()
    """``(model name, version)`` pairs the engine runs instead of the active versions."""
    log_level: str = "INFO"
    tls: TlsConfig | None = None
    limits: Limits = field(default_factory=Limits)

    @property
    def analysis_threads(self) -> int:
        """Torch threads per worker: ``torch_threads``, or the cores this process may
        use shared among the workers (the writing thread beside each analysis takes
        its turn on them)."""
        if self.torch_threads:
            return self.torch_threads
        return max(1, len(os.sched_getaffinity(0)) // self.workers)

    @property
    def database(self) -> Path:
        return self.storage / "node.sqlite"

    def open_store(self) -> Store:
        """The job store: PostgreSQL when ``[jobs].store`` is set, else SQLite."""
        from dicom_node.store import Store

        if self.store_url is not None:
            return Store(url=self.store_url)
        return Store(path=self.database)

    @property
    def tokens_file(self) -> Path:
        return self.web.tokens_file or self.storage / "web-tokens.json"


# --- TOML layout: section -> key -> (field name, validator) -------------------------


def _ae_title(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _AE_TITLE.match(value) or not value.strip():
        raise ConfigError(f"{key}: must be an AE title of 1-16 printable characters "
                          f"without backslash, got {value!r}")
    return value.strip()


def _port(key: str, value: Any, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        raise ConfigError(f"{key}: must be an integer {low}..65535, got {value!r}")
    return value


def _positive(key: str, value: Any, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}: must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _count(key: str, value: Any, *, low: int = 1, high: int = 64) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{key}: must be an integer {low}..{high}, got {value!r}")
    return value


def _host(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ConfigError(f"{key}: must be a host name or IP address, got {value!r}")
    return value


def _strings(key: str, value: Any, *, upper: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: must be a list of strings, got {value!r}")
    return tuple(v.strip().upper() if upper else v.strip() for v in value)


def _ips(key: str, value: Any) -> tuple[str, ...]:
    items = _strings(key, value)
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as error:
            raise ConfigError(f"{key}: {item!r} is not an IP address or network") from error
    return items


def _sop_classes(key: str, value: Any) -> tuple[UID, ...]:
    classes = []
    for item in _strings(key, value):
        uid = SOP_CLASS_ALIASES.get(item.upper(), UID(item))
        if not uid.is_valid or uid.name == uid:
            raise ConfigError(f"{key}: {item!r} is neither CR, DX, DX-PROCESSING, SC "
                              "nor a known storage SOP class UID")
        classes.append(uid)
    return tuple(classes)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false, got {value!r}")
    return value


def _url(key: str, value: Any, schemes: tuple[str, ...]) -> str:
    if not isinstance(value, str) or not value.startswith(schemes) or any(
            c.isspace() for c in value):
        raise ConfigError(f"{key}: a URL starting {' or '.join(schemes)}")
    return value


def _path(key: str, value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: must be a path, got {value!r}")
    return Path(value).expanduser()


def _pin(key: str, value: str) -> tuple[str, str]:
    name, _, version = value.partition("@")
    if not name or not version or "/" in value:
        raise ConfigError(f"{key}: each pin must be name@version, got {value!r}")
    return name, version


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(choices)}, got {value!r}")
        return str(value)
    return check


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_SECTIONS: dict[str, dict[str, tuple[str, Any]]] = {
    "node": {
        "ae_title": ("ae_title", _ae_title),
        "bind_address": ("bind_address", _host),
        "port": ("port", _port),
        "storage": ("storage", _path),
        "models_dir": ("models_dir", _path),
        "model_pins": ("model_pins", lambda k, v: tuple(_pin(k, s) for s in _strings(k, v))),
        "log_level": ("log_level", _choice(_LOG_LEVELS)),
        "overlay": ("overlay", _bool),
        "heatmap_seg": ("heatmap_seg", _bool),
        "reused_uids": ("reused_uids", _choice(REUSED_UID_POLICIES)),
        "role": ("role", _choice(ROLES)),
    },
    "security": {
        "allowed_ae_titles": ("allowed_ae_titles",
                              lambda k, v: tuple(_ae_title(k, t) for t in _strings(k, v))),
        "allowed_ips": ("allowed_ips", _ips),
        "min_free_disk_mb": ("min_free_disk_mb", lambda k, v: _positive(k, v, allow_zero=True)),
    },
    "jobs": {
        "quiet_period_s": ("quiet_period_s", lambda k, v: _positive(k, v, allow_zero=True)),
        "workers": ("workers", _count),
        "torch_threads": ("torch_threads", lambda k, v: _count(k, v, low=0)),
        "broker": ("broker_url", lambda k, v: _url(k, v, ("amqp://", "amqps://"))),
        "store": ("store_url", lambda k, v: _url(k, v, ("postgresql://", "postgres://"))),
    },
    "http": {
        "address": ("http_address", _host),
        "port": ("http_port", lambda k, v: _port(k, v, allow_zero=True)),
    },
}
_RETRY_KEYS: dict[str, Any] = {
    "max_attempts": lambda k, v: _count(k, v, high=1000),
    "initial_backoff_s": _positive,
    "max_backoff_s": _positive,
    "multiplier": _positive,
}
_FILTER_KEYS: dict[str, Any] = {
    "sop_classes": _sop_classes,
    "modalities": lambda k, v: _strings(k, v, upper=True),
    "body_parts": lambda k, v: _strings(k, v, upper=True),
    "views": lambda k, v: _strings(k, v, upper=True),
    "other_instances": _choice(OTHER_INSTANCE_POLICIES),
}
_LIMIT_KEYS: dict[str, Any] = {
    "max_decoded_mb": _positive,
    "max_dataset_mb": _positive,
    "max_inflated_mb": _positive,
    "pdu_timeout_s": _positive,
    "tls_handshake_timeout_s": _positive,
    "max_connections_per_address": lambda k, v: _count(k, v, high=1024),
    "max_associate_request_kb": _positive,
}
_TLS_KEYS: dict[str, Any] = {
    "certificate": _path,
    "private_key": _path,
    "ca_certificates": _path,
    "require_client_certificate": _bool,
}
_WEB_KEYS: dict[str, Any] = {
    "review_page": _bool,
    "tls": _bool,
    "stow": _bool,
    "analysis_api": _bool,
    "tokens_file": _path,
    "max_upload_mb": _positive,
    "analysis_retention_hours": _positive,
}
_DESTINATION_KEYS = ("name", "ae_title", "host", "port", "tls", "timeout_s", "in_doubt",
                     "stow_url", "authorization")


def _table(key: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: must be a table, got {value!r}")
    return value


def _check_known(prefix: str, table: Mapping[str, Any], known: Any) -> None:
    for name in table:
        if name not in known:
            raise ConfigError(f"{prefix}.{name}: unknown key (known: {', '.join(known)})")


def _parse_keys(prefix: str, table: Mapping[str, Any], validators: Mapping[str, Any]
                ) -> dict[str, Any]:
    _check_known(prefix, table, validators)
    return {name: validators[name](f"{prefix}.{name}", value) for name, value in table.items()}


def _destination(index: int, value: Any) -> Destination:
    key = f"destinations[{index}]"
    table = _table(key, value)
    _check_known(key, table, _DESTINATION_KEYS)
    if "stow_url" in table:
        return _dicomweb_destination(key, table)
    for name in ("ae_title", "host", "port"):
        if name not in table:
            raise ConfigError(f"{key}.{name}: missing")
    ae_title = _ae_title(f"{key}.ae_title", table["ae_title"])
    name = table.get("name", ae_title)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise ConfigError(f"{key}.name: must be 1-64 letters, digits, '_', '.', '-', "
                          f"got {name!r}")
    return Destination(name=name, ae_title=ae_title, host=_host(f"{key}.host", table["host"]),
                       port=_port(f"{key}.port", table["port"]),
                       tls=_bool(f"{key}.tls", table.get("tls", False)),
                       timeout_s=_positive(f"{key}.timeout_s", table.get("timeout_s", 30.0)),
                       in_doubt=_choice(IN_DOUBT_POLICIES)(f"{key}.in_doubt",
                                                           table.get("in_doubt", "resend")))


def _dicomweb_destination(key: str, table: Mapping[str, Any]) -> Destination:
    url = table["stow_url"]
    if not isinstance(url, str) or not re.fullmatch(r"https?://[^\s]+", url):
        raise ConfigError(f"{key}.stow_url: an http(s) URL, got {url!r}")
    name = table.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise ConfigError(f"{key}.name: 1-64 letters, digits, '_', '.', '-' "
                          "(required for a DICOMweb destination)")
    authorization = table.get("authorization")
    if authorization is not None and not isinstance(authorization, str):
        raise ConfigError(f"{key}.authorization: a string such as \"Bearer ...\"")
    return Destination(name=name, stow_url=url, authorization=authorization,
                       timeout_s=_positive(f"{key}.timeout_s", table.get("timeout_s", 30.0)))


def config_from_mapping(data: Mapping[str, Any], *, base: NodeConfig | None = None
                        ) -> NodeConfig:
    """Build a :class:`NodeConfig` from parsed TOML (unknown keys are errors)."""
    known = [*_SECTIONS, "retry", "filters", "limits", "tls", "web", "destinations"]
    _check_known("(top level)", data, known)
    config = base or NodeConfig()
    values: dict[str, Any] = {}
    for section, keys in _SECTIONS.items():
        table = _table(f"[{section}]", data.get(section, {}))
        _check_known(f"[{section}]", table, keys)
        for name, value in table.items():
            field_name, validate = keys[name]
            values[field_name] = validate(f"[{section}].{name}", value)
    if "retry" in data:
        values["retry"] = replace(config.retry, **_parse_keys(
            "[retry]", _table("[retry]", data["retry"]), _RETRY_KEYS))
    if "filters" in data:
        values["filters"] = replace(config.filters, **_parse_keys(
            "[filters]", _table("[filters]", data["filters"]), _FILTER_KEYS))
    if "limits" in data:
        values["limits"] = replace(config.limits, **_parse_keys(
            "[limits]", _table("[limits]", data["limits"]), _LIMIT_KEYS))
    if "web" in data:
        values["web"] = replace(config.web, **_parse_keys(
            "[web]", _table("[web]", data["web"]), _WEB_KEYS))
    if "tls" in data:
        values["tls"] = _tls(_table("[tls]", data["tls"]))
    if "destinations" in data:
        if not isinstance(data["destinations"], list):
            raise ConfigError("destinations: must be an array of tables ([[destinations]])")
        values["destinations"] = tuple(
            _destination(i, d) for i, d in enumerate(data["destinations"]))
    return validate_config(replace(config, **values))


def _tls(table: Mapping[str, Any]) -> TlsConfig:
    values = _parse_keys("[tls]", table, _TLS_KEYS)
    for name in ("certificate", "private_key"):
        if name not in values:
            raise ConfigError(f"[tls].{name}: missing")
    return TlsConfig(**values)


def validate_config(config: NodeConfig) -> NodeConfig:
    """Checks that span several keys; returns ``config`` unchanged when it is sound."""
    names = [d.name for d in config.destinations]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"destinations: duplicate name(s) {', '.join(duplicates)}; "
                          "give each a distinct name")
    if not config.allowed_ae_titles:
        raise ConfigError("[security].allowed_ae_titles: list at least one calling AE title "
                          "(the node only talks to peers it is told to trust)")
    if config.role != "all" and config.broker_url is None:
        raise ConfigError(f"[node].role: {config.role!r} needs [jobs].broker (the roles "
                          "meet through the broker and the store)")
    if config.retry.max_backoff_s < config.retry.initial_backoff_s:
        raise ConfigError("[retry].max_backoff_s: must be >= [retry].initial_backoff_s")
    for index, destination in enumerate(config.destinations):
        if destination.tls and (config.tls is None or config.tls.ca_certificates is None):
            raise ConfigError(f"destinations[{index}].tls: needs [tls] with ca_certificates "
                              "(to verify the destination) and the node's certificate")
    if config.web.tls and config.tls is None:
        raise ConfigError("[web].tls: needs [tls] with the node's certificate and key")
    if config.tls is not None:
        for name in ("certificate", "private_key", "ca_certificates"):
            path = getattr(config.tls, name)
            if path is not None and not path.is_file():
                raise ConfigError(f"[tls].{name}: no such file {path}")
    return config


def load_config(path: Path) -> NodeConfig:
    """Read and validate a TOML config file."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"--config: no such file {path}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"--config: {path} is not valid TOML ({error})") from error
    return config_from_mapping(data)


def parse_destination(text: str, *, index: int = 0) -> Destination:
    """``AE@host:port`` or ``name=AE@host:port`` (the ``--destination`` flag)."""
    match = re.fullmatch(r"(?:(?P<name>[^=]+)=)?(?P<ae>[^@]+)@(?P<host>[^:]+):(?P<port>\d+)",
                         text.strip())
    if not match:
        raise ConfigError(f"--destination: expected AE@HOST:PORT or NAME=AE@HOST:PORT, "
                          f"got {text!r}")
    return _destination(index, {"name": match["name"] or match["ae"], "ae_title": match["ae"],
                                "host": match["host"], "port": int(match["port"])})
