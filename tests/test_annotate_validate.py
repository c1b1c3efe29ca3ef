"""Reply parsing, de-duplication, category checks, categories files and the template file of `annotate`."""

from __future__ import annotations

import json

import pytest

from georeason.annotate.pipeline import load_prompts
from georeason.annotate.validate import (
    MalformedReply, ReplyRules, category_for, distinct_texts, extract_json, load_categories,
    named_category_word, normalize_text, overlap_ratio, parse_step1, parse_variations,
)
from georeason.errors import GeoreasonError

RULES = ReplyRules(near_duplicate=0.8, generic_words=frozenset({"land", "area"}))


def test_extract_json_whole_text_fenced_and_embedded():
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('```json\n{"questions": ["x"]}\n```') == {"questions": ["x"]}
    assert extract_json('Sure! Here it is: {"q": "a {b}"} and more {"c": 2}') == {"q": "a {b}"}
    assert extract_json('1. first\n2. ["second"] {broken') == ["second"]
    with pytest.raises(MalformedReply, match="not valid JSON") as problem:
        extract_json("Here is a lovely question about lakes.")
    assert problem.value.kind == "not json"


def test_normalisation_and_near_duplicates():
    assert normalize_text("  Where, exactly, is it?! ") == "where exactly is it"
    assert overlap_ratio("Which courts?", "which court") == 1.0  # case, punctuation and plural ignored
    texts = ["Where can people gather safely?", "where can people gather safely", "Where can the people gather safely?",
             "Which open ground suits a crowd after a quake?"]
    # Exact duplicate after normalisation, then a near duplicate (5 of 6 words shared: ratio 0.83).
    assert distinct_texts(texts, 0.8) == [texts[0], texts[3]]
    assert distinct_texts(texts, 0.9) == [texts[0], texts[2], texts[3]]


def test_category_words_are_detected_with_plurals_and_generic_words_allowed():
    assert named_category_word("Where are the tennis courts?", "tennis court", RULES) == "tennis court"
    assert named_category_word("Which courts could host a match?", "tennis court", RULES) == "court"
    assert named_category_word("Which land is unused?", "bare land", RULES) is None  # "land" is generic
    assert named_category_word("Where is the bare land?", "bare land", RULES) == "bare land"
    assert named_category_word("Where could boats shelter?", "harbor", RULES) is None
    assert named_category_word("Which churches are old?", "church", RULES) == "church"


def test_parse_step1_accepts_a_good_reply_and_rejects_bad_ones():
    good = json.dumps({"question": "Where could  boats shelter from a storm?", "answer": "The basin on the left."})
    assert parse_step1(good, "harbor", RULES) == ("Where could boats shelter from a storm?", "The basin on the left.")
    cases = [("no json here", "not json"), ('{"question": "x"}', "wrong shape"),
             ('{"question": "", "answer": "a"}', "wrong shape"),
             ('{"question": "Where is the harbor?", "answer": "a"}', "names category"),
             ('{"question": "<the question>", "answer": "<the answer>"}', "wrong shape")]
    for reply, kind in cases:
        with pytest.raises(MalformedReply) as problem:
            parse_step1(reply, "harbor", RULES)
        assert problem.value.kind == kind, reply


def test_parse_variations_keeps_the_original_first_and_drops_duplicates_and_naming_items():
    original = "Where could boats shelter from a storm?"
    items = ["Which calm water protects vessels in bad weather?", "Where might ships hide when gales arrive?",
             "Where could boats shelter from a storm?",  # duplicate of the original: dropped
             "Which harbor is safest?",  # names the category: dropped
             "What sheltered basin would a captain choose?", "Where do fishing crews wait out rough seas?"]
    reply = json.dumps({"questions": items})
    with pytest.raises(MalformedReply, match=r"only 4 usable distinct questions, 5 needed .*names 'harbor'") as p:
        parse_variations(reply, "questions", 6, original, "harbor", RULES)
    assert p.value.kind == "names category"
    five = json.dumps(items[:2] + items[4:] + ["Where might a sailor tie up before a squall?"])
    assert parse_variations(five, "questions", 5, original, "harbor", RULES) == [original, *items[:2], *items[4:]]
    with pytest.raises(MalformedReply, match="expected 6 questions, got 5") as p:
        parse_variations(five, "questions", 6, original, "harbor", RULES)
    assert p.value.kind == "wrong count"
    with pytest.raises(MalformedReply, match="key 'answers'"):
        parse_variations('{"questions": []}', "answers", 3, "a", None, RULES)
    dupes = json.dumps({"answers": ["The basin.", "the basin", "The basin!"]})
    with pytest.raises(MalformedReply, match="duplicates") as p:
        parse_variations(dupes, "answers", 3, "The basin on the left.", None, RULES)
    assert p.value.kind == "duplicates"


def test_load_categories_csv_and_json_forms(tmp_path):
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("image,category\nA.jpg,  tennis   court \nB,lake\n\n")
    assert load_categories(csv_path) == {"A.jpg": "tennis court", "B": "lake"}
    mapping = tmp_path / "m.json"
    mapping.write_text(json.dumps({"A.jpg": "lake"}))
    assert load_categories(mapping) == {"A.jpg": "lake"}
    listing = tmp_path / "l.json"
    listing.write_text(json.dumps([{"image": "A", "category": "lake"}, {"image": "B.png", "category": "stadium"}]))
    categories = load_categories(listing)
    assert categories == {"A": "lake", "B.png": "stadium"}
    from pathlib import Path

    assert category_for(Path("x/A.tif"), categories) == "lake"  # by stem
    assert category_for(Path("x/B.png"), categories) == "stadium"  # by name
    assert category_for(Path("x/B.jpg"), categories) is None  # "B.png" is not the stem "B"


@pytest.mark.parametrize("name, text, message", [
    ("c.csv", "file,label\na,b\n", "must start with the header line 'image,category'"),
    ("c.csv", "image,category\na.jpg\n", r"line 2: expected 'image,category'"),
    ("c.csv", "image,category\na.jpg,lake\na.jpg,stadium\n", "listed twice with different categories"),
    ("c.json", "[1, 2]", "must hold an object"),
    ("c.json", "{broken", "not valid JSON"),
    ("c.json", '{"a.jpg": ""}', "key 'a.jpg': expected a non-empty image name and category"),
    ("c.yaml", "a: b", "must be a .csv or .json file"),
])
def test_load_categories_errors_name_the_file_and_the_problem(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(GeoreasonError, match=message):
        load_categories(path)
    with pytest.raises(GeoreasonError, match="does not exist"):
        load_categories(tmp_path / "missing.csv")


def test_packaged_template_loads_and_bad_templates_are_refused(tmp_path):
    prompts = load_prompts()
    assert (prompts.n_questions, prompts.n_answers) == (6, 3)
    assert "$category" in prompts.step1_vision and "$question" in prompts.expand_questions
    assert prompts.fill(prompts.repair, reason="not valid JSON").startswith("That reply could not be used: not valid")
    from importlib import resources

    original = resources.files("georeason.annotate").joinpath("prompts.toml").read_text("utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text(original.replace("$question", "$questoin"))
    with pytest.raises(GeoreasonError, match=r"\[expand_questions\] user uses the unknown placeholder \$questoin"):
        load_prompts(bad)
    bad.write_text(original.replace("questions = 6", 'questions = "six"'))
    with pytest.raises(GeoreasonError, match=r"\[output\] questions must be a int"):
        load_prompts(bad)
    bad.write_text("[persona\n")
    with pytest.raises(GeoreasonError, match="not valid TOML"):
        load_prompts(bad)
