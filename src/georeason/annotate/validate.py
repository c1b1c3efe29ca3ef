"""Checks on what goes into and comes out of `georeason annotate`: categories file, model replies.

Implements the quality rules of the question/answer generation (paper Sec. 3.2, App. A.1): replies are JSON,
the step-1 question is implicit (never names its target class), the step-2 variations have the right count
and are de-duplicated (normalised text, then a token-overlap ratio for near-duplicates).
"""

from __future__ import annotations

import csv
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from georeason.errors import GeoreasonError
from georeason.textfiles import read_json_file, read_text_file

_PUNCTUATION = str.maketrans({c: " " for c in string.punctuation + "“”‘’–—"})


class MalformedReply(Exception):
    """A model reply that cannot be used.

    `reason` is one line and goes into the repair prompt and the failure report; `kind` is a fixed label
    (not json, wrong shape, wrong count, names category, duplicates) for the summary's counts.
    """

    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


@dataclass(frozen=True)
class ReplyRules:
    """The knobs of reply validation (from the [validation] table of prompts.toml)."""

    near_duplicate: float = 0.8
    generic_words: frozenset[str] = field(default_factory=frozenset)


# ---------------------------------------------------------------------------------------------- text helpers

def normalize_text(text: str) -> str:
    """Lower case, punctuation to spaces, whitespace collapsed: the form used for exact de-duplication."""
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def _singular(word: str) -> str:
    # Crude but predictable: "courts" -> "court", "churches" -> "church", "bus" stays "bus".
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def singular_words(text: str) -> list[str]:
    """The normalised words of a text, each singularised."""
    return [_singular(w) for w in normalize_text(text).split()]


def word_set(text: str) -> set[str]:
    """The singularised words of a text, as a set."""
    return set(singular_words(text))


def overlap_ratio(a: str, b: str) -> float:
    """Jaccard ratio of the two texts' word sets (1.0 = same words)."""
    wa, wb = word_set(a), word_set(b)
    if not wa and not wb:
        return 1.0
    return len(wa & wb) / len(wa | wb)


def distinct_texts(texts: list[str], near_duplicate: float) -> list[str]:
    """`texts` in order without exact (normalised) or near duplicates of an earlier kept text."""
    kept: list[str] = []
    for text in texts:
        if any(normalize_text(text) == normalize_text(k) or overlap_ratio(text, k) >= near_duplicate
               for k in kept):
            continue
        kept.append(text)
    return kept


def category_words(category: str, generic_words: frozenset[str]) -> set[str]:
    """The words of a category that a question must not contain (generic and 1-2 letter words excluded)."""
    return {w for w in word_set(category) if len(w) > 2 and w not in generic_words}


def named_category_word(question: str, category: str, rules: ReplyRules) -> str | None:
    """The first word of `category` that `question` uses (or the whole phrase), else None."""
    phrase = " ".join(singular_words(category))
    if phrase and f" {phrase} " in f" {' '.join(singular_words(question))} ":
        return category
    used = category_words(category, rules.generic_words) & word_set(question)
    return sorted(used)[0] if used else None


# ---------------------------------------------------------------------------------------------- replies

def extract_json(reply: str) -> Any:
    """The JSON value of a reply: the whole text, else the first JSON object or array found inside it."""
    text = reply.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, (dict, list)) and value:
            return value
    snippet = " ".join(text.split())[:80]
    raise MalformedReply(f"not valid JSON (reply starts {snippet!r})", "not json")


