"""Labels are values: alpha, palette, RGB, nodata and EXIF in label files, in the loaders, `data check` and
`data merge-masks`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from georeason.cli import main as georeason_main
from georeason.data import open_dataset
from georeason.data.labels import read_label
from georeason.data.merge import merge_masks
from georeason.errors import GeoreasonError

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

TARGET = np.zeros((64, 96), bool)
TARGET[20:40, 30:60] = True  # 600 target pixels
RGBA_KIND = "RGBA: alpha 0 = background; black = background, any other colour = target"
LA_KIND = "gray + alpha: alpha 0 = background; gray 0 = background, non-zero = target"
GRAY_KIND = "gray: 0 = background, non-zero = target"


def _white_on_black(mode: str, target: np.ndarray = TARGET) -> Image.Image:
    value = np.where(target, 255, 0).astype(np.uint8)
    opaque = np.full_like(value, 255)
    arrays = {"RGBA": np.dstack([value, value, value, opaque]), "LA": np.dstack([value, opaque]), "L": value}
    return Image.fromarray(arrays[mode], mode)


def _earthreason(root: Path, labels: dict[str, Image.Image]) -> None:
    for sub in ("images", "labels", "QAs"):
        (root / "test" / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(4)
    for stem, label in labels.items():
        height, width = label.height, label.width
        photo = (rng.random((height, width, 3)) * 255).astype("uint8")
        Image.fromarray(photo).save(root / "test" / "images" / f"{stem}.jpg")
        label.save(root / "test" / "labels" / f"{stem}.png")
        qa = {"questions": ["Where could boats be launched?"], "answer": ["The lake in the centre."]}
        (root / "test" / "QAs" / f"{stem}.json").write_text(json.dumps(qa))


@pytest.mark.input_kind("labels", "label PNGs with an alpha channel (RGBA, LA) on an opaque black background",
                        "alpha is not a label value: the drawn pixels are target, the black background is not; "
                        "`data check` lists how each label was read")
def test_alpha_labels_count_only_the_drawn_target(tmp_path, capsys):
    root = tmp_path / "er"
    _earthreason(root, {"lake_1": _white_on_black("RGBA"), "lake_2": _white_on_black("LA"),
                        "lake_3": _white_on_black("L")})
    dataset = open_dataset(root, "test", mode="eval")
    samples = {dataset[i]["id"]: dataset[i] for i in range(len(dataset))}
    for stem, kind in (("lake_1", RGBA_KIND), ("lake_2", LA_KIND), ("lake_3", GRAY_KIND)):
        assert np.array_equal(samples[stem]["mask"], TARGET) and samples[stem]["label"] == kind
    assert georeason_main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert (f"labels in test read as:\n       1 x {RGBA_KIND}\n       1 x {LA_KIND}\n       1 x {GRAY_KIND}\n"
            in out)
    assert "OK: no problems found" in out


@pytest.mark.input_kind("labels", "RGBA mask drawn in QGIS/a paint tool, merged with `data merge-masks`",
                        "only the drawn pixels become target (255); the report says how the mask was read")
def test_merge_masks_reads_rgba_masks_as_values(tmp_path, capsys):
    root = tmp_path / "er"
    _earthreason(root, {"lake_3": _white_on_black("L")})
    masks = tmp_path / "qgis_masks"
    masks.mkdir()
    drawn = np.zeros((64, 96), bool)
    drawn[5:15, 5:25] = True  # 200 target pixels
    _white_on_black("RGBA", drawn).save(masks / "lake_3.png")
    assert georeason_main(["data", "merge-masks", str(root), str(masks), "--split", "test", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert f"  1 mask(s) read as {RGBA_KIND}\n" in out and "refused masks 0" in out
    merged = np.asarray(Image.open(root / "test" / "labels" / "lake_3.png"))
    assert np.array_equal(merged, np.where(drawn, 255, 0))


def _alpha_only(path: Path) -> None:
    """A black brush on a transparent canvas: the shape exists only in the alpha channel."""
    alpha = np.where(TARGET, 255, 0).astype(np.uint8)
    Image.fromarray(np.dstack([np.zeros((64, 96, 3), np.uint8), alpha]), "RGBA").save(path)


ALPHA_ONLY = ("the label is black wherever it is opaque, so its only drawing is in the alpha channel, and alpha is "
              "not read as a label value (alpha 0 = background); save the mask with the target in gray or colour "
              "(for example white on black)")


@pytest.mark.input_kind("labels", "mask drawn only in the alpha channel (black brush on a transparent canvas)",
                        "refused with a message naming the file, in the loaders, `data check` (a problem) and "
                        "`data merge-masks` (that mask alone; the others are merged)")
def test_alpha_only_drawings_are_refused_everywhere(tmp_path, capsys):
    _alpha_only(tmp_path / "alpha_only.png")
    with pytest.raises(GeoreasonError) as error:
        read_label(tmp_path / "alpha_only.png")
    assert str(error.value) == f"{tmp_path / 'alpha_only.png'}: {ALPHA_ONLY}"

    root = tmp_path / "er"
    _earthreason(root, {"lake_1": _white_on_black("L"), "lake_2": _white_on_black("L")})
    _alpha_only(root / "test" / "labels" / "lake_2.png")
    assert georeason_main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"sample lake_2: {root / 'test' / 'labels' / 'lake_2.png'}: {ALPHA_ONLY}" in out

    masks = tmp_path / "masks"
    masks.mkdir()
    _alpha_only(masks / "lake_1.png")
    _white_on_black("L").save(masks / "lake_2.png")
    report = merge_masks(root, masks, "test", overwrite=True)  # lake_2 exists, alpha-only
    assert report.merged == ["lake_2"] and report.refused == [f"{masks / 'lake_1.png'}: {ALPHA_ONLY}"]
    assert georeason_main(["data", "merge-masks", str(root), str(masks), "--split", "test"]) == 1
    assert f"  refused: {masks / 'lake_1.png'}: {ALPHA_ONLY}" in capsys.readouterr().out


@pytest.mark.input_kind("labels", "paletted label PNG (VOC/CVAT style) with a transparent index",
                        "index 0 and transparent entries are background, every other index is target")
def test_palette_labels_read_their_indexes(tmp_path):
    index = np.zeros((6, 8), np.uint8)
    index[1, 1:4] = 2  # target
    index[3, 3] = 5  # target: any index but 0
    index[4, :] = 7  # transparent: background
    image = Image.fromarray(index, "P")
    image.putpalette([0, 0, 0] * 256)  # every colour black: colours are not what counts
    image.save(tmp_path / "voc.png", transparency=7)
    label = read_label(tmp_path / "voc.png")
    assert label.mask.sum() == 4 and label.mask[1, 1:4].all() and label.mask[3, 3] and not label.mask[4].any()
    assert label.kind == ("palette: index 0 = background, any other index = target; nodata, masked or "
                          "transparent pixels = background")


@pytest.mark.input_kind("labels", "RGB colour label", "black is background, any other colour is target")
def test_rgb_labels_black_is_background(tmp_path):
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[2, 2] = (255, 0, 0)
    rgb[3, 4] = (0, 0, 1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    label = read_label(tmp_path / "rgb.png")
    assert np.argwhere(label.mask).tolist() == [[2, 2], [3, 4]]
    assert label.kind == "RGB: black = background, any other colour = target"


@pytest.mark.input_kind("labels", "GeoTIFF label with a nodata value (a QGIS export, nodata 255 outside)",
                        "nodata pixels are background, not target")
def test_geotiff_label_nodata_is_background(tmp_path):
    data = np.full((1, 10, 12), 255, np.uint8)
    data[0, 2:8, 2:10] = 0
    data[0, 4:6, 4:6] = 1  # the target, 4 pixels
    with rasterio.open(tmp_path / "qgis.tif", "w", driver="GTiff", width=12, height=10, count=1, dtype="uint8",
                       nodata=255) as dst:
        dst.write(data)
    label = read_label(tmp_path / "qgis.tif")
    assert label.mask.sum() == 4 and label.mask[4:6, 4:6].all()
    assert label.kind == "gray: 0 = background, non-zero = target; nodata, masked or transparent pixels = background"


@pytest.mark.input_kind("labels", "float label GeoTIFF with NaN", "NaN is background; any other non-zero is target")
def test_float_label_nan_is_background(tmp_path):
    data = np.zeros((1, 4, 5), np.float32)
    data[0, 1, 1] = 0.5
    data[0, 2, 2] = np.nan
    with rasterio.open(tmp_path / "f.tif", "w", driver="GTiff", width=5, height=4, count=1, dtype="float32") as dst:
        dst.write(data)
    assert np.argwhere(read_label(tmp_path / "f.tif").mask).tolist() == [[1, 1]]


@pytest.mark.input_kind("labels", "RGBA label with a transparent background (any colour under alpha 0)",
                        "alpha 0 is background whatever its colour; opaque non-black pixels are target")
def test_transparent_background_is_background_whatever_its_colour(tmp_path):
    rgba = np.full((6, 8, 4), 255, np.uint8)  # white everywhere
    rgba[..., 3] = 0
    rgba[2:4, 2:5, 3] = 255  # only this part is opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    label = read_label(tmp_path / "cutout.png")
    assert label.mask.sum() == 6 and label.mask[2:4, 2:5].all() and label.kind == RGBA_KIND


@pytest.mark.input_kind("labels", "image with an EXIF orientation and a mask drawn on the upright image",
                        "`data merge-masks` compares and reads both upright (as the loaders do), so the sizes match")
def test_merge_masks_compares_upright_sizes(tmp_path):
    root = tmp_path / "er"
    for sub in ("images", "labels", "QAs"):
        (root / "test" / sub).mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 20 wide x 12 high, shown 12 wide x 20 high
    Image.fromarray(np.full((12, 20, 3), 90, np.uint8)).save(root / "test" / "images" / "drone.jpg", exif=exif)
    (root / "test" / "QAs" / "drone.json").write_text(json.dumps({"questions": ["q?"], "answer": ["a"]}))
    masks = tmp_path / "masks"
    masks.mkdir()
    upright = np.zeros((20, 12), np.uint8)
    upright[15:18, 1:3] = 255
    Image.fromarray(upright).save(masks / "drone.png")
    assert merge_masks(root, masks, "test").merged == ["drone"]
    sample = open_dataset(root, "test", mode="eval")[0]
    assert sample["image"].shape == (20, 12, 3) and np.array_equal(sample["mask"], upright == 255)
