"""Helpers for the node tests. Real peers on loopback: the node as a subprocess,
dcmtk storescp/storescu/echoscu, Orthanc. Whoever starts a process stops it."""

from __future__ import annotations

import collections
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dsutils import split_dataset

from dicom_node.config import load_config
from dicom_node.store import Store
from tests.conftest import (
    DICOM_SAMPLES,
    dciodvfy_errors,  # noqa: F401 (re-exported for the node tests)
    require_tool,
)

SAMPLES = DICOM_SAMPLES
CR_UNCOMPRESSED = SAMPLES / "RG1_UNCR.dcm"
CR_J2K_LOSSY = SAMPLES / "RG1_J2KI.dcm"
EXTREMITY = SAMPLES / "RG3_J2KR.dcm"
DX_NIH = SAMPLES / "nih_gcp_1.3.6.1.4.1.11129.5.5.110503645592756492463169821050252582267888.dcm"
SC_JPEG = SAMPLES / "siim_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
NODE_AE = "CXRNODE"
PACS_AE = "PACS"
DEST_AE = "DEST"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def copy_with_new_uids(source: Path, folder: Path, *, study_uid: str | None = None,
                       **changes: Any) -> Path:
    """A copy of a sample as a new instance (new SOP/Series, given or new Study UID)."""
    dataset = pydicom.dcmread(source)
    dataset.StudyInstanceUID = study_uid or generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    for keyword, value in changes.items():
        setattr(dataset, keyword, value)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def storescu(files: list[Path], port: int, *, calling_ae: str = PACS_AE,
             transfer: str | None = None) -> subprocess.CompletedProcess:
    """dcmtk storescu; ``transfer`` picks the compressed syntax to propose (-xy, -xv...)."""
    command = [require_tool("storescu"), "-R", "-aet", calling_ae, "-aec", NODE_AE]
    command += [transfer] if transfer else []
    command += ["127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def echoscu(port: int, calling_ae: str = PACS_AE, called_ae: str = NODE_AE
            ) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("echoscu"), "-aet", calling_ae, "-aec", called_ae,
                           "127.0.0.1", str(port)], capture_output=True, text=True, timeout=30)


