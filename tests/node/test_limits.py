"""Bounded memory per input (issue 14 item 1, red team F1): before anything is decoded,
the node refuses at C-STORE (0xC000, with a reason) an image whose declared decoded size
is past ``[limits].max_decoded_mb``, whose JPEG/J2K codestream declares another size than
Rows/Columns, or a deflated dataset that inflates past ``max_inflated_mb``; its memory
stays within budget and it keeps serving."""

from __future__ import annotations

from pathlib import Path

from tests.node.node_bombs import build_bombs, large_dataset
from tests.node.node_helpers import (
    DX_NIH,
    NodeProcess,
    copy_with_new_uids,
    echoscu,
    send_raw,
    wait_for,
)

EXPECTED = {"jpeg_sof_60000": "codestream is 60000x60000 px",
            "j2k_siz_12000": "codestream is 12000x12000 px",
            "rows_columns_60000": "decoded pixel data too large",
            "deflate_320mb": "deflated dataset too large"}
MEMORY_BUDGET_MIB = 1536


def peak_rss_mib(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_memory_bombs_are_refused_before_decoding(tmp_path: Path, processes: list,
                                                  chunked_sending: None) -> None:
    node = NodeProcess(tmp_path, destinations=[], extra="[limits]\nmax_dataset_mb = 128\n")
    processes.append(node)
    node.start()
    for name, path in build_bombs(tmp_path / "bombs").items():
        code, comment = send_raw(path, node.port)
        assert code == 0xC000 and EXPECTED[name] in comment, (name, code, comment)
    assert echoscu(node.port).returncode == 0
    good = copy_with_new_uids(DX_NIH, tmp_path / "good")
    assert send_raw(good, node.port) == (0x0000, "")
    assert node.process is not None
    # the good one analysed first: the engine's loading and an analysis grow the process
    # by far more than the budget below, and must not land inside it
    wait_for(lambda: [state for state, _ in node.instance_states().values()] == ["processed"],
             180, "the good instance analysed")
    # a 160 MiB dataset is streamed to disk, never buffered: refused over max_dataset_mb
    before = peak_rss_mib(node.process.pid)
    code, comment = send_raw(large_dataset(tmp_path, 160), node.port)
    assert code == 0xC000 and "dataset larger than 128 MiB" in comment, (code, comment)
    assert peak_rss_mib(node.process.pid) - before < 64
    peak = peak_rss_mib(node.process.pid)
    print(f"node peak RSS after the bombs: {peak:.0f} MiB")
    assert peak < MEMORY_BUDGET_MIB
    assert not list((node.storage / "spool").rglob("*.dcm"))[1:]  # only the good one
    assert node.stop() == 0
