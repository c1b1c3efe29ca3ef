"""Bounded load test of `georeason serve` on loopback: throughput, latency, 503s, server memory.

Web demo and REST service (docs/serve.md); not in the paper. Starts the server (tiny preset, random
weights) in a subprocess, warms it up, then sends two rounds of 200 predictions from 16 concurrent
clients that honour Retry-After on 503. Checks every 200 carries a valid mask PNG, no other 5xx,
no leftover upload folders, and samples the server's RSS. Prints a table and writes the
"## Serving" section of bench/RESULTS.md. Run: `python bench/bench_serve.py` (about 2-3 minutes).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import platform
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
from _results import RESULTS, replace_section  # noqa: E402 - the one RESULTS.md writer (bench/ is on sys.path)
SECTION = "## Serving"
SAMPLES = ROOT / "src" / "georeason" / "serve" / "samples"
QUESTIONS = ["Which water body could supply a reservoir?", "Where could a boat be launched?",
             "Which slopes are bare rock?", "Where is the forest densest?"]


@dataclass
class Round:
    """What one round of requests produced."""

    statuses: dict[int, int] = field(default_factory=dict)
    ok_latency: list[float] = field(default_factory=list)  # one attempt that answered 200
    end_to_end: list[float] = field(default_factory=list)  # first attempt to the 200, retries included
    invalid_masks: int = 0
    stage_seconds: dict[str, list[float]] = field(default_factory=dict)
    wall: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, status: int) -> None:
        with self.lock:
            self.statuses[status] = self.statuses.get(status, 0) + 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _mask_ok(body: dict) -> bool:
    """The base64 mask decodes as a PNG of the image's size, 0/255 only, with target_pixels set pixels."""
    try:
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png_base64"]))))
    except Exception:  # noqa: BLE001 - any decoding failure is an invalid mask
        return False
    size = body["image"]
    return (mask.shape == (size["height"], size["width"]) and set(np.unique(mask).tolist()) <= {0, 255}
            and int((mask == 255).sum()) == body["target_pixels"])


def _client_loop(url: str, jobs: queue.Queue, payloads: list[tuple[str, bytes]], result: Round) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        while True:
            try:
                index = jobs.get_nowait()
            except queue.Empty:
                return
            name, data = payloads[index % len(payloads)]
            first = time.perf_counter()
            while True:
                started = time.perf_counter()
                response = client.post("/v1/predict", files={"image": (name, data)},
                                       data={"question": QUESTIONS[index % len(QUESTIONS)]})
                elapsed = time.perf_counter() - started
                result.count(response.status_code)
                if response.status_code == 503:
                    time.sleep(float(response.headers.get("retry-after", "1")))
                    continue
                break
            if response.status_code != 200:
                continue
            body = response.json()
            valid = _mask_ok(body)
            with result.lock:
                result.ok_latency.append(elapsed)
                result.end_to_end.append(time.perf_counter() - first)
                result.invalid_masks += not valid
                for stage in ("queue", "inference", "outputs"):
                    result.stage_seconds.setdefault(stage, []).append(body["timings"][stage])


