"""The one pixel reader: every input kind gives the same, right RGB in every mode, and the pixel budget.

Modes without the model: the dataset loader (load_image), whole-image inference and web uploads
(load_input), tiled window reads and the tiled overview (open_pixels in "tiled" mode + read_rgb).
"""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
import pytest
import rasterio
from PIL import Image, ImageOps

from georeason.data.imageio import load_image
from georeason.data.pixels import ArraySource, GdalSource, check_pixel_budget, open_pixels, pixel_size
from georeason.errors import GeoreasonError
from georeason.geo import plan_tiles, read_rgb, scene_limits
from georeason.geo.raster import needs_stretch
from georeason.reasoner import load_input
from tests._pixel_kinds import KINDS, H, W, _textured, _write

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _nearest(length: int, out: int) -> np.ndarray:
    return np.floor((np.arange(out) + 0.5) * (length / out)).astype(int)


@pytest.mark.parametrize("kind", [k.param() for k in KINDS])
def test_every_input_kind_gives_the_same_rgb_in_every_mode(kind, tmp_path):
    case = kind.build(tmp_path)
    expected, valid = case.rgb, case.valid

    # dataset loaders, `data check`, annotate and redundancy
    assert np.array_equal(load_image(case.path, bands=case.bands), expected)
    # whole-image mode; the web service's upload is read by the same call
    loaded = load_input(case.path, case.bands)
    assert np.array_equal(loaded.rgb, expected)
    assert np.array_equal(loaded.valid if loaded.valid is not None else np.ones_like(valid), valid)
    if case.note:
        assert any(case.note in note for note in loaded.notes), loaded.notes
    else:
        assert loaded.notes == []

    # tiled mode: the scene stretch, then 32 px windows overlapping by 8 px stitched back together
    with open_pixels(case.path, max_pixels=10**9, mode="tiled") as source:
        if case.windowed is not None:
            assert source.windowed is case.windowed
        limits = scene_limits(source, case.bands) if needs_stretch(source, case.bands) else None
        stitched = np.zeros_like(expected)
        seen = np.zeros(expected.shape[:2], dtype=bool)
        for window in plan_tiles(source.height, source.width, 32, 8):
            rgb, tile_valid = read_rgb(source, window, case.bands, limits)
            rows, cols = window.toslices()
            stitched[rows, cols] = rgb
            seen[rows, cols] = True
            assert np.array_equal(tile_valid, valid[rows, cols])
        assert seen.all() and np.array_equal(stitched, expected)
        # the overview the description embedding is computed from (nearest neighbour, as GDAL resamples)
        out_shape = (source.height // 2, source.width // 3)
        overview, _ = read_rgb(source, None, case.bands, limits, out_shape=out_shape)
        rows, cols = _nearest(source.height, out_shape[0]), _nearest(source.width, out_shape[1])
        assert np.array_equal(overview, expected[np.ix_(rows, cols)])


def test_in_memory_reads_resample_exactly_as_gdal(tmp_path):
    """An image decoded whole (PNG, one strip) and one read by windows give the same overview pixels."""
    data = np.random.default_rng(3).integers(0, 65535, (2, 97, 131)).astype(np.uint16)
    path = _write(tmp_path / "r.tif", data, tiled=True, blockxsize=32, blockysize=32)
    with rasterio.open(path) as src:
        gdal, memory = GdalSource(src), ArraySource("r", np.moveaxis(data, 0, -1))
        for shape in [(1, 1), (13, 7), (48, 65), (96, 130), (50, 131)]:
            for window in (None, rasterio.windows.Window(5, 9, 101, 77)):
                a, va = gdal.read([2, 1, 2], window, shape)
                b, vb = memory.read([2, 1, 2], window, shape)
                assert np.array_equal(a, b) and np.array_equal(va, vb), (shape, window)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientations_match_pillow(orientation, tmp_path):
    image = Image.fromarray(np.random.default_rng(orientation).integers(0, 255, (6, 10, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(tmp_path / "o.png", exif=exif)
    with Image.open(tmp_path / "o.png") as opened:
        upright = np.asarray(ImageOps.exif_transpose(opened))
    assert np.array_equal(load_image(tmp_path / "o.png"), upright)
    assert pixel_size(tmp_path / "o.png") == (upright.shape[1], upright.shape[0])


def _png_header(path, width: int, height: int) -> None:
    """A PNG whose header declares width x height with almost no data behind it (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.input_kind("pixels", "PNG declaring 60000 x 60000 px in --tile mode (a decompression bomb)",
                        "refused at once from its header with the file, its size, the --max-pixels budget and the "
                        "gdal_translate command that makes a tiled GeoTIFF of it")
def test_tiled_mode_refuses_a_png_above_the_budget_at_once(tmp_path):
    path = tmp_path / "bomb.png"
    _png_header(path, 60000, 60000)
    started = time.perf_counter()
    with pytest.raises(GeoreasonError) as error, open_pixels(path, 64_000_000, "tiled"):
        pass
    assert time.perf_counter() - started < 5
    assert str(error.value) == (
        f"{path}: a PNG file is decoded whole, even with --tile, and this one declares 60000 x 60000 px "
        "(3600.0 Mpx), above the limit of 64.0 Mpx for an image decoded whole (--max-pixels); convert it to a "
        "tiled GeoTIFF (gdal_translate -co TILED=YES -co COMPRESS=DEFLATE bomb.png bomb.tif) and use --tile on "
        "that (tiled GeoTIFFs have no size limit), or raise --max-pixels if the machine has the memory")
    with pytest.raises(GeoreasonError, match=r"bomb.png: the scene is 60000 x 60000 px \(3600.0 Mpx\), above the "
                       r"limit of 64.0 Mpx for whole-image mode \(--max-pixels\); a PNG file is decoded whole even "
                       r"with --tile, so convert it to a tiled GeoTIFF \(gdal_translate .* bomb.png bomb.tif\) and "
                       r"use --tile on that, or raise --max-pixels"):
        load_input(path)


@pytest.mark.input_kind("pixels", "tiled GeoTIFF larger than --max-pixels",
                        "read by windows in --tile mode without a size limit; whole-image mode asks for --tile")
def test_tiled_geotiffs_have_no_budget_in_tiled_mode(tmp_path):
    path = _write(tmp_path / "big.tif", _textured(), tiled=True, blockxsize=16, blockysize=16)
    with open_pixels(path, 100, "tiled") as source:
        assert source.windowed and read_rgb(source)[0].shape == (H, W, 3)
    with pytest.raises(GeoreasonError, match=r"big.tif: the scene is 56 x 40 px \(2240 px\), above the limit of "
                       r"100 px for whole-image mode \(--max-pixels\); use --tile to process it in tiles$"):
        load_input(path, max_pixels=100)


@pytest.mark.input_kind("pixels", "GeoTIFF in one compressed strip, or a JPEG, larger than --max-pixels",
                        "refused in --tile mode too (they are decoded whole), with the gdal_translate command")
def test_one_strip_geotiffs_and_jpegs_have_the_budget_in_tiled_mode(tmp_path):
    strip = _write(tmp_path / "strip.tif", _textured(), blockysize=H, compress="deflate")
    with pytest.raises(GeoreasonError, match=r"strip.tif: a raster stored as one compressed block \(a single "
                       r"strip\) is decoded whole, even with --tile, and this one declares 56 x 40 px \(2240 px\), "
                       r"above the limit of 100 px .* strip.tif strip_tiled.tif\)"):
        with open_pixels(strip, 100, "tiled"):
            pass
    Image.fromarray(np.moveaxis(_textured(), 0, -1)).save(tmp_path / "photo.jpg")
    with pytest.raises(GeoreasonError, match=r"photo.jpg: a JPEG file is decoded whole, even with --tile, .* "
                       r"photo.jpg photo.tif\)"):
        with open_pixels(tmp_path / "photo.jpg", 100, "tiled"):
            pass
    with open_pixels(tmp_path / "photo.jpg", 10**6, "tiled") as source:  # within the budget it is read once
        assert not source.windowed and source.decoder == "Pillow"


def test_budget_messages_for_datasets_and_empty_images():
    with pytest.raises(GeoreasonError, match=r"^x.png: 20 x 10 px \(200 px\) is above the limit of 100 px for one "
                       r"image \(max_pixels; a decompression-bomb guard\)$"):
        check_pixel_budget("x.png", 20, 10, 100)
    with pytest.raises(GeoreasonError, match=r"^x.png: the image is empty \(0 pixels\)$"):
        check_pixel_budget("x.png", 0, 10, 100, "tiled")
    check_pixel_budget("x.png", 10, 10, 100, "whole")


@pytest.mark.input_kind("pixels", "PIL image or numpy array (Python API)",
                        "read like the file it came from: palette colours, alpha 0 as nodata; complex arrays as "
                        "amplitude with a note")
def test_pil_images_and_arrays_read_like_their_files(tmp_path):
    from tests._pixel_kinds import palette_png_transparent, rgba_png

    for build in (palette_png_transparent, rgba_png):
        case = build(tmp_path)
        with Image.open(case.path) as image:
            loaded = load_input(image)
        assert np.array_equal(loaded.rgb, case.rgb) and np.array_equal(loaded.valid, case.valid)
    z = np.zeros((4, 5), np.complex64)
    z[1, 1] = 3 + 4j
    z[2, 2] = 6 + 8j
    loaded = load_input(z)
    assert loaded.rgb[1, 1, 0] < loaded.rgb[2, 2, 0] and loaded.rgb[0, 0, 0] == 0
    assert loaded.notes == ["array: complex samples (complex64) are read as their amplitude |z|, stretched 2-98 %, "
                            "not as the real part"]


@pytest.mark.input_kind("pixels", "PNG cut short (partial download), or with bytes after IEND / without IEND",
                        "cut inside a chunk: refused naming the file (GDAL would read wrong pixels); junk after "
                        "IEND or a missing IEND after whole chunks: read as the complete file")
def test_a_png_cut_inside_a_chunk_is_refused_and_whole_ones_are_read(tmp_path):
    pixels = (np.random.default_rng(0).random((120, 90, 3)) * 255).astype(np.uint8)  # incompressible: several IDATs
    whole = tmp_path / "whole.png"
    Image.fromarray(pixels).save(whole)
    data = whole.read_bytes()
    assert data.endswith(b"IEND\xaeB`\x82")
    variants = {"junk.png": data + b"\x00junk" * 1200,  # 6 KB after IEND (some tools append metadata)
                "no_iend.png": data[:-12]}  # every chunk whole, only IEND missing
    for name, content in variants.items():
        (tmp_path / name).write_bytes(content)
        np.testing.assert_array_equal(load_input(tmp_path / name).rgb, pixels, err_msg=name)
    expected = (r"cut.png: the PNG file ends before its image data does \(its last chunk is cut short\): a partial "
                r"download or copy\? Copy the file again")
    for cut in (len(data) // 2, len(data) - 20):  # inside an IDAT chunk; 8 bytes short of the last IDAT's end
        (tmp_path / "cut.png").write_bytes(data[:cut])
        with pytest.raises(GeoreasonError, match=expected):
            load_input(tmp_path / "cut.png")
