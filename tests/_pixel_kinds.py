"""Every input kind the pixel reader supports: a small file of that kind and the RGB it must give.

The expected RGB is computed here from the values written (colour tables, alpha, the 2-98 % stretch
done with numpy), not by georeason, so a reader that disagrees with it fails.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning

from tests._geo_fixtures import CRS, TRANSFORM

H, W = 40, 56  # several 32 px tiles with overlap, and smaller than one 64 px tile


@dataclass
class Case:
    path: Path
    rgb: np.ndarray  # uint8 [H', W', 3] the model must see
    valid: np.ndarray  # bool [H', W']
    bands: tuple[int, ...] | None = None
    note: str | None = None  # a note the prediction must carry
    windowed: bool | None = None  # whether --tile reads it by windows (None: not asserted)


@dataclass
class Kind:
    id: str
    kind: str
    handling: str
    build: Callable[[Path], Case]

    def param(self):
        return pytest.param(self, id=self.id, marks=[pytest.mark.input_kind("pixels", self.kind, self.handling)])


def _textured(bands: int = 3, seed: int = 0) -> np.ndarray:
    rows, cols = np.mgrid[0:H, 0:W]
    noise = np.random.default_rng(seed).integers(0, 50, (bands, H, W))
    waves = np.stack([np.sin(rows / (5.0 + b)) * 90 + np.cos(cols / (7.0 + b)) * 60 for b in range(bands)])
    return np.clip(noise + waves + 100, 1, 255).astype(np.uint8)


def stretch(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The documented 2-98 % display stretch of [H, W, C] values over `valid`, written out with numpy."""
    out = np.zeros(values.shape, dtype=np.uint8)
    for band in range(values.shape[2]):
        chosen = values[..., band][valid].astype(np.float64)
        low, high = np.percentile(chosen, [2.0, 98.0])
        scaled = (values[..., band].astype(np.float64) - low) * (255.0 / (high - low))
        out[..., band] = np.clip(np.rint(np.nan_to_num(scaled, nan=0.0)), 0, 255).astype(np.uint8)
    out[~valid] = 0
    return out


def _write(path: Path, data: np.ndarray, **profile) -> Path:
    count, height, width = data.shape
    base = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name)
    if profile.pop("georeferenced", True):
        base.update(crs=CRS, transform=TRANSFORM)
    base.update(profile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **base) as out:
            out.write(data)
    return path


def _all(shape=(H, W)) -> np.ndarray:
    return np.ones(shape, dtype=bool)


def rgb_geotiff(tmp: Path) -> Case:
    data = _textured()
    path = _write(tmp / "rgb.tif", data, tiled=True, blockxsize=16, blockysize=16, compress="deflate")
    return Case(path, np.moveaxis(data, 0, -1), _all(), windowed=True)


COLOURS = {0: (20, 120, 30, 255), 1: (200, 190, 150, 255), 2: (30, 60, 200, 255), 3: (90, 90, 90, 255)}


def _indexes() -> np.ndarray:
    index = np.zeros((H, W), np.uint8)
    index[:, 20:] = 1
    index[10:30, 30:50] = 2
    index[::7, :] = 3
    return index


def palette_geotiff(tmp: Path) -> Case:
    index = _indexes()
    path = _write(tmp / "landcover_pal.tif", index[None], photometric="palette")
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, COLOURS)
    table = np.array([COLOURS[i][:3] for i in range(4)], np.uint8)
    return Case(path, table[index], _all())


def palette_png_transparent(tmp: Path) -> Case:
    index = _indexes()
    image = Image.fromarray(index, mode="P")
    image.putpalette([c for i in range(4) for c in COLOURS[i][:3]])
    path = tmp / "classes.png"
    image.save(path, transparency=3)  # index 3 (the grid lines) is transparent
    valid = index != 3
    rgb = np.array([COLOURS[i][:3] for i in range(4)], np.uint8)[index]
    rgb[~valid] = 0
    return Case(path, rgb, valid)


