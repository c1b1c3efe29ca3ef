"""End-to-end tests of `georeason annotate` against a scripted OpenAI-compatible server on loopback."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from georeason.cli import main as georeason_main

VALID_QUESTIONS = [
    "Where could a rescue team gather many people safely after a strong earthquake?",
    "After violent shaking, which open spot nearby lets residents assemble away from falling debris?",
    "If tremors struck at night, what spacious ground would emergency crews pick for a shelter?",
    "Which location here offers room for crowds plus quick access for ambulances during a quake?",
    "During seismic aftershocks, where might families wait without tall structures overhead?",
    "What place in this scene best suits a temporary camp once buildings become unsafe?",
]
VALID_ANSWERS = [
    "The wide flat ground in the centre is safest: nothing tall can fall on it and roads reach it.",
    "Its broad surface, free of buildings, keeps debris away while main streets allow fast help.",
    "Being open and well connected, that central expanse gives shelter seekers both safety and access.",
]


def tag(category: str) -> str:
    """A word identifying an image in the replies without naming its category."""
    return "tag" + category.replace(" ", "")[::-1]


class ScriptedLLM:
    """Chat-completions replies chosen per (category, step) from a script; every request is logged."""

    def __init__(self, script: dict[tuple[str, str], list[str]] | None = None, always: dict | None = None):
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.always = always or {}  # (category, step) -> action used for every request
        self.log: list[dict] = []
        self.lock = threading.Lock()
        self.block_after: int | None = None  # answer this many requests, then hang until released
        self.release = threading.Event()

    def _identify(self, messages: list[dict]) -> tuple[str, str, str]:
        first = messages[1]["content"]
        text = first if isinstance(first, str) else first[0]["text"]
        if '"questions"' in text:
            step = "expand_questions"
        elif '"answers"' in text:
            step = "expand_answers"
        else:
            step = "step1"
        if step == "step1":
            category = re.search(r"scene category[^:\n]*: ([^\n]+)\.\n", text).group(1)
        else:
            category = re.search(r"\btag(\w+)", text).group(1)[::-1]
        return category, step, text

    def reply(self, body: bytes) -> tuple[int, dict, dict]:
        payload = json.loads(body)
        category, step, _ = self._identify(payload["messages"])
        with self.lock:
            answered = sum(1 for r in self.log if r["status"] == 200)
            queue = self.script.get((category, step), [])
            action = self.always.get((category, step)) or (queue.pop(0) if queue else "ok")
            entry = {"key": hashlib.sha256(body).hexdigest(), "category": category, "step": step,
                     "action": action, "time": time.monotonic(), "payload": payload, "status": None}
            self.log.append(entry)
            block = self.block_after is not None and answered >= self.block_after
        if block:
            entry["status"] = "blocked"
            self.release.wait(30)
            return 503, {}, {"error": "released"}
        status, headers, data = self._respond(category, step, action)
        entry["status"] = status
        return status, headers, data

    def _respond(self, category: str, step: str, action: str) -> tuple[int, dict, dict]:
        if action == "429":
            return 429, {"Retry-After": "1"}, {"error": "slow down"}
        if action == "500":
            return 500, {}, {"error": "boom"}
        if action == "401":
            return 401, {}, {"error": "bad key"}
        if action == "slow":
            time.sleep(1.0)
        t = tag(category)
        if action == "not_json":
            content = "Sure! Here is a great question about the scene for you."
        elif action == "names":
            content = json.dumps({"question": f"Where is the {category} in this image {t}?", "answer": "There."})
        elif step == "step1":
            content = json.dumps({"question": VALID_QUESTIONS[0].replace("?", f" {t}?"),
                                  "answer": VALID_ANSWERS[0] + f" ({t})"})
        elif step == "expand_questions":
            count = 5 if action == "wrong_count" else 6
            # Wrapped in prose: the pipeline must find the JSON object inside.
            content = "Here you go:\n" + json.dumps({"questions": VALID_QUESTIONS[:count]}) + "\nHope it helps."
        else:
            content = json.dumps({"answers": VALID_ANSWERS})
        return 200, {}, {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


class LoopbackServer:
    """uvicorn serving a FastAPI app in a background thread on 127.0.0.1:<free port>."""

    def __init__(self, llm: ScriptedLLM):
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body = await request.body()
            # The script runs in a worker thread, so a blocked or slow request does not stall the others.
            status, headers, data = await anyio.to_thread.run_sync(llm.reply, body)
            return JSONResponse(data, status_code=status, headers=headers)

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "LoopbackServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the test server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def make_images(folder: Path, categories: list[str], size: tuple[int, int] = (40, 30)) -> Path:
    """One small PNG per category named <category>_<i>.png, plus a categories CSV; returns the CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["image,category"]
    for i, category in enumerate(categories):
        name = f"img_{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / name)
        rows.append(f"{name},{category}")
    csv_path = folder.parent / "categories.csv"
    csv_path.write_text("\n".join(rows) + "\n")
    return csv_path


