"""Catalogue inputs of `georeason batch` (folders, globs, lists, STAC) and its refusals before any Ray work."""

from __future__ import annotations

import json

import numpy as np
import pystac
import pytest

from georeason.batch.inputs import gdal_source, plan_pairs, read_question_pairs, read_scenes
from georeason.cli import main
from georeason.errors import GeoreasonError
from tests._geo_fixtures import write_geotiff

QUESTION = "Which area could be used to land a small plane?"


def _rasters(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    return [write_geotiff(folder / name, np.full((3, 8, 8), 100, np.uint8)) for name in names]


def _item(item_id, assets):
    item = pystac.Item(item_id, {"type": "Point", "coordinates": [15.0, 36.0]}, [15.0, 36.0, 15.0, 36.0],
                       __import__("datetime").datetime(2026, 1, 1), {})
    for key, href in assets.items():
        item.add_asset(key, pystac.Asset(href, media_type=pystac.MediaType.COG))
    return item


@pytest.mark.input_kind("runs", "batch inputs: folder, glob, text list of paths and URLs, repeated entries",
                        "scenes listed in order, each once; list paths relative to the list; URLs as /vsicurl/, "
                        "/vsis3/ names")
def test_folder_glob_list_and_urls(tmp_path):
    a, b = _rasters(tmp_path / "scenes", ["a.tif", "b.tif"])
    (tmp_path / "scenes" / "notes.txt").write_text("not a raster")
    assert [s.source for s in read_scenes([str(tmp_path / "scenes")])] == [str(a), str(b)]
    assert [s.source for s in read_scenes([str(tmp_path / "scenes" / "*.tif"), str(a)])] == [str(a), str(b)]
    listing = tmp_path / "list.txt"
    listing.write_text("# my scenes\nscenes/b.tif\n\nhttps://example.org/c/scene.tif\ns3://bucket/d.tif\n")
    scenes = read_scenes([str(listing)])
    assert [s.source for s in scenes] == [str(tmp_path / "scenes" / "b.tif"),
                                          "/vsicurl/https://example.org/c/scene.tif", "/vsis3/bucket/d.tif"]
    assert [s.stem for s in scenes] == ["b", "scene", "d"] and scenes[0].origin == f"{listing}:2"
    assert gdal_source("/vsicurl/https://x/y.tif") == "/vsicurl/https://x/y.tif"


@pytest.mark.input_kind("runs", "STAC ItemCollection, Catalog or Item with several assets per item",
                        "--asset KEY chooses the asset (local relative hrefs resolved against the file); outputs "
                        "named by item id; an item lacking the asset fails alone; no --asset with several is refused")
def test_stac_item_collection_catalog_and_asset_key(tmp_path):
    _rasters(tmp_path / "data", ["one_visual.tif", "one_thumb.tif", "two_visual.tif"])
    items = [_item("S2A_33SVB_1", {"visual": "data/one_visual.tif", "thumbnail": "data/one_thumb.tif"}),
             _item("S2A_33SVB_2", {"visual": str(tmp_path / "data" / "two_visual.tif")}),
             _item("S2A_33SVB_3", {"thumbnail": "data/one_thumb.tif"})]
    collection = tmp_path / "items.json"
    collection.write_text(json.dumps(pystac.ItemCollection(items).to_dict(transform_hrefs=False)))
    scenes = read_scenes([str(collection)], asset="visual")
    assert [(s.stem, s.source, s.error is None) for s in scenes[:2]] == [
        ("S2A_33SVB_1", str(tmp_path / "data" / "one_visual.tif"), True),
        ("S2A_33SVB_2", str(tmp_path / "data" / "two_visual.tif"), True)]
    assert "STAC item S2A_33SVB_3 in" in scenes[2].error and "has no asset 'visual' (it has: thumbnail)" in scenes[2].error
    with pytest.raises(GeoreasonError, match="item S2A_33SVB_1 has 2 assets \\(thumbnail, visual\\); choose one with "
                                             "--asset KEY"):
        read_scenes([str(collection)])
    with pytest.raises(GeoreasonError, match="no item has an asset 'nir' \\(--asset\\); the first item "
                                             "\\(S2A_33SVB_1\\) has: thumbnail, visual"):
        read_scenes([str(collection)], asset="nir")

    catalog = pystac.Catalog("region", "two items")
    for item in items[:2]:
        clone = item.clone()
        clone.assets["visual"].href = str(tmp_path / "data" / f"{'one' if item.id.endswith('1') else 'two'}_visual.tif")
        catalog.add_item(clone)
    catalog.normalize_hrefs(str(tmp_path / "catalog"))
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    from_catalog = read_scenes([str(tmp_path / "catalog" / "catalog.json")], asset="visual")
    assert sorted(s.stem for s in from_catalog) == ["S2A_33SVB_1", "S2A_33SVB_2"]
    assert all(s.source.startswith(str(tmp_path)) and s.source.endswith("_visual.tif") for s in from_catalog)
    single = tmp_path / "item.json"
    single.write_text(json.dumps(items[1].to_dict(transform_hrefs=False)))
    assert [s.stem for s in read_scenes([str(single)])] == ["S2A_33SVB_2"]


@pytest.mark.input_kind("runs", "batch pairs: several questions per scene, repeated stems, a rerun adding scenes",
                        "names scene-qK per question, unique in the run; a rerun keeps the earlier names")
def test_pair_names_are_unique_and_stable_across_reruns(tmp_path):
    a1, = _rasters(tmp_path / "d1", ["tile.tif"])
    a2, b = _rasters(tmp_path / "d2", ["tile.tif", "tile-2.tif"])
    scenes = read_scenes([str(a1), str(a2), str(b)])
    pairs = plan_pairs([(s, q) for s in scenes for q in ("roads?", "fields?")])
    assert [p.name for p in pairs] == ["tile-q1", "tile-q2", "tile-q1-2", "tile-q2-2", "tile-2-q1", "tile-2-q2"]
    single = plan_pairs([(s, "roads?") for s in scenes])
    assert [p.name for p in single] == ["tile", "tile-3", "tile-2"]
    taken = {p.key: p.name for p in single[1:]}
    again = plan_pairs([(s, "roads?") for s in scenes], taken)
    assert [p.name for p in again] == ["tile", "tile-3", "tile-2"]
    lines = [{"scene": "d1/tile.tif", "question": "roads?"}, {"image": "https://h/x.tif", "question": "q"}]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    read = read_question_pairs(str(tmp_path / "pairs.jsonl"))
    assert [(s.source, q) for s, q in read] == [(str(a1), "roads?"), ("/vsicurl/https://h/x.tif", "q")]


@pytest.mark.input_kind("runs", "bad batch inputs: missing path, empty folder, unmatched glob, empty list, "
                                "bad JSON or STAC, bad pairs line, a non-empty folder as --out, bad numbers",
                        "one line naming the input and what was expected, exit 2, before Ray starts; nothing written")
def test_bad_inputs_are_refused_before_any_work(tmp_path, capsys):
    good, = _rasters(tmp_path / "ok", ["good.tif"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"type": "Polygon", "coordinates": []}))
    (tmp_path / "bad.jsonl").write_text('{"scene": "ok/good.tif"}\n')
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.docx").write_text("mine")
    q = ["--question", QUESTION]
    cases = [
        ([str(tmp_path / "nope.tif"), *q], "nope.tif: no such file or folder; expected a raster, a folder of rasters"),
        ([str(tmp_path / "empty"), *q], "empty: the folder has no rasters"),
        ([str(tmp_path / "ok" / "*.png"), *q], "*.png: the pattern matches no rasters"),
        ([str(tmp_path / "empty.txt"), *q], "empty.txt: the scene list has no entries"),
        ([str(tmp_path / "broken.json"), *q], "broken.json: not valid JSON"),
        ([str(tmp_path / "other.json"), *q], "other.json: expected a STAC ItemCollection, Item, Catalog or "
                                             "Collection"),
        (["--questions", str(tmp_path / "bad.jsonl")], 'bad.jsonl:1: expected {"scene": "path or URL", "question"'),
        (["--questions", str(tmp_path / "bad.jsonl"), str(good)], "SCENE: give scenes either on the command line"),
        ([str(good), *q, "--workers", "0"], "--workers: expected at least 1, got 0"),
        ([str(good), *q, "--overlap", "900"], "overlap: expected 0 <= overlap"),
        ([str(good), *q, "--bands", "3,x"], "--bands: expected 1-based band numbers"),
        ([str(good), *q, "--address", "auto", "--num-cpus", "2"], "--num-cpus: expected at least 1, and only "
                                                                   "without --address"),
    ]
    for arguments, message in cases:
        assert main(["batch", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "run"), *arguments]) == 2
        error = capsys.readouterr().err
        assert message in error, (message, error)
        assert not (tmp_path / "run").exists()
    assert main(["batch", "--model", str(tmp_path / "model"), str(good), *q, "--out", str(tmp_path / "busy")]) == 2
    assert "busy: the folder is not empty and has no manifest.json, so it is not a batch run folder" \
        in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["thesis.docx"]
