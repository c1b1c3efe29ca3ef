"""Hub ids as models (georeason.model.hub) against a loopback stand-in for the Hugging Face hub.

The stand-in (tests/_hub_server.py) serves a tiny released-format repository built from the fixture set
official-tiny-A; HF_ENDPOINT points at it and HF_HOME at a temporary folder, so the real
huggingface_hub download code runs: first call downloads and converts, later calls use the caches.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from georeason.cli import main
from georeason.errors import GeoreasonError
from georeason.model.convert import convert_released_folder
from georeason.model.hub import resolve_model
from tests._hub_server import HubStandIn, Repo, repo_from_folder

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RELEASED_A = FIXTURES / "official-tiny-A" / "model"
RELEASED_B = FIXTURES / "official-tiny-B" / "model"
IMAGE = FIXTURES / "official-tiny-A" / "inputs" / "raw.png"
REPO = "earth-insights/SegEarth-R1-EarthReason"
SOURCE_CARD = b"---\nlicense: apache-2.0\n---\n\n# SegEarth-R1 trained on EarthReason\n"
QUESTION = "Where could people gather safely after an earthquake?"
ROOT = Path(__file__).resolve().parents[1]


def released_repo() -> Repo:
    return repo_from_folder(RELEASED_A, {"README.md": SOURCE_CARD})


def hub_environment(endpoint: str, home: Path, offline: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_")) and k not in ("GEOREASON_CACHE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_IMPLICIT_TOKEN="1", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_OFFLINE=str(int(offline)))
    return env


@pytest.fixture
def hub_env():
    """Set huggingface_hub's environment in this process (it reads it at import: reload its constants)."""
    import huggingface_hub.constants as constants

    saved = dict(os.environ)

    def apply(endpoint: str, home: Path, offline: bool = False) -> None:
        os.environ.clear()
        os.environ.update(hub_environment(endpoint, home, offline))
        importlib.reload(constants)

    yield apply
    os.environ.clear()
    os.environ.update(saved)
    importlib.reload(constants)


