"""Real PostgreSQL and RabbitMQ servers from Debian's packages, on free loopback ports in
a test's own folder. Whoever starts one stops it."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.node.node_helpers import free_port, port_open, wait_for

POSTGRES_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)),
                    Path("/usr/lib/postgresql/15/bin"))
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def _as_postgres_user(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the package's user then."""
    if os.geteuid() != 0:
        return command
    return [shutil.which("runuser") or "runuser", "-u", "postgres", "--", *command]


class Postgres:
    """A throw-away cluster: trust auth on 127.0.0.1 only, fsync on (kills are real)."""

    def __init__(self, root: Path) -> None:
        # as root, the server runs as the package's user, who cannot enter pytest's
        # private temporary folders: its own folder then, removed on stop
        self._own_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="cxr-pg-")) if self._own_root else root
        self.data = self.root / "pgdata"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://cxr@127.0.0.1:{self.port}/cxr"

    def start(self) -> Postgres:
        assert (POSTGRES_BIN / "initdb").is_file(), "apt package postgresql (install.sh --test)"
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        subprocess.run(_as_postgres_user([
            str(POSTGRES_BIN / "initdb"), "-D", str(self.data), "-U", "cxr", "--auth=trust",
            "-E", "UTF8", "--no-instructions"]), check=True, capture_output=True, timeout=120)
        self.log = (self.root / "postgres.log").open("ab")
        self.process = subprocess.Popen(_as_postgres_user([
            str(POSTGRES_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-h", "127.0.0.1", "-k", str(self.root), "-c", "max_connections=200"]),
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: port_open(self.port), 60, "PostgreSQL to listen")
        subprocess.run([str(POSTGRES_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                        "-U", "cxr", "cxr"], check=True, capture_output=True, timeout=60)
        return self

    def new_database(self) -> str:
        """A fresh, empty database on this server; returns its URL."""
        import psycopg

        name = f"t{secrets.token_hex(6)}"
        with psycopg.connect(self.url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")  # name: hex only
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.log.close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


class RabbitMQ:
    """A single broker node with its own name, ports and files (durable queues persist
    across :meth:`restart`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.name = f"cxrtest{self.port}@localhost"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _environment(self) -> dict[str, str]:
        for folder in ("mnesia", "log"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        (self.root / "enabled_plugins").write_text("[].\n")
        return {**os.environ, "HOME": str(self.root), "RABBITMQ_NODENAME": self.name,
                "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_DIST_PORT": str(free_port()),
                "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.root / "log"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
                "RABBITMQ_PID_FILE": str(self.root / "pid"),
                "RABBITMQ_CONFIG_FILE": str(self.root / "none")}

    def start(self) -> RabbitMQ:
        assert RABBITMQ_SERVER.is_file(), "apt package rabbitmq-server (install.sh --test)"
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = (self.root / "rabbitmq.log").open("ab")
        self.process = subprocess.Popen([str(RABBITMQ_SERVER)], env=self._environment(),
                                        stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_for(lambda: port_open(self.port), 120, "RabbitMQ to listen")
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        group = self.process.pid
        os.killpg(group, signal.SIGTERM)  # the script and its Erlang VM
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(10)
        self.log.close()
        # the VM outlives the script for a moment and keeps its port bound
        wait_for(lambda: not _group_alive(group), 60, "RabbitMQ's Erlang VM to exit")

    def restart(self) -> None:
        self.stop()
        time.sleep(0.5)
        self.start()