def _alpha() -> np.ndarray:
    alpha = np.full((H, W), 255, np.uint8)
    alpha[:8, :] = 0  # a transparent top band, as a clipped export has
    alpha[20:24, 10:14] = 128  # half transparent is still valid
    return alpha


def rgba_png(tmp: Path) -> Case:
    rgb, alpha = np.moveaxis(_textured(), 0, -1), _alpha()
    path = tmp / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    expected = rgb.copy()
    expected[alpha == 0] = 0
    return Case(path, expected, alpha != 0)


def la_png(tmp: Path) -> Case:
    gray, alpha = _textured(1)[0], _alpha()
    path = tmp / "gray_alpha.png"
    Image.fromarray(np.dstack([gray, alpha]), "LA").save(path)
    expected = np.repeat(gray[..., None], 3, axis=2)
    expected[alpha == 0] = 0
    return Case(path, expected, alpha != 0)


def rgba_geotiff(tmp: Path) -> Case:
    rgb, alpha = _textured(), _alpha()
    path = _write(tmp / "rgba.tif", np.concatenate([rgb, alpha[None]]), photometric="rgb", alpha="YES",
                  tiled=True, blockxsize=16, blockysize=16)
    expected = np.moveaxis(rgb, 0, -1).copy()
    expected[alpha == 0] = 0
    return Case(path, expected, alpha != 0, windowed=True)


def gray_png(tmp: Path) -> Case:
    gray = _textured(1)[0]
    Image.fromarray(gray).save(tmp / "gray.png")
    return Case(tmp / "gray.png", np.repeat(gray[..., None], 3, axis=2), _all())


def gray_png_transparent_colour(tmp: Path) -> Case:
    gray = _textured(1)[0]
    gray[:6] = 7  # the transparent value; elsewhere it occurs where the texture happens to hold it
    Image.fromarray(gray).save(tmp / "gray_trns.png", transparency=7)
    valid = gray != 7
    expected = np.repeat(gray[..., None], 3, axis=2)
    expected[~valid] = 0
    return Case(tmp / "gray_trns.png", expected, valid)


def bilevel_png(tmp: Path) -> Case:
    bits = _textured(1)[0] > 128
    Image.fromarray(bits).convert("1").save(tmp / "bits.png")
    return Case(tmp / "bits.png", np.repeat(np.where(bits, 255, 0).astype(np.uint8)[..., None], 3, axis=2), _all())


def jpeg_420(tmp: Path) -> Case:
    path = tmp / "photo.jpg"
    Image.fromarray(np.moveaxis(_textured(), 0, -1)).save(path, quality=80, subsampling=2)
    with Image.open(path) as image:  # Pillow's decode, as the research code loads JPEGs
        expected = np.asarray(image).copy()
    return Case(path, expected, _all())


def _exif(orientation: int):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def jpeg_exif_rotated(tmp: Path) -> Case:
    path = tmp / "drone.jpg"
    Image.fromarray(np.moveaxis(_textured(), 0, -1)).save(path, quality=90, exif=_exif(6))
    with Image.open(path) as image:
        stored = np.asarray(image).copy()
    upright = np.ascontiguousarray(np.rot90(stored, -1))  # orientation 6: rotate 90 degrees clockwise
    return Case(path, upright, _all(upright.shape[:2]), note="EXIF orientation 6 applied")


def jpeg_georeferenced_exif(tmp: Path) -> Case:
    path = tmp / "ortho.jpg"
    Image.fromarray(np.moveaxis(_textured(), 0, -1)).save(path, quality=90, exif=_exif(6))
    (tmp / "ortho.jgw").write_text("10\n0\n0\n-10\n500005\n3999995\n")  # a world file: the grid is the map's
    with Image.open(path) as image:
        stored = np.asarray(image).copy()
    return Case(path, stored, _all())


def png_16bit_rgb(tmp: Path) -> Case:
    data = (_textured().astype(np.uint16) * 240 + np.arange(W, dtype=np.uint16)).astype(np.uint16)
    path = _write(tmp / "deep.png", data, driver="PNG", georeferenced=False)
    return Case(path, stretch(np.moveaxis(data, 0, -1), _all()), _all())


