"""Hugging Face hub ids wherever a model folder is accepted: download, detect the layout, convert once.

`resolve_model("earth-insights/SegEarth-R1-EarthReason")` returns a local georeason model folder. All
transfers go through huggingface_hub (its cache, HF_HOME, HF_HUB_OFFLINE, HF_ENDPOINT, tokens, retries).
A georeason folder on the hub is used from that cache as is; the authors' released layout is converted
once (convert.py) into $GEOREASON_CACHE (default $HF_HOME/georeason), keyed by repository and commit.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import sys
from pathlib import Path

from georeason.errors import GeoreasonError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Files a model needs, in either layout; pickles (.bin, .pt) and other frameworks' weights are not fetched.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.md"]
RELEASED_MODEL_TYPES = {"llava_phi"}
RELEASED_ARCHITECTURES = {"segearth_r1"}


def is_hub_id(model: object) -> bool:
    """True for an "owner/name" string that is not an existing local path (Path objects are always local)."""
    return isinstance(model, str) and bool(HUB_ID.match(model)) and not Path(model).exists()


def resolve_model(model: str | os.PathLike[str], revision: str | None = None) -> Path:
    """A local model folder for `model`: itself when it is a path, else the hub repository's folder.

    `revision` (branch, tag or commit hash) applies to hub ids only. Hub errors, offline mode without a
    cached copy, interrupted downloads and failed conversions raise a one-line GeoreasonError naming the
    repository and what to do.
    """
    if not is_hub_id(model):
        if revision is not None:
            raise GeoreasonError(f"--revision {revision}: applies to hub ids (owner/name); {model} is a local path")
        return Path(model)
    return HubModel(str(model), revision).folder()


def cache_root() -> Path:
    from huggingface_hub import constants

    return Path(os.environ.get("GEOREASON_CACHE") or Path(constants.HF_HOME) / "georeason")


def detect_layout(config: object) -> str | None:
    """"georeason" (a folder written by save_pretrained / convert), "released" (the authors' layout) or None."""
    if not isinstance(config, dict):
        return None
    if isinstance(config.get("encoder"), dict) and isinstance(config.get("llm"), dict) and "format_version" in config:
        return "georeason"
    architectures = config.get("architectures") or []
    if config.get("model_type") in RELEASED_MODEL_TYPES or RELEASED_ARCHITECTURES & set(architectures):
        return "released"
    return None


class HubModel:
    """One repository at one revision, resolved to a local georeason folder."""

    def __init__(self, repo_id: str, revision: str | None = None) -> None:
        self.repo_id = repo_id
        self.revision = revision or "main"
        self.label = repo_id if revision is None else f"{repo_id}@{revision}"
        self.converted_root = cache_root() / "converted" / repo_id.replace("/", "--")

    def folder(self) -> Path:
        if COMMIT.match(self.revision) and (self.converted_root / self.revision).is_dir():
            return self.converted_root / self.revision  # an immutable commit already converted: no network
        try:
            config_path = Path(self._call(_hub_download, self.repo_id, "config.json", self.revision))
        except _Unreachable:
            cached = self._converted_by_ref()
            if cached is None:
                raise
            return cached
        commit = config_path.parent.name  # huggingface_hub's cache: snapshots/<commit>/config.json
        try:
            config = json.loads(config_path.read_text())
        except ValueError as error:
            raise GeoreasonError(f"{self.label}: config.json is not valid JSON ({error}); not a SegEarth-R1 "
                                 "model") from None
        layout = detect_layout(config)
        if layout is None:
            kind = config.get("model_type") if isinstance(config, dict) else None
            raise GeoreasonError(
                f"{self.label}: not a SegEarth-R1 model (config.json describes {kind or 'no'} model type); expected "
                "the authors' released checkpoint (llava_phi) or a folder written by georeason")
        if layout == "georeason":
            return Path(self._call(_snapshot, self.repo_id, commit))
        target = self.converted_root / commit
        if not target.is_dir():
            snapshot = Path(self._call(_snapshot, self.repo_id, commit))
            self._convert(snapshot, target, commit)
        self._write_ref(commit)
        return target

    # -- conversion cache -----------------------------------------------------------------------
    def _convert(self, snapshot: Path, target: Path, commit: str) -> None:
        from georeason.model.card import Provenance
        from georeason.model.convert import conversion_note, convert_released_folder

        print(f"georeason: converting {self.repo_id} (commit {commit[:12]}, the authors' released layout) once "
              f"into {target}", file=sys.stderr)
        provenance = Provenance(source=self.repo_id, revision=commit, licence=_source_licence(snapshot),
                                how=conversion_note())
        try:
            parameters, note = convert_released_folder(snapshot, target, provenance, label=self.label)
        except OSError as error:
            if target.is_dir():
                return  # another process converted the same commit meanwhile: its folder is complete
            if error.errno == errno.ENOSPC:
                raise GeoreasonError(
                    f"{self.label}: no space left on the disk of {target.parent} while converting; nothing was "
                    "kept. Free space (the converted folder is about as large as the download) or set "
                    "GEOREASON_CACHE to a folder on a larger disk") from None
            raise GeoreasonError(f"{self.label}: cannot write the converted model into {target.parent} "
                                 f"({error.strerror or error}); nothing was kept") from None
        print(f"georeason: converted {self.repo_id}: {parameters:,} parameters ({note})", file=sys.stderr)

    def _ref_path(self) -> Path:
        return self.converted_root / "refs" / self.revision.replace("/", "--")

    def _write_ref(self, commit: str) -> None:
        # Lets an offline run find the converted folder even after the original download was deleted.
        path = self._ref_path()
        if path.is_file() and path.read_text() == commit:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(commit)
        os.replace(temporary, path)

    def _converted_by_ref(self) -> Path | None:
        path = self._ref_path()
        commit = path.read_text().strip() if path.is_file() else self.revision
        target = self.converted_root / commit
        return target if COMMIT.match(commit) and target.is_dir() else None

    # -- huggingface_hub calls with one-line errors ----------------------------------------------
    def _call(self, function, *args):
        from huggingface_hub import constants, errors

        offline = constants.HF_HUB_OFFLINE
        endpoint = constants.ENDPOINT
        try:
            return function(*args)
        except errors.GatedRepoError:
            raise GeoreasonError(f"{self.label}: a gated repository; accept its terms on {endpoint}/{self.repo_id} "
                                 "and log in (`hf auth login` or HF_TOKEN)") from None
        except errors.RepositoryNotFoundError:
            raise GeoreasonError(
                f"{self.label}: no such local folder, and no model repository {self.repo_id!r} on {endpoint} "
                "(a private one needs a token: `hf auth login` or HF_TOKEN)") from None
        except errors.RevisionNotFoundError:
            raise GeoreasonError(f"{self.label}: the repository has no revision {self.revision!r} (--revision takes "
                                 "a branch, a tag or a commit hash)") from None
        except (errors.LocalEntryNotFoundError, _offline_error()) as error:
            if offline:
                raise _Unreachable(f"{self.label}: not in the local cache and HF_HUB_OFFLINE is set; run once with "
                                   "network access, or pass a local model folder") from None
            raise _Unreachable(f"{self.label}: cannot reach {endpoint} and no complete cached copy "
                               f"({_first_line(error)}); check the network or HF_ENDPOINT and run again") from None
        except _remote_entry_error():
            raise GeoreasonError(f"{self.label}: the repository has no config.json: not a SegEarth-R1 model "
                                 "(expected the authors' released checkpoint or a folder written by georeason)") \
                from None
        except errors.HfHubHTTPError as error:
            raise GeoreasonError(f"{self.label}: the hub at {endpoint} answered {_first_line(error)}; "
                                 "run again later") from None
        except (_transport_errors() + (OSError,)) as error:
            raise GeoreasonError(
                f"{self.label}: the download was interrupted ({_first_line(error)}); run the command again to retry "
                "(files already complete stay in the Hugging Face cache)") from None


class _Unreachable(GeoreasonError):
    """The hub could not be asked (offline or unreachable) and huggingface_hub's cache has no copy."""


def _hub_download(repo_id: str, filename: str, revision: str) -> str:
    from huggingface_hub import hf_hub_download

    return hf_hub_download(repo_id, filename, revision=revision)


def _snapshot(repo_id: str, commit: str) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(repo_id, revision=commit, allow_patterns=ALLOW_PATTERNS)


def _source_licence(snapshot: Path) -> str | None:
    """The `license` of the source repository's model card, when it has one."""
    from huggingface_hub import ModelCard

    readme = snapshot / "README.md"
    if not readme.is_file():
        return None
    try:
        return ModelCard.load(readme).data.license
    except Exception:  # a card without valid front matter states no licence
        return None


def _remote_entry_error() -> type[Exception]:
    from huggingface_hub import errors

    return getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)


def _offline_error() -> type[Exception]:
    from huggingface_hub import errors

    return getattr(errors, "OfflineModeIsEnabled", errors.LocalEntryNotFoundError)


def _transport_errors() -> tuple[type[Exception], ...]:
    """The HTTP client's network errors (huggingface_hub 1.x uses httpx, 2.x httpx2)."""
    found = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