def annotate_args(images: Path, categories: Path, out: Path, server: LoopbackServer, *extra: str) -> list[str]:
    return ["annotate", str(images), "--categories", str(categories), "--out", str(out),
            "--base-url", server.base_url, "--model", "test-model", "--backoff", "0.01", "--timeout", "5",
            *extra]


def test_annotate_end_to_end_with_retries_repairs_and_a_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    categories = ["airport", "harbor", "lake", "stadium", "forest"]
    csv_path = make_images(tmp_path / "scenes", categories)
    (tmp_path / "scenes" / "notes.txt").write_text("not an image")
    llm = ScriptedLLM(
        script={("airport", "step1"): ["429", "500"], ("harbor", "step1"): ["not_json"],
                ("lake", "expand_questions"): ["wrong_count"], ("stadium", "step1"): ["names"]},
        always={("forest", "step1"): "names"})
    out = tmp_path / "dataset"
    with LoopbackServer(llm) as server:
        code = georeason_main(annotate_args(tmp_path / "scenes", csv_path, out, server, "--max-retries", "2",
                                            "--concurrency", "3"))
    assert code == 1  # one image failed

    # Requests: 4 good images x 3 steps, + 1 repair each for harbor, lake, stadium, + 2 transport retries for
    # airport, + 3 attempts for forest (max-retries 2) that all name the category.
    assert len(llm.log) == 4 * 3 + 3 + 2 + 3
    assert all(set(r["payload"]) == {"model", "messages", "temperature"} for r in llm.log)
    assert all(r["payload"]["model"] == "test-model" for r in llm.log)
    assert {r["payload"]["temperature"] for r in llm.log} == {0.7, 0.9}  # prompts.toml: step 1, step 2
    airport = [r for r in llm.log if r["category"] == "airport" and r["step"] == "step1"]
    assert [r["status"] for r in airport] == [429, 500, 200]
    assert airport[1]["time"] - airport[0]["time"] >= 0.9  # Retry-After: 1 was honoured
    # The repair request carries the rejected reply and the reason.
    harbor = [r for r in llm.log if r["category"] == "harbor" and r["step"] == "step1"]
    repair = harbor[1]["payload"]["messages"]
    assert repair[-2]["role"] == "assistant" and "not valid JSON" in repair[-1]["content"]

    # Vision: step 1 carries the image as a JPEG data URL of the original size (smaller than --max-side).
    part = airport[2]["payload"]["messages"][1]["content"][1]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/jpeg;base64,")
    jpeg = Image.open(io.BytesIO(base64.b64decode(part["image_url"]["url"].split(",", 1)[1])))
    assert (jpeg.format, jpeg.size) == ("JPEG", (40, 30))

    summary = json.loads((out / "annotate_summary.json").read_text())
    assert (summary["done"], summary["generated"], summary["already_done"], summary["selected"]) == (4, 4, 0, 5)
    assert summary["retries"] == {"http 429": 1, "http 500": 1}
    assert summary["malformed_replies"] == {"names category": 4, "not json": 1, "wrong count": 1}
    assert list(summary["failed"]) == ["img_04"]
    assert "step 1" in summary["failed"]["img_04"] and "names the category ('forest')" in summary["failed"]["img_04"]
    assert summary["ignored_files"] == ["notes.txt"] and summary["replies_received"] == 18

    split = out / "train"
    assert sorted(p.name for p in (split / "QAs").iterdir()) == [f"img_0{i}.json" for i in range(4)]
    assert sorted(p.name for p in (split / "images").iterdir()) == [f"img_0{i}.png" for i in range(4)]
    assert list((split / "labels").iterdir()) == []
    qa = json.loads((split / "QAs" / "img_00.json").read_text())
    assert qa["questions"][0] == VALID_QUESTIONS[0].replace("?", f" {tag('airport')}?")
    assert qa["questions"][1:] == VALID_QUESTIONS[1:6]  # VALID_QUESTIONS[0] is a near-duplicate of question 0
    assert qa["answer"] == [VALID_ANSWERS[0] + f" ({tag('airport')})", *VALID_ANSWERS[1:3]]
    assert (qa["category"], qa["vision"], qa["backend"], qa["model"]) == ("airport", True, "openai", "test-model")
    manifest = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [m["id"] for m in manifest] == ["img_00", "img_01", "img_02", "img_03"]
    assert manifest[1] == {"id": "img_01", "image": "train/images/img_01.png", "mask": None,
                           "questions": json.loads((split / "QAs" / "img_01.json").read_text())["questions"],
                           "answers": json.loads((split / "QAs" / "img_01.json").read_text())["answer"],
                           "task": "reasoning", "category": "harbor"}

    # A rerun pays nothing: done images are skipped, the failed one is replayed from the cache.
    with LoopbackServer(llm) as server:
        before = len(llm.log)
        code = georeason_main(annotate_args(tmp_path / "scenes", csv_path, out, server, "--max-retries", "2"))
    assert code == 1 and len(llm.log) == before
    summary = json.loads((out / "annotate_summary.json").read_text())
    assert (summary["already_done"], summary["generated"], summary["replies_from_cache"]) == (4, 0, 3)

    # Before the masks: `data check` reports each image as awaiting its label.
    from georeason.data.check import check_dataset
    from georeason.data.earthreason import EarthReason
    from georeason.data.jsonl import JsonlDataset
    from georeason.data.merge import merge_masks

    layout, reports = check_dataset(out)
    assert layout == "earthreason" and len(reports[0].problems) == 4
    assert all("no label" in problem for problem in reports[0].problems)

    # Masks drawn elsewhere, merged; then both loaders read the dataset and the check is clean.

    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(4):
        mask = np.zeros((30, 40), np.uint8)
        mask[5:10 + i, 3:20] = 7
        Image.fromarray(mask).save(masks / f"img_0{i}.png")
    merge_masks(out, masks, "train")
    dataset = EarthReason(out, "train", mode="eval")
    assert len(dataset) == 4
    sample = dataset[2]
    assert sample["category"] == "lake" and sample["question"] == VALID_QUESTIONS[0].replace("?", f" {tag('lake')}?")
    assert sample["mask"].sum() == (5 + 2) * 17  # rows 5..11, columns 3..19
    manifest = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert [m["mask"] for m in manifest] == [f"train/labels/img_0{i}.png" for i in range(4)]
    from_jsonl = JsonlDataset(out, "train", mode="eval")[2]
    assert from_jsonl["question"] == sample["question"] and (from_jsonl["mask"] == sample["mask"]).all()
    assert from_jsonl["answers"] == sample["answers"] and len(from_jsonl["answers"]) == 3
    for path in (out, out / "train.jsonl"):
        layout, reports = check_dataset(path)
        assert (reports[0].samples, reports[0].problems, reports[0].warnings) == (4, [], [])