def send_raw(path: Path, port: int, *, calling_ae: str = PACS_AE,
             called_ae: str = NODE_AE) -> tuple[int | None, str]:
    """C-STORE the file's bytes exactly as they are (with ``STORE_SEND_CHUNKED_DATASET``
    on, see the ``chunked_sending`` fixture): ``(status, ErrorComment)``, or ``(None,
    reason)`` when our own SCU refuses to send it."""
    meta = split_dataset(path)[0]
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(str(meta.MediaStorageSOPClassUID), [str(meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    assert assoc.is_established, "the node stopped accepting associations"
    try:
        status = assoc.send_c_store(path)
    except Exception as error:  # our own SCU refusing to send it
        assoc.abort()
        return None, f"not sent: {type(error).__name__}"
    code = int(status.Status) if status and "Status" in status else None
    comment = str(status.get("ErrorComment", "")) if status else ""
    if assoc.is_established:
        assoc.release()
    return code, comment


def make_certificate(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed key and certificate (valid one day) named ``name``."""
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run([require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1",
                    "-subj", f"/CN={name}"], check=True, capture_output=True, timeout=60)
    return key, cert


def received_sop_uids(folder: Path) -> collections.Counter:
    """SOP Instance UID -> how many complete files storescp wrote for it (+uf: never
    overwrites). storescp writes a file as it receives it: one still being written does not
    parse yet and is not counted (callers poll)."""
    uids: collections.Counter = collections.Counter()
    for path in folder.iterdir():
        if not path.is_file():
            continue
        try:
            uids[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] += 1
        except (pydicom.errors.InvalidDicomError, EOFError, OSError, AttributeError):
            continue
    return uids


class NodeProcess:
    """``cxr-node serve`` as a subprocess with its own TOML config and ports."""

    def __init__(self, root: Path, *, destinations: list[tuple[str, str, int]],
                 allowed: tuple[str, ...] = (PACS_AE,), quiet_period: float = 0.5,
                 extra: str = "", port: int | None = None, tmpfs_mb: int = 0,
                 heatmap_seg: bool | None = False, in_doubt: dict[str, str] | None = None,
                 storage: Path | None = None, node_keys: str = "", jobs_keys: str = "",
                 env: dict[str, str] | None = None) -> None:
        self.root = root
        self.env = env  # the process's environment (None: this one's)
        self.tmpfs_mb = tmpfs_mb
        root.mkdir(parents=True, exist_ok=True)
        self.storage = storage or root / "storage"
        self.port = port or free_port()
        self.http_port = free_port()
        self.log_path = root / "node.log"
        self.config_path = root / "node.toml"
        lines = ["[node]", f'ae_title = "{NODE_AE}"', 'bind_address = "127.0.0.1"',
                 f"port = {self.port}", f'storage = "{self.storage}"',
                 # off unless a test asks: most node tests count deliveries, and whether
                 # a finding is positive depends on the model, not on the node; None: no
                 # key (code from before the key existed)
                 "" if heatmap_seg is None else f"heatmap_seg = {str(heatmap_seg).lower()}",
                 node_keys,
                 "[security]", f"allowed_ae_titles = {json.dumps(list(allowed))}",
                 "min_free_disk_mb = 1",
                 "[jobs]", f"quiet_period_s = {quiet_period}", "workers = 1", jobs_keys,
                 "[http]", 'address = "127.0.0.1"', f"port = {self.http_port}"]
        for name, ae_title, port in destinations:
            lines += ["[[destinations]]", f'name = "{name}"', f'ae_title = "{ae_title}"',
                      'host = "127.0.0.1"', f"port = {port}"]
            if in_doubt and name in in_doubt:
                lines.append(f'in_doubt = "{in_doubt[name]}"')
        self.config_path.write_text("\n".join(lines) + "\n" + extra)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> NodeProcess:
        self._log = self.log_path.open("ab")
        command = [sys.executable, "-m", "dicom_node", "serve", "--config",
                   str(self.config_path)]
        if self.tmpfs_mb:
            command = self._on_tmpfs(command)
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=self.env)
        # a worker-only node has no DICOM port: its HTTP port says it is up
        listens = self.http_port if 'role = "worker"' in self.config_path.read_text() \
            else self.port
        wait_for(lambda: self._alive() and port_open(listens), timeout, "the node to listen")
        if self.tmpfs_mb:  # the tmpfs is only visible through the node's own mount view
            self.storage = Path(f"/proc/{self.process.pid}/root{self.storage}")
        return self

    def _on_tmpfs(self, command: list[str]) -> list[str]:
        """Run the node with a size-limited tmpfs over its storage folder, mounted in a
        private user and mount namespace: a real full disk, no root, no shared mount."""
        self.storage.mkdir(parents=True, exist_ok=True)
        mount = f'mount -t tmpfs -o size={self.tmpfs_mb}m tmpfs "$0" && exec "$@"'
        return [require_tool("unshare"), "--user", "--map-root-user", "--mount", "sh", "-c",
                mount, str(self.storage), *command]

    def _alive(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"node exited with {self.process.returncode}:\n{self.log()}")
        return True

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._log.close()

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (graceful); SIGKILL if it does not exit in time. Returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            code = None
        self._log.close()
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def store(self) -> Store:
        config = load_config(self.config_path)
        if config.store_url is not None:  # a shared PostgreSQL store
            return config.open_store()
        return Store(path=self.storage / "node.sqlite")

    def instance_states(self) -> dict[str, tuple[str, str | None]]:
        store = self.store()
        try:
            rows = store._connection().execute("SELECT sop_uid, state, reason FROM instances")
            return {r[0]: (r[1], r[2]) for r in rows}
        finally:
            store.close()

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        store = self.store()
        try:
            return [tuple(r) for r in store._connection().execute(sql, args)]
        finally:
            store.close()

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}",
                                        timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dicom_node", *args, "--storage",
                               str(self.storage)], capture_output=True, text=True, timeout=60)

    def wait_instances(self, uids: set[str], states: set[str], timeout: float = 90) -> dict:
        def settled() -> dict | None:
            found = self.instance_states()
            done = {u: found[u] for u in uids if u in found and found[u][0] in states}
            return found if len(done) == len(uids) else None
        return wait_for(settled, timeout, f"{len(uids)} instances to become {states}")


class Storescp:
    """dcmtk storescp as a destination; +uf so a repeated delivery shows as a second file."""

    def __init__(self, folder: Path, port: int | None = None, ae_title: str = DEST_AE) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.ae_title = ae_title
        self.process: subprocess.Popen | None = None

    def start(self) -> Storescp:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [require_tool("storescp"), "-aet", self.ae_title, "-od", str(self.folder), "+uf",
             "--promiscuous", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.port), 10, "storescp to listen")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def received(self) -> collections.Counter:
        return received_sop_uids(self.folder)


class Orthanc:
    """Orthanc as the PACS: auto-routes every stable study to the node (Lua
    ``OnStableStudy``) and stores what the node sends back."""

    def __init__(self, root: Path, *, node_port: int, ae_title: str = "ORTHANC",
                 stable_age: int = 1, route: bool = True, lua: str = "",
                 settings: dict[str, Any] | None = None) -> None:
        self.root = root
        self.ae_title = ae_title
        self.node_port = node_port
        self.http_port = free_port()
        self.dicom_port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        script = root / "route.lua"
        script.write_text(lua + (
            "function OnStableStudy(studyId, tags, metadata)\n"
            # Lua's SendToModality() takes instances; the REST route sends a whole study
            "  RestApiPost('/modalities/cxrnode/store', studyId)\n"
            "end\n" if route else ""))
        self.config = root / "orthanc.json"
        self.config.write_text(json.dumps({
            "Name": "test-pacs", "StorageDirectory": str(root / "db"),
            "IndexDirectory": str(root / "db"), "HttpPort": self.http_port,
            "DicomPort": self.dicom_port, "DicomAet": ae_title,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "HttpServerEnabled": True, "DicomServerEnabled": True, "Plugins": [],
            "StableAge": stable_age, "LuaScripts": [str(script)],
            "DicomModalities": {"cxrnode": [NODE_AE, "127.0.0.1", node_port]},
            "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
            "DicomScuTimeout": 30, "ConcurrentJobs": 1, "HttpTimeout": 30,
            **(settings or {}),
        }))
        self.process: subprocess.Popen | None = None

    def start(self) -> Orthanc:
        self.log = (self.root / "orthanc.log").open("wb")
        self.process = subprocess.Popen([require_tool("Orthanc"), str(self.config)],
                                        stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._up(), 30, "Orthanc's REST API")
        return self

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError("Orthanc exited: " +
                                 (self.root / "orthanc.log").read_text(errors="replace"))
        try:
            self.get("/system")
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process is not None:
            self.log.close()

    def _request(self, path: str, data: bytes | None = None) -> bytes:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data,
                                         method="POST" if data is not None else "GET")
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.read()

    def get(self, path: str) -> Any:
        return json.loads(self._request(path))

    def upload(self, path: Path) -> dict:
        return json.loads(self._request("/instances", path.read_bytes()))

    def file(self, instance_id: str) -> bytes:
        return self._request(f"/instances/{instance_id}/file")