def run_round(url: str, requests: int, concurrency: int, payloads: list[tuple[str, bytes]],
              pid: int, rss_samples: list[float]) -> Round:
    jobs: queue.Queue = queue.Queue()
    for index in range(requests):
        jobs.put(index)
    result = Round()
    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.is_set():
            rss_samples.append(_rss_mb(pid))
            stop.wait(0.2)

    sampler = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    started = time.perf_counter()
    clients = [threading.Thread(target=_client_loop, args=(url, jobs, payloads, result)) for _ in range(concurrency)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    result.wall = time.perf_counter() - started
    stop.set()
    sampler.join()
    return result


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def write_section(lines: list[str]) -> None:
    """Replace (or append) this script's section of bench/RESULTS.md (the shared writer, bench/_results.py)."""
    assert lines[:2] == [SECTION, ""]
    replace_section(SECTION, lines[2:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--queue-size", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args()

    from georeason.model.factory import build_model

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    model_dir = work / "tiny"
    model, tokenizer = build_model("tiny", seed=0)
    model.save_pretrained(model_dir, tokenizer=tokenizer)
    server_tmp = work / "server-tmp"  # the server's TMPDIR: its upload and result folders land here
    server_tmp.mkdir()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TMPDIR": str(server_tmp)}
    command = [sys.executable, "-m", "georeason.cli", "serve", "--model", str(model_dir), "--port", str(port),
               "--queue-size", str(args.queue_size), "--log-level", "warning"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{server.stderr.read() if server.stderr else ''}")
            time.sleep(0.2)
        payloads = [(name, (SAMPLES / name).read_bytes()) for name in ("rmnp-lake.png", "rmnp-west.tif")]
        rss: list[float] = []
        load_before = os.getloadavg()[0]
        warm = run_round(url, 10, 1, payloads, server.pid, [])
        assert warm.statuses == {200: 10}, warm.statuses
        rss_warm = _rss_mb(server.pid)
        rounds = []
        rss_after = []
        for _ in range(2):
            rounds.append(run_round(url, args.requests, args.concurrency, payloads, server.pid, rss))
            rss_after.append(_rss_mb(server.pid))
        load_after = os.getloadavg()[0]
        health = httpx.get(url + "/v1/health").json()
        leftover_uploads = len(list(server_tmp.glob("georeason-upload-*")))
        stored_results = sum(1 for root in server_tmp.glob("georeason-results-*") for _ in root.iterdir())
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for number, result in enumerate(rounds, start=1):
        other = {s: n for s, n in result.statuses.items() if s not in (200, 503)}
        rows.append([
            f"round {number}", str(args.requests), str(sum(result.statuses.values())),
            str(result.statuses.get(200, 0)), str(result.statuses.get(503, 0)), str(sum(other.values())),
            str(result.invalid_masks), f"{result.statuses.get(200, 0) / result.wall:.2f}",
            f"{_percentile(result.ok_latency, 50):.2f} / {_percentile(result.ok_latency, 95):.2f}",
            f"{_percentile(result.end_to_end, 50):.2f} / {_percentile(result.end_to_end, 95):.2f}",
            f"{rss_after[number - 1]:.0f}",
        ])
    header = ["round", "requests", "attempts", "200", "503", "other", "bad masks", "req/s",
              "p50 / p95 s (200s)", "p50 / p95 s (incl. retries)", "RSS after, MB"]
    stages = {stage: statistics.median(v for r in rounds for v in r.stage_seconds[stage])
              for stage in ("queue", "inference", "outputs")}
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    import torch

    lines = [
        SECTION, "",
        f"`python bench/bench_serve.py` on {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {time.strftime('%Y-%m-%d')}. Server: `georeason serve` in a "
        f"subprocess, tiny preset (random weights), --queue-size {args.queue_size}; {args.concurrency} concurrent "
        f"loopback clients send {args.requests} predictions per round (the two bundled samples, answer and "
        "vectors on) and wait Retry-After seconds after a 503 before retrying. Clients and server share the "
        f"machine; 1-minute load average {load_before:.1f} before, {load_after:.1f} after.", "",
        *table, "",
        f"- Server RSS: {rss_warm:.0f} MB after 10 warm-up requests, {rss_after[0]:.0f} MB after round 1, "
        f"{rss_after[1]:.0f} MB after round 2 (peak {max(rss):.0f} MB while serving); round 2 changed it by "
        f"{rss_after[1] - rss_after[0]:+.0f} MB.",
        f"- Median seconds per request inside the server: queue wait {stages['queue']:.2f}, inference "
        f"{stages['inference']:.3f}, writing the result files {stages['outputs']:.3f}.",
        f"- After the run: {leftover_uploads} upload folders left, {stored_results} results stored (cap 64), "
        f"health counters completed {health['queue']['completed']}, refused {health['queue']['refused']}, "
        f"failed {health['queue']['failed']}.",
        "- 503 is the intended answer to a full queue (1 running + "
        f"{args.queue_size} waiting < {args.concurrency} clients); 'other' counts every other non-200 status.",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section(lines)
        print(f"\nwrote the '{SECTION}' section of {RESULTS}", file=sys.stderr)
    bad = any(r.invalid_masks or any(s not in (200, 503) for s in r.statuses) for r in rounds) or leftover_uploads
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