def test_annotate_text_only_geotiff_metadata_timeout_and_link(tmp_path, monkeypatch):
    import rasterio
    from affine import Affine

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    with rasterio.open(scenes / "rmnp.tif", "w", driver="GTiff", width=24, height=16, count=3, dtype="uint16",
                       crs="EPSG:32613", transform=Affine(2.0, 0, 450000, 0, -2.0, 4450000)) as dst:
        dst.write(np.arange(3 * 16 * 24, dtype=np.uint16).reshape(3, 16, 24))
    (tmp_path / "cats.json").write_text(json.dumps({"rmnp": "lake"}))
    llm = ScriptedLLM(script={("lake", "expand_answers"): ["slow"]})
    out = tmp_path / "dataset"
    with LoopbackServer(llm) as server:
        args = annotate_args(scenes, tmp_path / "cats.json", out, server, "--no-vision", "--link", "--split", "val")
        args[args.index("--timeout") + 1] = "0.5"
        assert georeason_main(args) == 0
    step1 = llm.log[0]["payload"]["messages"][1]["content"]
    assert isinstance(step1, str) and "You cannot see the image" in step1
    assert "24 x 16 pixels" in step1 and "EPSG:32613" in step1 and "pixel size of 2 m" in step1
    summary = json.loads((out / "annotate_summary.json").read_text())
    assert summary["retries"] == {"timeout": 1} and summary["settings"]["vision"] is False
    assert json.loads((out / "val" / "QAs" / "rmnp.json").read_text())["vision"] is False
    linked = out / "val" / "images" / "rmnp.tif"
    assert linked.is_symlink() and linked.resolve() == (scenes / "rmnp.tif").resolve()
    assert json.loads((out / "val.jsonl").read_text())["image"] == "val/images/rmnp.tif"