def _text_field(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MalformedReply(f"field {name!r} is not a non-empty string", "wrong shape")
    if re.fullmatch(r"<[^<>]*>|\.\.\.", value.strip()):
        # Small models copy the example of the prompt ("<version 1>") instead of writing text.
        raise MalformedReply(f"field {name!r} is the placeholder {value.strip()!r}, not text", "wrong shape")
    return " ".join(value.split())


def parse_step1(reply: str, category: str, rules: ReplyRules) -> tuple[str, str]:
    """(question, answer) of a step-1 reply `{"question": ..., "answer": ...}`; MalformedReply if unusable."""
    value = extract_json(reply)
    if not isinstance(value, dict) or "question" not in value or "answer" not in value:
        raise MalformedReply('expected a JSON object with keys "question" and "answer"', "wrong shape")
    question = _text_field(value["question"], "question")
    answer = _text_field(value["answer"], "answer")
    word = named_category_word(question, category, rules)
    if word is not None:
        raise MalformedReply(f"the question names the category ({word!r})", "names category")
    return question, answer


def parse_variations(reply: str, key: str, count: int, original: str, category: str | None,
                     rules: ReplyRules) -> list[str]:
    """`count` distinct texts: `original` first, then the reply's variations in order.

    The reply is `{key: [count strings]}` (a bare list is accepted). Variations that duplicate an earlier text or,
    when `category` is given, name it, are dropped; too few left is a MalformedReply.
    """
    value = extract_json(reply)
    if isinstance(value, dict):
        if key not in value:
            raise MalformedReply(f"expected a JSON object with key {key!r}", "wrong shape")
        value = value[key]
    if not isinstance(value, list):
        raise MalformedReply(f"{key!r} is not a list", "wrong shape")
    if len(value) != count:
        raise MalformedReply(f"expected {count} {key}, got {len(value)}", "wrong count")
    items = [_text_field(item, f"{key}[{i}]") for i, item in enumerate(value)]
    naming: list[str] = []
    if category is not None:
        naming = [f"{key}[{i}] names {w!r}" for i, item in enumerate(items)
                  if (w := named_category_word(item, category, rules)) is not None]
        items = [item for item in items if named_category_word(item, category, rules) is None]
    kept = distinct_texts([original] + items, rules.near_duplicate)
    if len(kept) < count:
        detail = "; ".join(naming) if naming else "the rest are duplicates or near-duplicates"
        raise MalformedReply(f"only {len(kept) - 1} usable distinct {key}, {count - 1} needed ({detail})",
                             "names category" if naming else "duplicates")
    return kept[:count]


# ---------------------------------------------------------------------------------------------- categories file

def load_categories(path: Path) -> dict[str, str]:
    """Image file name or stem -> scene category, from a CSV (`image,category` header) or JSON file.

    JSON: either an object `{"img.jpg": "lake", ...}` or a list of `{"image": ..., "category": ...}` objects.
    """
    if not path.is_file():
        raise GeoreasonError(f"--categories: file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".json":
        pairs = _categories_from_json(path)
    elif suffix in (".csv", ".tsv", ".txt"):
        pairs = _categories_from_csv(path)
    else:
        raise GeoreasonError(f"--categories: {path} must be a .csv or .json file (got {suffix or 'no suffix'!r})")
    categories: dict[str, str] = {}
    for where, image, category in pairs:
        image, category = str(image).strip(), " ".join(str(category).split())
        if not image or not category:
            raise GeoreasonError(f"--categories: {path} {where}: expected a non-empty image name and category")
        if image in categories and categories[image] != category:
            raise GeoreasonError(f"--categories: {path} {where}: image {image!r} is listed twice with different "
                                 f"categories ({categories[image]!r} and {category!r})")
        categories[image] = category
    return categories


def _categories_from_json(path: Path) -> list[tuple[str, Any, Any]]:
    data = read_json_file(path, "--categories")
    if isinstance(data, dict):
        return [(f"key {k!r}", k, v) for k, v in data.items()]
    if isinstance(data, list) and all(isinstance(r, dict) and {"image", "category"} <= r.keys() for r in data):
        return [(f"item {i}", r["image"], r["category"]) for i, r in enumerate(data)]
    raise GeoreasonError(f"--categories: {path} must hold an object {{image: category}} or a list of "
                         '{"image": ..., "category": ...} objects')


def _categories_from_csv(path: Path) -> list[tuple[str, Any, Any]]:
    text = read_text_file(path, "--categories")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["image", "category"]:
        raise GeoreasonError(f"--categories: {path} must start with the header line 'image,category'")
    pairs = []
    for line_number, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) < 2:
            raise GeoreasonError(f"--categories: {path} line {line_number}: expected 'image,category'")
        pairs.append((f"line {line_number}", row[0], row[1]))
    return pairs


def category_for(image: Path, categories: dict[str, str]) -> str | None:
    """The category of an image, looked up by file name first, then by stem."""
    return categories.get(image.name, categories.get(image.stem))