def uint16_geotiff(tmp: Path) -> Case:
    data = (_textured().astype(np.uint16) * 37).astype(np.uint16)
    path = _write(tmp / "l2a.tif", data, tiled=True, blockxsize=16, blockysize=16)
    return Case(path, stretch(np.moveaxis(data, 0, -1), _all()), _all(), windowed=True)


def int8_geotiff(tmp: Path) -> Case:
    data = (_textured(1).astype(np.int16) - 128).astype(np.int8)
    path = _write(tmp / "signed.tif", data)
    values = np.repeat(np.moveaxis(data, 0, -1), 3, axis=2)
    return Case(path, stretch(values, _all()), _all())


def float_nan_nodata(tmp: Path) -> Case:
    data = _textured(1).astype(np.float32) / 255.0
    data[0, 5:9, 5:20] = np.nan
    data[0, 30:, :10] = -9999.0
    path = _write(tmp / "ndvi.tif", data, nodata=-9999.0)
    valid = np.isfinite(data[0]) & (data[0] != -9999.0)
    return Case(path, stretch(np.repeat(np.moveaxis(data, 0, -1), 3, axis=2), valid), valid)


def _complex(tmp: Path, name: str, dtype: str) -> Case:
    rng = np.random.default_rng(5)
    z = (np.round(rng.normal(size=(1, H, W)) * 300) + 1j * np.round(rng.normal(size=(1, H, W)) * 300))
    path = _write(tmp / name, z.astype("complex64"), dtype=dtype)
    with rasterio.open(path) as src:  # the samples as stored (CInt16 comes back as complex64)
        stored = src.read()
    amplitude = np.repeat(np.moveaxis(np.abs(stored), 0, -1), 3, axis=2)
    return Case(path, stretch(amplitude, _all()), _all(), note="amplitude |z|")


def cint16(tmp: Path) -> Case:
    return _complex(tmp, "slc_cint16.tif", "complex_int16")


def cfloat32(tmp: Path) -> Case:
    return _complex(tmp, "slc_cfloat32.tif", "complex64")


def cfloat64(tmp: Path) -> Case:
    return _complex(tmp, "slc_cfloat64.tif", "complex128")


def internal_mask(tmp: Path) -> Case:
    data = _textured()
    mask = np.full((H, W), 255, np.uint8)
    mask[:, :9] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        path = _write(tmp / "masked.tif", data, tiled=True, blockxsize=16, blockysize=16, compress="jpeg",
                      photometric="ycbcr")
        with rasterio.open(path, "r+") as dst:
            dst.write_mask(mask)
    with rasterio.open(path) as src:  # JPEG-compressed: the decoded values, then masked
        stored = np.moveaxis(src.read(), 0, -1)
    expected = stored.copy()
    expected[mask == 0] = 0
    return Case(path, expected, mask != 0, windowed=True)


def uint8_nodata(tmp: Path) -> Case:
    data = _textured()
    data[:, 12:16, :] = 0
    path = _write(tmp / "nodata.tif", data, nodata=0)
    # GDAL's nodata is per band: a pixel is invalid where any chosen band equals it.
    valid = np.all(data != 0, axis=0)
    expected = np.moveaxis(data, 0, -1).copy()
    expected[~valid] = 0
    return Case(path, expected, valid)


def one_strip(tmp: Path) -> Case:
    data = _textured()
    path = _write(tmp / "one_strip.tif", data, blockysize=H, compress="deflate")
    return Case(path, np.moveaxis(data, 0, -1), _all(), windowed=False)


def multiband_bands(tmp: Path) -> Case:
    data = (_textured(5).astype(np.uint16) * 41).astype(np.uint16)
    path = _write(tmp / "s2_5band.tif", data, tiled=True, blockxsize=16, blockysize=16)
    chosen = np.moveaxis(data[[3, 2, 1]], 0, -1)
    return Case(path, stretch(chosen, _all()), _all(), bands=(4, 3, 2), windowed=True)