def test_annotate_unauthorised_endpoint_stops_the_run(tmp_path, capsys):
    csv_path = make_images(tmp_path / "scenes", ["lake", "stadium"])
    llm = ScriptedLLM(always={("lake", "step1"): "401", ("stadium", "step1"): "401"})
    out = tmp_path / "dataset"
    with LoopbackServer(llm) as server:
        code = georeason_main(annotate_args(tmp_path / "scenes", csv_path, out, server, "--concurrency", "1"))
    assert code == 2
    assert len(llm.log) == 1  # the first 401 stops everything
    assert "answered 401" in capsys.readouterr().err
    summary = json.loads((out / "annotate_summary.json").read_text())
    assert "answered 401" in summary["stopped_by"] and summary["generated"] == 0


def test_annotate_reports_images_without_category_and_unreadable_images(tmp_path):
    csv_path = make_images(tmp_path / "scenes", ["lake", "stadium", "harbor"])
    (tmp_path / "scenes" / "broken.jpg").write_bytes(b"not a jpeg")
    csv_path.write_text("image,category\nimg_00.png,lake\nimg_01,stadium\nghost.png,airport\nbroken,bridge\n")
    llm = ScriptedLLM()
    with LoopbackServer(llm) as server:
        code = georeason_main(annotate_args(tmp_path / "scenes", csv_path, tmp_path / "ds", server))
    assert code == 1
    summary = json.loads((tmp_path / "ds" / "annotate_summary.json").read_text())
    assert summary["no_category"] == ["img_02.png"] and summary["categories_without_image"] == ["ghost.png"]
    assert summary["generated"] == 2 and len(llm.log) == 6
    assert summary["failed"]["broken"].startswith("cannot read the image:")


def test_annotate_resumes_after_sigkill_without_repeating_answered_requests(tmp_path):
    categories = ["airport", "harbor", "lake", "stadium", "bridge", "church"]
    csv_path = make_images(tmp_path / "scenes", categories)
    out = tmp_path / "dataset"
    llm = ScriptedLLM()
    llm.block_after = 8  # 8 answered requests, then the server hangs: the client is killed mid-run
    with LoopbackServer(llm) as server:
        command = [sys.executable, "-m", "georeason.cli",
                   *annotate_args(tmp_path / "scenes", csv_path, out, server, "--concurrency", "2")]
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 60
        while sum(r["status"] == "blocked" for r in llm.log) < 1:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the annotate run never reached the blocked request"
            time.sleep(0.05)
        time.sleep(0.5)  # let the other worker finish what it has received
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        first_run = list(llm.log)
        done_first = {p.stem for p in (out / "train" / "QAs").glob("*.json")}
        llm.block_after = None
        llm.release.set()
        time.sleep(0.2)
        answered_first = {r["key"] for r in first_run if r["status"] == 200}
        assert len(answered_first) == 8 and len(done_first) >= 2

        gone = subprocess.Popen([sys.executable, "-c", ""])
        gone.wait()  # a process id that no longer runs
        (out / "train" / "QAs" / f".img_05.json.tmp{gone.pid}").write_text("{half")  # as if killed mid-write
        start = len(llm.log)
        assert georeason_main(annotate_args(tmp_path / "scenes", csv_path, out, server, "--concurrency", "2")) == 0
    second_run = llm.log[start:]
    # Nothing answered before the kill is paid for again, and finished images are not touched.
    assert not answered_first & {r["key"] for r in second_run}
    done_categories = {categories[int(stem[-2:])] for stem in done_first}
    assert not done_categories & {r["category"] for r in second_run}
    summary = json.loads((out / "annotate_summary.json").read_text())
    assert summary["already_done"] == len(done_first) and summary["generated"] == 6 - len(done_first)
    assert summary["replies_from_cache"] == 8 - 3 * len(done_first)
    assert summary["replies_received"] == len(second_run) == 3 * 6 - 8
    assert len((out / "train.jsonl").read_text().splitlines()) == 6
    assert sorted(p.name for p in (out / "train" / "QAs").iterdir()) == [f"img_0{i}.json" for i in range(6)]
