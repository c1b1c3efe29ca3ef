"""`georeason data merge-masks`: stems, sizes, binarisation, manifest update, and `data check` afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from georeason.cli import main as georeason_main
from georeason.data.merge import merge_masks
from georeason.errors import GeoreasonError


def make_dataset(root: Path, stems: list[str], size=(20, 12)) -> None:
    """An annotate-style dataset: train/images, QAs, empty labels, and train.jsonl with null masks."""
    for sub in ("images", "QAs", "labels"):
        (root / "train" / sub).mkdir(parents=True)
    lines = []
    for stem in stems:
        Image.fromarray(np.full((size[1], size[0], 3), 120, np.uint8)).save(root / "train" / "images" / f"{stem}.jpg")
        qa = {"questions": [f"Where is the {stem} target?"], "answer": ["There."], "category": "lake"}
        (root / "train" / "QAs" / f"{stem}.json").write_text(json.dumps(qa))
        lines.append(json.dumps({"id": stem, "image": f"train/images/{stem}.jpg", "mask": None,
                                 "questions": qa["questions"], "answers": qa["answer"], "task": "reasoning",
                                 "category": "lake"}))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # a plain, ungeoreferenced TIFF mask
def test_merge_masks_binarises_copies_lists_and_updates_the_manifest(tmp_path, capsys):
    root, masks = tmp_path / "ds", tmp_path / "masks"
    make_dataset(root, ["a", "b", "c"])
    masks.mkdir()
    palette = Image.fromarray(np.pad(np.array([[0, 3], [1, 0]], np.uint8), ((0, 10), (0, 18))), mode="P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.save(masks / "a.png")  # palette indices 3 and 1 are target
    import rasterio

    with rasterio.open(masks / "b.tif", "w", driver="GTiff", width=20, height=12, count=1, dtype="float32") as dst:
        band = np.zeros((12, 20), np.float32)
        band[2:4, 5:9] = 0.5
        dst.write(band, 1)
    Image.fromarray(np.zeros((12, 20), np.uint8)).save(masks / "orphan.png")
    (masks / "readme.txt").write_text("exported from QGIS")

    code = georeason_main(["data", "merge-masks", str(root), str(masks)])
    out = capsys.readouterr().out
    assert code == 1  # a mask without an image
    assert "mask without an image: orphan.png" in out and "image without a mask: c.jpg" in out
    assert "ignored (not .png/.tif/.tiff/.bmp): readme.txt" in out
    label_a = np.asarray(Image.open(root / "train" / "labels" / "a.png"))
    assert label_a.dtype == np.uint8 and label_a.shape == (12, 20)
    assert sorted(np.unique(label_a)) == [0, 255] and np.argwhere(label_a).tolist() == [[0, 1], [1, 0]]
    label_b = np.asarray(Image.open(root / "train" / "labels" / "b.png"))
    assert int((label_b == 255).sum()) == 8 and int((label_b != 0).sum()) == 8
    manifest = [json.loads(line) for line in (root / "train.jsonl").read_text().splitlines()]
    assert [m["mask"] for m in manifest] == ["train/labels/a.png", "train/labels/b.png", None]
    assert manifest[0]["questions"] == ["Where is the a target?"]  # the other fields are untouched

    # With the last mask merged, the dataset checks clean in both layouts.
    Image.fromarray(np.ones((12, 20), np.uint8)).save(masks / "c.png")
    (masks / "orphan.png").unlink()
    report = merge_masks(root, masks)
    assert report.merged == ["a", "b", "c"] and not report.images_without_mask and not report.masks_without_image
    from georeason.data.check import check_dataset

    layout, reports = check_dataset(root)
    assert layout == "earthreason" and reports[0].samples == 3 and reports[0].problems == []
    layout, reports = check_dataset(root / "train.jsonl")
    assert layout == "jsonl" and reports[0].samples == 3 and reports[0].problems == [] and reports[0].empty == 0


def test_merge_masks_refuses_size_mismatches_and_writes_nothing(tmp_path):
    root, masks = tmp_path / "ds", tmp_path / "masks"
    make_dataset(root, ["a", "b"])
    masks.mkdir()
    Image.fromarray(np.ones((12, 20), np.uint8)).save(masks / "a.png")
    Image.fromarray(np.ones((20, 12), np.uint8)).save(masks / "b.png")  # transposed export
    with pytest.raises(GeoreasonError, match=r"b\.png: mask is 20x12 \(HxW\) but image .*b\.jpg is 12x20"):
        merge_masks(root, masks)
    assert list((root / "train" / "labels").iterdir()) == []
    assert json.loads((root / "train.jsonl").read_text().splitlines()[0])["mask"] is None


def test_merge_masks_input_errors(tmp_path):
    root = tmp_path / "ds"
    make_dataset(root, ["a"])
    with pytest.raises(GeoreasonError, match="no split 'val'"):
        merge_masks(root, tmp_path, "val")
    with pytest.raises(GeoreasonError, match="MASKS_DIR .* is not a folder"):
        merge_masks(root, tmp_path / "missing")
    masks = tmp_path / "masks"
    masks.mkdir()
    Image.fromarray(np.ones((12, 20), np.uint8)).save(masks / "a.png")
    Image.fromarray(np.ones((12, 20), np.uint8)).save(masks / "a.bmp")
    with pytest.raises(GeoreasonError, match="a.bmp and a.png share the stem 'a'"):
        merge_masks(root, masks)