KINDS = [
    Kind("rgb_geotiff", "8-bit RGB GeoTIFF, tiled", "values passed through unchanged; --tile reads it by windows",
         rgb_geotiff),
    Kind("palette_geotiff", "one-band paletted GeoTIFF (colour table)",
         "expanded to RGB through the colour table in every mode and with any --bands, never the indexes as gray",
         palette_geotiff),
    Kind("palette_png", "paletted PNG with a transparent index",
         "colours from the palette; the transparent index is nodata (black, not predicted)", palette_png_transparent),
    Kind("rgba_png", "RGBA PNG (alpha channel)",
         "alpha dropped from the RGB; alpha 0 is nodata (black, not predicted), any other alpha is valid", rgba_png),
    Kind("la_png", "gray + alpha PNG (LA)", "gray repeated to RGB; alpha 0 is nodata", la_png),
    Kind("rgba_geotiff", "RGBA GeoTIFF (alpha band)", "alpha band dropped from the RGB; alpha 0 is nodata",
         rgba_geotiff),
    Kind("gray_png", "8-bit grayscale PNG", "gray repeated to three bands", gray_png),
    Kind("gray_trns_png", "grayscale PNG with a transparent colour (tRNS)",
         "pixels of the transparent value are nodata", gray_png_transparent_colour),
    Kind("bilevel_png", "1-bit PNG", "0/1 read as 0/255 gray", bilevel_png),
    Kind("jpeg_420", "JPEG with 4:2:0 chroma subsampling",
         "decoded by Pillow in every mode (the research code's values; GDAL's decoder differs by up to 11 levels)",
         jpeg_420),
    Kind("jpeg_exif", "JPEG with EXIF orientation (phone or drone photo)",
         "turned upright as EXIF says, in every mode; outputs are upright and the prediction notes it",
         jpeg_exif_rotated),
    Kind("jpeg_world_exif", "georeferenced JPEG (world file) with an EXIF orientation",
         "kept as stored: its georeferencing refers to the stored grid", jpeg_georeferenced_exif),
    Kind("png16", "16-bit RGB PNG", "all 16 bits kept (GDAL decodes it) and stretched 2-98 %", png_16bit_rgb),
    Kind("uint16", "16-bit GeoTIFF (e.g. Sentinel-2 L2A)",
         "stretched per band between its 2nd and 98th percentiles, one stretch for the whole scene in every mode",
         uint16_geotiff),
    Kind("int8", "signed 8-bit (int8) GeoTIFF", "read as signed values and stretched 2-98 %, not passed through as "
         "bytes", int8_geotiff),
    Kind("float_nan", "float32 GeoTIFF with NaN and a nodata value",
         "NaN and nodata pixels are nodata and left out of the stretch", float_nan_nodata),
    Kind("cint16", "complex CInt16 GeoTIFF (Sentinel-1 SLC)",
         "amplitude |z| stretched 2-98 %, with a note in the prediction, summary.json and the service's warnings",
         cint16),
    Kind("cfloat32", "complex CFloat32 GeoTIFF", "amplitude |z| stretched 2-98 %, with a note", cfloat32),
    Kind("cfloat64", "complex CFloat64 GeoTIFF", "amplitude |z| stretched 2-98 %, with a note", cfloat64),
    Kind("internal_mask", "JPEG-YCbCr GeoTIFF with an internal mask",
         "masked pixels are nodata (black, not predicted)", internal_mask),
    Kind("uint8_nodata", "8-bit GeoTIFF with a nodata value",
         "a pixel is nodata where a chosen band holds the nodata value", uint8_nodata),
    Kind("one_strip", "GeoTIFF stored in one compressed strip",
         "decoded once, whole (within --max-pixels), then cut into tiles", one_strip),
    Kind("bands_432", "5-band 16-bit GeoTIFF with --bands 4,3,2", "the chosen bands as R,G,B, stretched 2-98 %",
         multiband_bands),
]