def predict_cli(model: str, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**env, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "georeason.cli", "predict", "--model", model, str(IMAGE),
                           "--question", QUESTION, "--out", str(out), "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=600)


def assert_same_weights(a: Path, b: Path) -> None:
    """Same tensors bit for bit, same dtypes, same metadata (safetensors orders metadata keys arbitrarily,
    so the files' bytes may differ)."""
    from safetensors import safe_open

    first, second = load_file(str(a)), load_file(str(b))
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert tensor.dtype == second[name].dtype and torch.equal(tensor, second[name]), name
    with safe_open(str(a), "pt") as x, safe_open(str(b), "pt") as y:
        assert x.metadata() == y.metadata()


def mask_and_answer(out: Path) -> tuple[bytes, str]:
    summary = json.loads((out / "summary.json").read_text())
    entry = summary["inputs"][0]
    assert entry["status"] == "ok", entry
    return (out / "raw.mask.png").read_bytes(), entry["answer"]


@pytest.mark.slow
@pytest.mark.input_kind("runs", "hub id as --model (the authors' released layout)",
                        "downloaded through huggingface_hub, converted once, cached by repository and commit; "
                        "later runs need no network; predictions equal georeason convert + the local folder")
def test_hub_id_downloads_and_converts_once_then_runs_without_network(tmp_path):
    home = tmp_path / "hf-home"
    with HubStandIn({REPO: released_repo()}) as hub:
        env = hub_environment(hub.endpoint, home)
        first = predict_cli(REPO, tmp_path / "first", env)
        assert first.returncode == 0, first.stderr
        assert f"converting {REPO}" in first.stderr
        assert len(hub.gets("/model.safetensors")) == 1
    commit = released_repo().commit
    converted = home / "georeason" / "converted" / "earth-insights--SegEarth-R1-EarthReason" / commit
    assert sorted(p.name for p in converted.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                           "tokenizer.json", "tokenizer_config.json"]
    card = (converted / "README.md").read_text()
    assert f"Weights from {REPO} at commit `{commit}`" in card and "license: apache-2.0" in card
    assert "| cIoU | 64.13 | 68.25 |" in card and "| gIoU | 68.60 | 70.75 |" in card and "Table 2" in card
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert summary["model"]["source"] == f"{REPO}@{commit}" and summary["model"]["folder"] == str(converted)

    # The server is gone: the second run resolves main from the cache and skips the conversion.
    second = predict_cli(REPO, tmp_path / "second", env)
    assert second.returncode == 0, second.stderr
    assert "converting" not in second.stderr
    assert mask_and_answer(tmp_path / "second") == mask_and_answer(tmp_path / "first")

    # `georeason convert` + the local folder predicts exactly the same.
    assert main(["convert", str(RELEASED_A), str(tmp_path / "local")]) == 0
    assert main(["predict", "--model", str(tmp_path / "local"), str(IMAGE), "--question", QUESTION,
                 "--out", str(tmp_path / "local-out"), "--no-progress"]) == 0
    assert mask_and_answer(tmp_path / "local-out") == mask_and_answer(tmp_path / "first")
    assert (tmp_path / "local" / "config.json").read_bytes() == (converted / "config.json").read_bytes()
    assert_same_weights(tmp_path / "local" / "model.safetensors", converted / "model.safetensors")


@pytest.mark.input_kind("runs", "hub id with HF_HUB_OFFLINE=1 and nothing cached",
                        "one-line error naming the repository and what to do; nothing written")
def test_offline_without_cache_fails_in_one_line(tmp_path):
    env = hub_environment("http://127.0.0.1:9", tmp_path / "empty-home", offline=True)
    result = predict_cli(REPO, tmp_path / "out", env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == (f"georeason predict: error: {REPO}: not in the local cache and HF_HUB_OFFLINE is set; "
                         "run once with network access, or pass a local model folder"), result.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_repository_or_revision_fails_clearly(tmp_path, hub_env):
    with HubStandIn({REPO: released_repo()}) as hub:
        hub_env(hub.endpoint, tmp_path / "home")
        with pytest.raises(GeoreasonError, match=rf"^someone/nothing: no such local folder, and no model repository "
                                                 rf"'someone/nothing' on {hub.endpoint} \(a private one needs a token"):
            resolve_model("someone/nothing")
        with pytest.raises(GeoreasonError, match=rf"^{REPO}@v9: the repository has no revision 'v9' \(--revision"):
            resolve_model(REPO, revision="v9")
    with pytest.raises(GeoreasonError, match="--revision v1: applies to hub ids"):
        resolve_model(tmp_path, revision="v1")


@pytest.mark.input_kind("runs", "hub id of a repository that is not SegEarth-R1",
                        "refused by its config.json before any weights are downloaded; a llava_phi repository "
                        "with other tensors is refused naming them, and nothing is converted")
def test_repository_that_is_not_segearth_fails_clearly(tmp_path, hub_env):
    bert = Repo({"config.json": json.dumps({"model_type": "bert", "hidden_size": 8}).encode(),
                 "model.safetensors": b"not read"})
    released = released_repo()
    state = load_file(str(RELEASED_A / "model.safetensors"))
    from safetensors.torch import save as save_bytes

    psalm = Repo({"config.json": released.files["config.json"],
                  "model.safetensors": save_bytes({k: v for k, v in state.items() if not k.startswith("d_layers.")})})
    nothing = Repo({"weights.bin": b"x"})
    with HubStandIn({"someone/bert": bert, "someone/psalm": psalm, "someone/empty": nothing}) as hub:
        hub_env(hub.endpoint, tmp_path / "home")
        with pytest.raises(GeoreasonError, match=r"^someone/bert: not a SegEarth-R1 model \(config.json describes "
                                                 r"bert model type\); expected the authors' released checkpoint"):
            resolve_model("someone/bert")
        assert hub.gets("/model.safetensors") == []
        with pytest.raises(GeoreasonError, match=r"^someone/psalm: released checkpoint lacks tensor "
                                                 r"'d_layers.layers.0.0.to_q.weight'; is this a SegEarth-R1"):
            resolve_model("someone/psalm")
        with pytest.raises(GeoreasonError, match=r"^someone/empty: the repository has no config.json: not a "
                                                 r"SegEarth-R1 model"):
            resolve_model("someone/empty")
    converted = tmp_path / "home" / "georeason" / "converted" / "someone--psalm"
    assert not converted.exists() or not any(converted.iterdir())


@pytest.mark.input_kind("runs", "hub download cut halfway",
                        "huggingface_hub resumes it with a Range request; a download that keeps failing stops "
                        "with a one-line error, keeps nothing half-written, and the next run completes")
def test_cut_download_resumes_and_a_failing_one_fails_clearly(tmp_path, hub_env):
    weights = released_repo().files["model.safetensors"]
    reference = tmp_path / "reference"
    convert_released_folder(RELEASED_A, reference)
    converted_root = tmp_path / "home" / "georeason" / "converted" / "earth-insights--SegEarth-R1-EarthReason"
    with HubStandIn({REPO: released_repo()}) as hub:
        hub_env(hub.endpoint, tmp_path / "home")
        hub.cut_always.add("model.safetensors")
        with pytest.raises(GeoreasonError, match=rf"^{REPO}: the download was interrupted \(.*\); run the command "
                                                 r"again to retry"):
            resolve_model(REPO)
        assert not converted_root.exists() or not any(converted_root.iterdir())
        blobs = tmp_path / "home" / "hub" / "models--earth-insights--SegEarth-R1-EarthReason" / "blobs"
        assert all(p.stat().st_size != len(weights) for p in blobs.iterdir())

        hub.cut_always.clear()
        hub.cut_once["model.safetensors"] = len(weights) - 1_000_000  # past huggingface_hub's 10 MB read size
        folder = resolve_model(REPO)
        ranges = [r for r in hub.gets("/model.safetensors") if r]
        assert ranges and int(ranges[0].split("=")[1].rstrip("-")) > 0, hub.gets("/model.safetensors")
    assert_same_weights(folder / "model.safetensors", reference / "model.safetensors")
    assert not [p for p in converted_root.iterdir() if p.name.startswith(".")]

    # Offline, even with huggingface_hub's copy of the original deleted, the converted folder is found.
    import shutil

    shutil.rmtree(tmp_path / "home" / "hub")
    hub_env("http://127.0.0.1:9", tmp_path / "home", offline=True)
    assert resolve_model(REPO) == folder


@pytest.mark.input_kind("runs", "disk full while converting a hub model",
                        "one-line error naming the repository and GEOREASON_CACHE; no partial folder is left or "
                        "ever loaded; the next run converts")
def test_full_disk_during_conversion_keeps_nothing(tmp_path, hub_env, monkeypatch):
    import shutil

    from safetensors import SafetensorError

    import safetensors.torch

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    converted_root = tmp_path / "home" / "georeason" / "converted" / "earth-insights--SegEarth-R1-EarthReason"
    with HubStandIn({REPO: released_repo()}) as hub:
        hub_env(hub.endpoint, tmp_path / "home")
        with monkeypatch.context() as patch:
            patch.setattr(safetensors.torch, "save_file", full_disk)
            with pytest.raises(GeoreasonError, match=rf"^{REPO}: no space left on the disk of {converted_root} while "
                                                     r"converting; nothing was kept.*GEOREASON_CACHE"):
                resolve_model(REPO)
        assert not converted_root.exists() or list(converted_root.iterdir()) == []
        usage = shutil.disk_usage(tmp_path)
        with monkeypatch.context() as patch:
            patch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
            with pytest.raises(GeoreasonError, match=rf"^{REPO}: converting needs 0.0 GB in {converted_root}, which "
                                                     r"has 0.0 GB free"):
                resolve_model(REPO)
        folder = resolve_model(REPO)
    assert sorted(p.name for p in converted_root.iterdir()) == [folder.name, "refs"]


@pytest.mark.input_kind("runs", "hub id of a folder written by georeason",
                        "used from huggingface_hub's cache as is, no conversion; --revision takes a commit hash")
def test_georeason_folder_on_the_hub_loads_directly(tmp_path, hub_env):
    from georeason.reasoner import GeoReasoner

    ours = tmp_path / "ours"
    convert_released_folder(RELEASED_B, ours)
    repo = repo_from_folder(ours)
    with HubStandIn({"someone/georeason-tiny": repo}) as hub:
        hub_env(hub.endpoint, tmp_path / "home")
        folder = resolve_model("someone/georeason-tiny", revision=repo.commit)
        assert folder.parent.name == "snapshots" and folder.name == repo.commit
        assert not (tmp_path / "home" / "georeason").exists()
        reasoner = GeoReasoner.from_pretrained("someone/georeason-tiny")
    assert reasoner.info()["source"] == f"someone/georeason-tiny@{repo.commit}"
    local = GeoReasoner.from_pretrained(ours)
    assert reasoner.fingerprint()["model_sha256"] == local.fingerprint()["model_sha256"]
    for name, tensor in local.model.state_dict().items():
        assert torch.equal(tensor, reasoner.model.state_dict()[name]), name
