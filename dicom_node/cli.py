"""``cxr-node``: ``serve`` the node, show its ``status``, ``retry`` what failed.

Exit codes: 0 ok; 2 bad configuration or arguments (the message names the key).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dicom_node.config import (
    ConfigError,
    NodeConfig,
    config_from_mapping,
    load_config,
    parse_destination,
    validate_config,
)

if TYPE_CHECKING:
    from dicom_node.store import Store

EXIT_CONFIG = 2


def _add_location(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="the node's TOML config")
    where.add_argument("--storage", type=Path, help="the node's storage folder")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxr-node", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the DICOM node (until SIGTERM)")
    serve.add_argument("--config", type=Path, help="TOML config; flags override it")
    serve.add_argument("--ae-title")
    serve.add_argument("--bind", dest="bind_address", help="listen address (default 0.0.0.0)")
    serve.add_argument("--port", type=int)
    serve.add_argument("--allow-ae", action="append", default=[], metavar="AE",
                       help="calling AE title allowed to associate (repeatable)")
    serve.add_argument("--allow-ip", action="append", default=[], metavar="IP/NET")
    serve.add_argument("--destination", action="append", default=[],
                       metavar="[NAME=]AE@HOST:PORT", help="where results go (repeatable)")
    serve.add_argument("--storage", type=Path)
    serve.add_argument("--quiet-period", type=float, dest="quiet_period_s", metavar="SECONDS")
    serve.add_argument("--workers", type=int)
    serve.add_argument("--http-port", type=int, help="health/metrics port (0: off)")
    serve.add_argument("--models-dir", type=Path)
    serve.add_argument("--overlay", action="store_true", default=None,
                       help="also send the overlay as a secondary capture")
    serve.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    status = sub.add_parser("status", help="studies, jobs, deliveries and failures")
    _add_location(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--limit", type=int, default=20, help="studies to list")
    retry = sub.add_parser("retry", help="requeue dead deliveries and failed instances")
    _add_location(retry)
    retry.add_argument("--study", help="only this Study Instance UID")
    token = sub.add_parser("token", help="API and review-page tokens (only hashes are kept)")
    token.add_argument("action", choices=("create", "revoke", "list"))
    token.add_argument("name", nargs="?", help="who holds the token (create, revoke)")
    _add_location(token)
    return parser


def build_config(args: argparse.Namespace) -> NodeConfig:
    """The config file (if any) with the flags given on top, validated."""
    config = load_config(args.config) if args.config else NodeConfig()
    sections: dict[str, dict[str, Any]] = {"node": {}, "security": {}, "jobs": {}, "http": {}}
    flags = {("node", "ae_title"): args.ae_title, ("node", "bind_address"): args.bind_address,
             ("node", "port"): args.port,
             ("node", "storage"): str(args.storage) if args.storage else None,
             ("node", "models_dir"): str(args.models_dir) if args.models_dir else None,
             ("node", "overlay"): args.overlay, ("node", "log_level"): args.log_level,
             ("jobs", "quiet_period_s"): args.quiet_period_s, ("jobs", "workers"): args.workers,
             ("http", "port"): args.http_port,
             ("security", "allowed_ae_titles"): args.allow_ae or None,
             ("security", "allowed_ips"): args.allow_ip or None}
    for (section, key), value in flags.items():
        if value is not None:
            sections[section][key] = value
    try:
        config = config_from_mapping(sections, base=config)
    except ConfigError as error:
        raise ConfigError(_flag_name(str(error))) from error
    if args.destination:
        destinations = tuple(parse_destination(text, index=i)
                             for i, text in enumerate(args.destination))
        config = validate_config(replace(config, destinations=destinations))
    return config


def _flag_name(message: str) -> str:
    """Say ``--allow-ae`` rather than ``[security].allowed_ae_titles`` for flags."""
    names = {"[node].ae_title": "--ae-title", "[node].port": "--port",
             "[node].bind_address": "--bind", "[jobs].quiet_period_s": "--quiet-period",
             "[jobs].workers": "--workers", "[http].port": "--http-port",
             "[security].allowed_ips": "--allow-ip"}
    for key, flag in names.items():
        if message.startswith(key + ":"):
            return f"{flag} ({key}){message[len(key):]}"
    return message


def _open_store(args: argparse.Namespace) -> Store:
    from dicom_node.store import Store

    if args.config:
        config = load_config(args.config)
        if config.store_url is not None:
            return config.open_store()
        storage = config.storage
    else:
        storage = args.storage
    database = storage / "node.sqlite"
    if not database.is_file():
        raise ConfigError(f"--storage: no node database in {storage}")
    return Store(path=database)


def _run_serve(args: argparse.Namespace) -> int:
    from dicom_node.logs import setup_logging
    from dicom_node.node import serve

    config = build_config(args)
    setup_logging(config.log_level)
    return serve(config)


def _run_status(args: argparse.Namespace) -> int:
    store = _open_store(args)
    report: dict[str, Any] = {
        "counts": store.counts(),
        "studies": [dict(row) for row in store.studies(args.limit)],
        "failures": [dict(row) for row in store.failures()],
        "queue_depth": store.queue_depth(),
        "workers": [dict(row) for row in store.workers()],
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"queue depth: {report['queue_depth']} studies queued or processing")
    print("workers (all processes):")
    for row in report["workers"]:
        current = f"study #{row['current_study']}" if row["current_study"] else "idle"
        print(f"  {row['id']:<40} {row['role']:<7} {'alive' if row['alive'] else 'dead':<6}"
              f" {current:<14} jobs done {row['jobs_done']}")
    for table, states in report["counts"].items():
        summary = ", ".join(f"{state} {count}" for state, count in sorted(states.items()))
        print(f"{table}: {summary or 'none'}")
    print("\nstudies (newest first):")
    for row in report["studies"]:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["last_received"]))
        print(f"  #{row['id']:<5} {row['state']:<10} {stamp}  instances {row['instances']}"
              f"  results {row['results']}  sent {row['sent']}  {row['study_uid']}")
    print(f"\nfailures ({len(report['failures'])}):")
    for row in report["failures"]:
        print(f"  {row['kind']:<8} study #{row['study_id']:<5} {row['state']:<8} "
              f"{row['uid']}: {row['detail']}")
    return 0


def _run_token(args: argparse.Namespace) -> int:
    """``create`` prints the token once (to stdout: nothing else is printed there)."""
    from dicom_node.web.auth import TokenError, Tokens

    config = load_config(args.config) if args.config else NodeConfig(storage=args.storage)
    tokens = Tokens(path=config.tokens_file)
    try:
        if args.action == "list":
            for entry in tokens.entries():
                print(f"{entry.name}\tcreated {entry.created}")
            return 0
        if not args.name:
            raise ConfigError(f"token {args.action}: give the holder's name")
        if args.action == "create":
            print(tokens.create(args.name))
            return 0
        if not tokens.revoke(args.name):
            raise ConfigError(f"token revoke: no token named {args.name!r}")
    except TokenError as error:
        raise ConfigError(f"token {args.action}: {error}") from None
    return 0


def _run_retry(args: argparse.Namespace) -> int:
    counts = _open_store(args).retry(study_uid=args.study)
    print(f"requeued {counts['deliveries']} deliveries and {counts['instances']} instances")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"serve": _run_serve, "status": _run_status, "retry": _run_retry,
                "token": _run_token}
    try:
        return handlers[args.command](args)
    except ConfigError as error:
        print(f"cxr-node: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
