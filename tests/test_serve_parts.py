"""Parts of `georeason serve`: the bounded worker, the result store, magic-byte sniffing and the CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from georeason.cli import main
from georeason.serve.app import ServeSettings, _is_loopback
from georeason.serve.store import ResultStore
from georeason.serve.upload import sniff_image
from georeason.serve.worker import InferenceWorker, QueueFull


def test_worker_runs_in_order_on_one_thread_and_refuses_beyond_capacity():
    worker = InferenceWorker(capacity=2)
    gate = threading.Event()
    order: list[int] = []
    threads: set[str] = set()

    def job(index: int) -> int:
        gate.wait(10)
        order.append(index)
        threads.add(threading.current_thread().name)
        return index * 10

    first = worker.submit(job, 0)
    deadline = time.monotonic() + 5
    while not worker.stats().busy and time.monotonic() < deadline:
        time.sleep(0.01)
    queued = [worker.submit(job, 1), worker.submit(job, 2)]
    with pytest.raises(QueueFull, match=r"full \(2 requests waiting\); retry in \d+ s") as refused:
        worker.submit(job, 3)
    assert refused.value.retry_after >= 1
    gate.set()
    assert [f.result(10) for f in [first, *queued]] == [0, 10, 20]
    assert order == [0, 1, 2] and threads == {"georeason-inference"}
    stats = worker.stats()
    assert (stats.completed, stats.failed, stats.refused, stats.waiting) == (3, 0, 1, 0)
    worker.close()


def test_worker_delivers_exceptions_and_keeps_running():
    worker = InferenceWorker(capacity=1)

    def boom() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        worker.submit(boom).result(5)
    assert worker.submit(lambda: 7).result(5) == 7
    assert worker.stats().failed == 1 and worker.stats().mean_job_seconds is not None
    worker.close()
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        InferenceWorker(0)


def test_store_ids_files_expiry_and_eviction(tmp_path):
    store = ResultStore(max_items=2, ttl_seconds=1.0)
    assert stat.S_IMODE(os.stat(store.root).st_mode) == 0o700
    ids = []
    for index in range(3):
        result_id, folder = store.new_folder()
        (folder / "mask.png").write_bytes(b"png%d" % index)
        (folder / "notes.txt").write_text("never served")
        store.commit(result_id, folder)
        ids.append(result_id)
    assert len(store) == 2 and store.path(ids[0], "mask.png") is None  # the oldest was evicted
    assert not (store.root / ids[0]).exists()
    assert store.path(ids[2], "mask.png").read_bytes() == b"png2"
    assert store.path(ids[2], "notes.txt") is None and store.path(ids[2], "mask.tif") is None
    assert store.path("../" + ids[2][3:], "mask.png") is None and store.path("x", "mask.png") is None
    assert len(set(ids)) == 3 and all(len(i) == 22 for i in ids)
    time.sleep(1.05)
    assert store.path(ids[2], "mask.png") is None and len(store) == 0
    store.close()
    assert not store.root.exists()


@pytest.mark.parametrize("head, kind", [
    (b"\x89PNG\r\n\x1a\n....", "png"), (b"\xff\xd8\xff\xe0....", "jpeg"), (b"II*\x00....", "tiff"),
    (b"MM\x00*....", "tiff"), (b"II+\x00....", "tiff"), (b"GIF89a..", None), (b"BM......", None), (b"", None),
])
def test_sniff_image_by_magic_bytes(tmp_path, head, kind):
    path = tmp_path / "upload.bin"
    path.write_bytes(head)
    assert sniff_image(path) == kind


def test_settings_and_loopback_checks():
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.4")
    assert ServeSettings(max_upload_mb=2.5).max_upload_bytes == 2_500_000
    assert ServeSettings().host == "127.0.0.1"


def test_cli_refuses_bad_options_and_missing_model(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path), "--port", "0"]) == 2
    assert "--port: expected 1..65535, got 0" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--queue-size", "0"]) == 2
    assert "--queue-size: expected >= 1, got 0" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--num-beams", "0"]) == 2
    assert "--num-beams: expected >= 1, got 0" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path / "nope")]) == 2
    assert "no such model folder" in capsys.readouterr().err


def test_cli_help_is_fast_and_lists_every_option():
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "georeason.cli", "serve", "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--model", "--host", "--port", "--max-upload-mb", "--max-pixels", "--queue-size", "--device",
                   "--dtype", "--num-beams", "--result-ttl", "--max-results", "--max-question-chars",
                   "georeason serve --model"):
        assert option in result.stdout
    assert time.perf_counter() - started < 20
