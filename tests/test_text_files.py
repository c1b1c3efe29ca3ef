"""Text files people give georeason are read one way: UTF-8 with or without BOM, UTF-16/32 with BOM; bad bytes named."""

from __future__ import annotations

import codecs
import json
from argparse import Namespace
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from georeason.errors import GeoreasonError
from georeason.textfiles import decode_text, read_json_file

WORDS = "Où un hélicoptère peut-il atterrir ?"  # non-ASCII, so a wrong decoding shows
ENCODINGS = {
    "UTF-8": lambda text: text.encode("utf-8"),
    "UTF-8 with BOM (Notepad, Excel CSV)": lambda text: text.encode("utf-8-sig"),
    "UTF-16 LE with BOM (Windows 'Unicode')": lambda text: text.encode("utf-16"),
    "UTF-16 BE with BOM": lambda text: codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
    "UTF-32 with BOM": lambda text: text.encode("utf-32"),
}


@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_decode_text_accepts_every_marked_encoding(encoding):
    text = f"first line\r\n{WORDS}\n"
    assert decode_text(ENCODINGS[encoding](text), "f.txt") == text


def test_decode_text_names_file_line_and_bytes():
    data = f"line one\n{WORDS}\n".encode("cp1252")
    with pytest.raises(GeoreasonError) as error:
        decode_text(data, "pairs.jsonl")
    assert str(error.value) == "pairs.jsonl:2: not valid UTF-8 text (bytes f9 at character 2); save it as UTF-8"
    with pytest.raises(GeoreasonError, match="looks like UTF-16 without a byte order mark"):
        decode_text(WORDS.encode("utf-16-le"), "q.jsonl")
    with pytest.raises(GeoreasonError, match=r"q.jsonl:1: not valid UTF-16 text \(bytes 00 d8"):
        decode_text(codecs.BOM_UTF16_LE + b"a\x00\x00\xd8", "q.jsonl")  # a lone high surrogate


def test_read_json_file_names_line_and_column(tmp_path):
    (tmp_path / "c.json").write_bytes(codecs.BOM_UTF8 + b'{\n  "a": 1,\n}\n')
    with pytest.raises(GeoreasonError, match=r"--categories .*c.json:3:1: not valid JSON \(Expecting property name"):
        read_json_file(tmp_path / "c.json", "--categories")
    (tmp_path / "ok.json").write_bytes('{"a": "é"}'.encode("utf-16"))
    assert read_json_file(tmp_path / "ok.json") == {"a": "é"}


# -- every reader of a user's text file -------------------------------------------------------------
def _questions(folder: Path, encode) -> tuple[Path, object]:
    from georeason.predict import read_pairs

    path = folder / "pairs.jsonl"
    path.write_bytes(encode(json.dumps({"image": "a.tif", "question": WORDS}, ensure_ascii=False) + "\n"))
    return path, lambda: read_pairs(Namespace(question=None, images=[], questions=str(path)))[0][1]


def _jsonl_dataset(folder: Path, encode) -> tuple[Path, object]:
    from georeason.data.jsonl import scan_jsonl

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    path = folder / "train.jsonl"
    record = {"image": "a.png", "questions": [WORDS], "answers": []}
    path.write_bytes(encode(json.dumps(record, ensure_ascii=False) + "\n"))
    return path, lambda: scan_jsonl(folder, "train")[0][0].questions[0]


def _categories_csv(folder: Path, encode) -> tuple[Path, object]:
    from georeason.annotate.validate import load_categories

    path = folder / "categories.csv"
    path.write_bytes(encode(f"image,category\na.png,{WORDS}\n"))
    return path, lambda: load_categories(path)["a.png"]


def _categories_json(folder: Path, encode) -> tuple[Path, object]:
    from georeason.annotate.validate import load_categories

    path = folder / "categories.json"
    path.write_bytes(encode(json.dumps({"a.png": WORDS}, ensure_ascii=False)))
    return path, lambda: load_categories(path)["a.png"]


def _template(folder: Path, encode) -> tuple[Path, object]:
    from georeason.annotate.pipeline import load_prompts

    packaged = resources.files("georeason.annotate").joinpath("prompts.toml").read_text("utf-8")
    path = folder / "prompts.toml"
    path.write_bytes(encode(packaged.replace("You are a senior remote sensing analyst.", WORDS)))
    return path, lambda: WORDS if WORDS in load_prompts(path).system else load_prompts(path).system


def _manifest(folder: Path, encode) -> tuple[Path, object]:
    from georeason.data.merge import update_manifest_masks

    (folder / "train" / "labels").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "train" / "labels" / "a.png")
    path = folder / "train.jsonl"
    path.write_bytes(encode(json.dumps({"image": "train/images/a.png", "questions": [WORDS]},
                                       ensure_ascii=False) + "\n"))

    def read():
        assert update_manifest_masks(path, folder / "train") == 1
        record = json.loads(path.read_text(encoding="utf-8"))  # rewritten as UTF-8, the mask added
        assert record["mask"] == "train/labels/a.png"
        return record["questions"][0]
    return path, read


def _model_config(folder: Path, encode) -> tuple[Path, object]:
    from georeason.config import SegEarthConfig, preset

    path = folder / "config.json"
    path.write_bytes(encode(json.dumps({**preset("tiny").to_dict(), "preset": WORDS}, ensure_ascii=False)))
    return path, lambda: SegEarthConfig.load(path).preset


def _train_recipe(folder: Path, encode) -> tuple[Path, object]:
    from georeason.evaluate import trained_question

    path = folder / "train_recipe.json"
    path.write_bytes(encode(json.dumps({"text_blind": True, "blind_question": WORDS}, ensure_ascii=False)))
    return path, lambda: trained_question(folder)


READERS = {
    "predict --questions (JSONL of pairs)": _questions,
    "JSONL dataset manifest": _jsonl_dataset,
    "annotate --categories CSV": _categories_csv,
    "annotate --categories JSON": _categories_json,
    "annotate --template TOML": _template,
    "merge-masks manifest update": _manifest,
    "model config.json": _model_config,
    "model train_recipe.json": _train_recipe,
}


@pytest.mark.input_kind("text files", "UTF-8 with BOM, UTF-16 or UTF-32 with BOM (JSONL pairs, manifests, "
                        "category CSV/JSON, templates, configs)", "read as the same text as plain UTF-8")
@pytest.mark.parametrize("encoding", [name for name in ENCODINGS if name != "UTF-8"])
@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_accepts_bom_encodings(tmp_path, reader, encoding):
    _, read = READERS[reader](tmp_path, ENCODINGS[encoding])
    assert read() == WORDS


@pytest.mark.input_kind("text files", "bytes that are not UTF-8 (cp1252 / latin-1 text files)",
                        "refused with the file, line and bytes named; no internal error")
@pytest.mark.parametrize("reader", list(READERS))
def test_every_reader_names_the_file_and_line_of_bad_bytes(tmp_path, reader):
    path, read = READERS[reader](tmp_path, lambda text: text.encode("cp1252", errors="replace"))
    with pytest.raises(GeoreasonError) as error:
        read()
    message = str(error.value)
    assert f"{path.name}:" in message and "not valid UTF-8 text (bytes f9 at character" in message
