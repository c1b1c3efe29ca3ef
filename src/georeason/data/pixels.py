"""The one pixel reader: files, PIL images and arrays become bands, validity and a colour table.

Whole-image and tiled inference, the tiled overview, web uploads, the dataset loaders and `data
merge-masks` all read through it, so they cannot disagree (docs/data.md, "How pixels are read");
it feeds the 8-bit RGB input of the paper (Sec. 5.1).
"""

from __future__ import annotations

import contextlib
import math
import os
import shlex
import struct
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio._io import DatasetReaderBase as _OpenRaster  # DatasetReader, WarpedVRT, ...
from rasterio.io import DatasetReader
from rasterio.windows import Window

from georeason.data.stretch import as_hwc, percentile_limits, stretch_to_uint8
from georeason.errors import GeoreasonError
from georeason.filenames import gdal_name, printable, source_name

try:  # GDAL errors surface as rasterio._err.CPLE_*; they are not RasterioError subclasses.
    from rasterio._err import CPLE_BaseError as _GdalError
except ImportError:  # pragma: no cover - layout of a future rasterio
    _GdalError = RasterioError

GDAL_ERRORS = (RasterioError, _GdalError)

# The dataset loaders' decompression-bomb guard; inference passes its own budget (--max-pixels).
DEFAULT_MAX_PIXELS = 200_000_000
# Stretch limits come from a decimated read whose long side is at most this (plenty for percentiles).
LIMITS_MAX_SIDE = 2048
# Formats decoded from the start of the file whatever window is asked for: they are decoded whole, once.
SEQUENTIAL_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "GIF": "GIF", "BIGGIF": "GIF", "BMP": "BMP", "WEBP": "WebP",
                      "JPEGXL": "JPEG XL"}
# Pillow decodes these when every band is 8-bit: the values of the research code's PIL loading (GDAL's
# JPEG decoder upsamples chroma differently, up to 11 levels apart). Pillow keeps only the high byte of
# 16-bit colour PNGs, so those stay with GDAL.
PILLOW_DRIVERS = {"PNG", "JPEG", "GIF", "BIGGIF", "BMP", "WEBP"}
ORIENTATION_TAG = 0x0112
MODES = ("whole", "tiled", "read")
# EXIF orientation -> the numpy view that shows the image upright (the same as PIL's exif_transpose).
_ORIENT = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1),
}


def gdal_reason(exc: BaseException) -> str:
    """The most specific message in a chain of GDAL/rasterio errors ("Read failed" hides the cause)."""
    messages = []
    current: BaseException | None = exc
    while current is not None and len(messages) < 5:
        messages.append(str(current).strip())
        current = current.__cause__ or current.__context__
    useful = [m for m in messages if m and "see previous exception" not in m.lower()]
    return useful[-1] if useful else messages[0]


def dtype_itemsize(dtype: str) -> int:
    """Bytes per sample of a rasterio dtype name ('complex_int16' has no numpy equivalent: 4 bytes)."""
    return 4 if dtype == "complex_int16" else np.dtype(dtype).itemsize


class PixelSource:
    """An image ready to be read, whole or by windows, with what its values mean.

    name: for messages. width, height: px, as shown (after EXIF orientation). count: bands. dtypes: per
    band, as stored ('uint8', 'int8', 'uint16', 'float32', 'complex_int16', ...). palette: uint8 [N, 4]
    RGBA colour table of a one-band paletted image, else None. alpha: the 1-based alpha band or None.
    masked: whether some pixels can be invalid (nodata, an internal mask, alpha 0, a transparent colour).
    header: the rasterio dataset when GDAL opened the file (its georeferencing), else None. windowed:
    reads decode only the blocks of the window; False when the image was decoded whole. decoder: 'GDAL',
    'Pillow' or 'array'. orientation: the EXIF orientation applied (1 = none). notes: what the reader
    decided that the user should be told (complex samples read as amplitude, orientation applied).
    """

    name: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    palette: np.ndarray | None = None
    alpha: int | None = None
    masked: bool = False
    header: DatasetReader | None = None
    windowed: bool = False
    decoder: str = "array"
    orientation: int = 1
    notes: list[str]

    def read(self, bands: Sequence[int], window: Window | None = None,
             out_shape: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Values of `bands` (1-based) as [h, w, len(bands)] and validity bool [h, w].

        A pixel is valid when every chosen band is (not nodata, not masked, alpha not 0, finite, its
        colour-table entry not transparent). Complex samples come back as their amplitude |z| (float).
        `out_shape` (h, w) resamples the window by nearest neighbour, as GDAL does.
        """
        raise NotImplementedError

    def _finish(self, data: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if np.iscomplexobj(data):
            data = np.abs(data)
        if np.issubdtype(data.dtype, np.floating):
            valid &= np.all(np.isfinite(data), axis=-1)
        if self.palette is not None:
            valid &= palette_lookup(self.palette, data[..., 0])[..., 3] != 0
        return data, valid

    def _describe_dtypes(self) -> None:
        complex_types = sorted({d for d in self.dtypes if d.startswith("complex")})
        if complex_types:
            self.notes.append(f"{self.name}: complex samples ({', '.join(complex_types)}) are read as their "
                              "amplitude |z|, stretched 2-98 %, not as the real part")


class GdalSource(PixelSource):
    """A raster GDAL reads block by block (GeoTIFF, COG, VRT, ...): every read decodes only its window."""

    def __init__(self, dataset: DatasetReader) -> None:
        self.header = dataset
        self.name = printable(source_name(dataset.name))
        self.width, self.height, self.count = dataset.width, dataset.height, dataset.count
        self.dtypes = tuple(dataset.dtypes)
        self.palette = gdal_palette(dataset)
        self.alpha = next((i + 1 for i, c in enumerate(dataset.colorinterp) if c == ColorInterp.alpha), None)
        self.masked = _gdal_masked(dataset, self.palette)
        self.windowed, self.decoder, self.orientation = True, "GDAL", 1
        self.notes = []
        self._describe_dtypes()

    def read(self, bands, window=None, out_shape=None):
        unique = sorted(set(int(b) for b in bands))
        shape = None if out_shape is None else (len(unique), int(out_shape[0]), int(out_shape[1]))
        try:
            data = self.header.read(unique, window=window, out_shape=shape)
            masks = self.header.read_masks(unique, window=window, out_shape=shape)
        except GDAL_ERRORS as exc:
            raise GeoreasonError(f"{self.name}: cannot read the pixels (truncated or corrupt file?): "
                                 f"{gdal_reason(exc)}") from exc
        order = [unique.index(int(b)) for b in bands]
        return self._finish(np.moveaxis(data[order], 0, -1), np.all(masks != 0, axis=0))


class ArraySource(PixelSource):
    """An image held decoded in memory: arrays, PIL images and files that must be decoded whole.

    values: [H, W, C] as stored (before orientation); masks: bool [H, W, 1] (one mask for every band) or
    [H, W, C] (per band), True = valid, or None (all valid).
    """

    def __init__(self, name: str, values: np.ndarray, masks: np.ndarray | None = None,
                 palette: np.ndarray | None = None, alpha: int | None = None, header: DatasetReader | None = None,
                 decoder: str = "array", orientation: int = 1, dtypes: Sequence[str] | None = None,
                 masked: bool | None = None) -> None:
        values = as_hwc(values, name)
        if values.dtype == np.bool_:
            values = values.astype(np.uint8) * 255
        if masks is not None:
            masks = np.asarray(masks, dtype=bool).reshape(values.shape[0], values.shape[1], -1)
        if orientation in _ORIENT:
            values = np.ascontiguousarray(_ORIENT[orientation](values))
            masks = None if masks is None else np.ascontiguousarray(_ORIENT[orientation](masks))
        self.values, self.masks = values, masks
        self.name = name
        self.height, self.width, self.count = values.shape
        self.dtypes = tuple(dtypes) if dtypes is not None else (values.dtype.name,) * self.count
        self.palette, self.alpha, self.header = palette, alpha, header
        if masked is None:
            masked = masks is not None or (palette is not None and bool((palette[:, 3] == 0).any()))
        self.masked = masked
        self.windowed, self.decoder, self.orientation = False, decoder, orientation if orientation in _ORIENT else 1
        self.notes = []
        self._describe_dtypes()
        if self.orientation != 1:
            self.notes.append(f"{name}: EXIF orientation {orientation} applied; the image, its mask and pixel "
                              f"coordinates are upright ({self.width} x {self.height} px)")

    def read(self, bands, window=None, out_shape=None):
        row0, col0, rows, cols = _window_box(window, self.height, self.width)
        if out_shape is None:
            index: Any = (slice(row0, row0 + rows), slice(col0, col0 + cols))
        else:  # GDAL's nearest neighbour: source pixel floor((i + 0.5) * size / out)
            r = row0 + np.floor((np.arange(int(out_shape[0])) + 0.5) * (rows / int(out_shape[0]))).astype(np.intp)
            c = col0 + np.floor((np.arange(int(out_shape[1])) + 0.5) * (cols / int(out_shape[1]))).astype(np.intp)
            index = np.ix_(r, c)
        chosen = [int(b) - 1 for b in bands]
        data = np.take(self.values[index], chosen, axis=2)  # C order (fancy indexing would transpose it)
        if self.masks is None:
            valid = np.ones(data.shape[:2], dtype=bool)
        elif self.masks.shape[2] == 1:
            valid = self.masks[index][..., 0].copy()
        else:
            valid = np.all(self.masks[index][..., chosen], axis=-1)
        return self._finish(data, valid)


def _window_box(window: Window | None, height: int, width: int) -> tuple[int, int, int, int]:
    if window is None:
        return 0, 0, height, width
    row0, col0 = int(window.row_off), int(window.col_off)
    rows, cols = int(window.height), int(window.width)
    if row0 < 0 or col0 < 0 or row0 + rows > height or col0 + cols > width or rows <= 0 or cols <= 0:
        raise GeoreasonError(f"window {window} is outside the {width} x {height} image")
    return row0, col0, rows, cols


def palette_lookup(palette: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """The RGBA entries [..., 4] of `indices` in a colour table [N, 4] (indices past the table: the last)."""
    return np.take(palette, np.asarray(indices).astype(np.intp), axis=0, mode="clip")


def gdal_palette(src: DatasetReader) -> np.ndarray | None:
    """The colour table of a one-band paletted raster as uint8 [N, 4] RGBA (N >= 256), else None."""
    if src.count != 1 or src.colorinterp[0] != ColorInterp.palette:
        return None
    try:
        colormap = src.colormap(1)
    except ValueError:  # palette interpretation without a table
        return None
    table = np.zeros((max(256, max(colormap, default=0) + 1), 4), dtype=np.uint8)
    table[:, 3] = 255
    for index, colour in colormap.items():
        if index >= 0:
            table[index, : len(colour)] = colour[:4]
    return table


def _gdal_masked(src: DatasetReader, palette: np.ndarray | None) -> bool:
    flags = src.mask_flag_enums
    return any(f != [MaskFlags.all_valid] for f in flags) or (palette is not None and bool((palette[:, 3] == 0).any()))


# -- opening ------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What the headers say about a file, before any pixel is decoded."""

    path: Path
    header: DatasetReader | None  # open; the caller closes it
    decoder: str  # "GDAL" or "Pillow"
    whole: str | None  # why the file is decoded whole ("a PNG file"); None: read by windows
    width: int  # as stored
    height: int
    orientation: int

    def shown_size(self) -> tuple[int, int]:
        """(width, height) as shown: swapped by EXIF orientations 5-8."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)


class _CannotOpen(Exception):
    """This decoder does not understand the file; the other one may."""


class NoPixels(Exception):
    """GDAL opened the file but it has no pixels or no bands."""


def open_with_gdal(path: Path) -> DatasetReader:
    """rasterio.open of a file by GDAL's name for it; the one place both readers (this module's and
    georeason.geo.open_raster) open files.

    NotGeoreferencedWarning is silenced: plain PNG/JPEG inputs are fine, their georeferencing is decided
    later (georeason.geo.georef). Raises one of GDAL_ERRORS when GDAL cannot open it, NoPixels (dataset
    closed) when it has no pixels or no bands.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        dataset = rasterio.open(gdal_name(path))
    if dataset.width <= 0 or dataset.height <= 0 or dataset.count <= 0:
        dataset.close()
        raise NoPixels()
    if dataset.driver == "PNG" and _png_cut_short(path):
        dataset.close()
        raise GeoreasonError(f"{printable(path)}: the PNG file ends before its image data does (its last chunk is "
                             "cut short): a partial download or copy? Copy the file again")
    return dataset


def _png_cut_short(path: Path) -> bool:
    """Whether a PNG file ends inside a chunk: GDAL's PNG driver reads such a file without an error,
    giving wrong pixels. Walks the chunk headers (8 bytes each, the data skipped) up to IEND, so bytes
    appended after IEND are ignored; a file that ends exactly between two chunks (IEND missing) is
    accepted, as its last chunk is whole. A path Python cannot open (a /vsi... name) is not checked."""
    if not Path(path).is_file():
        return False
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        position = 8  # after the signature
        while position + 8 <= size:
            file.seek(position)
            length, kind = struct.unpack(">I4s", file.read(8))
            position += 12 + length  # header, data, CRC
            if kind == b"IEND":
                return False
    return position != size


def _gdal_header(path: Path) -> DatasetReader:
    try:
        return open_with_gdal(path)
    except GDAL_ERRORS as exc:
        raise _CannotOpen(f"GDAL: {gdal_reason(exc)}") from None
    except NoPixels:
        raise _CannotOpen("GDAL: no pixels or no bands") from None


def _pillow_open(path: Path):
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as error:
        raise GeoreasonError(f"{path}: refused as a possible decompression bomb ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise _CannotOpen(f"Pillow: {error}") from None


def _georeferenced(src: DatasetReader) -> bool:
    """Any georeferencing at all: a CRS, a non-identity transform, GCPs or RPCs (orientation keeps off it)."""
    return src.crs is not None or not src.transform.is_identity or bool(src.gcps[0]) or src.rpcs is not None


def _exif_orientation(image: Any) -> int:
    try:
        value = int(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block leaves the image as stored
        return 1
    return value if value in _ORIENT else 1


def _whole_reason(src: DatasetReader) -> str | None:
    """Why GDAL must decode this raster whole to read any window, or None when it reads blocks."""
    if src.driver in SEQUENTIAL_FORMATS:
        return f"a {SEQUENTIAL_FORMATS[src.driver]} file"
    if src.driver == "GTiff" and src.profile.get("tiled"):
        return None  # a tiled GeoTIFF: a tile larger than the scene only means the scene is small
    block_rows, block_cols = src.block_shapes[0]
    one_block = block_rows >= src.height and block_cols >= src.width and src.height > 1
    if one_block and (src.driver != "GTiff" or src.compression is not None):
        return "a raster stored as one compressed block (a single strip)"
    return None


def _plan(path: Path) -> _Plan:
    """Decide, from the headers alone, who decodes `path` and how; the GDAL header stays open."""
    if not path.is_file():
        raise GeoreasonError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise GeoreasonError(f"{path}: the image file is empty (0 bytes)")
    try:
        header = _gdal_header(path)
    except _CannotOpen as gdal_problem:
        try:
            image = _pillow_open(path)
        except _CannotOpen as pillow_problem:
            raise GeoreasonError(f"{path}: cannot read this image ({gdal_problem}; {pillow_problem})") from None
        with image:
            return _Plan(path, None, "Pillow", f"a {image.format or 'Pillow-only'} file", image.width, image.height,
                         _exif_orientation(image))
    try:
        whole = _whole_reason(header)
        pillow = header.driver in PILLOW_DRIVERS and all(d == "uint8" for d in header.dtypes)
        orientation = 1
        if header.driver in SEQUENTIAL_FORMATS and not _georeferenced(header):
            # A header read; the pixel budget, not Pillow's own bomb check, judges the size afterwards.
            with contextlib.suppress(_CannotOpen, GeoreasonError), _pillow_open(path) as image:
                orientation = _exif_orientation(image)
        return _Plan(path, header, "Pillow" if pillow else "GDAL", whole, header.width, header.height, orientation)
    except BaseException:
        header.close()
        raise


def _amount(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} Mpx" if pixels >= 100_000 else f"{pixels} px"


def check_pixel_budget(name: str, width: int, height: int, max_pixels: int, mode: str = "read",
                       whole: str | None = None) -> None:
    """Refuse, from the header, an image with more pixels than `max_pixels` where they are decoded at once.

    mode "whole" (whole-image inference) and "read" (datasets, labels) decode every image at once;
    mode "tiled" decodes at once only what cannot be read by windows (`whole` says why: "a PNG file"),
    so tiled GeoTIFFs have no limit. Raises GeoreasonError naming the file, its size, the budget and
    what to do.
    """
    pixels = int(width) * int(height)
    if pixels <= 0:
        raise GeoreasonError(f"{name}: the image is empty (0 pixels)")
    if pixels <= max_pixels or (mode == "tiled" and whole is None):
        return
    size, limit = f"{width} x {height} px ({_amount(pixels)})", _amount(max_pixels)
    source = Path(name)
    tiled = f"{source.stem}_tiled.tif" if source.suffix.lower() in (".tif", ".tiff") else f"{source.stem}.tif"
    convert = (f"convert it to a tiled GeoTIFF (gdal_translate -co TILED=YES -co COMPRESS=DEFLATE "
               f"{shlex.quote(source.name)} {shlex.quote(tiled)})")
    if mode == "read":
        raise GeoreasonError(f"{name}: {size} is above the limit of {limit} for one image "
                             "(max_pixels; a decompression-bomb guard)")
    if mode == "whole" and whole is None:
        raise GeoreasonError(f"{name}: the scene is {size}, above the limit of {limit} for whole-image mode "
                             "(--max-pixels); use --tile to process it in tiles")
    if mode == "whole":
        raise GeoreasonError(f"{name}: the scene is {size}, above the limit of {limit} for whole-image mode "
                             f"(--max-pixels); {whole} is decoded whole even with --tile, so {convert} and use "
                             "--tile on that, or raise --max-pixels")
    raise GeoreasonError(f"{name}: {whole} is decoded whole, even with --tile, and this one declares {size}, above "
                         f"the limit of {limit} for an image decoded whole (--max-pixels); {convert} and use --tile "
                         "on that (tiled GeoTIFFs have no size limit), or raise --max-pixels if the machine has "
                         "the memory")


def pixel_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file as the reader shows it (EXIF orientation applied), from its header."""
    plan = _plan(Path(path))
    if plan.header is not None:
        plan.header.close()
    return plan.shown_size()


@contextlib.contextmanager
def open_pixels(source: Any, max_pixels: int = DEFAULT_MAX_PIXELS, mode: str = "read") -> Iterator[PixelSource]:
    """Open a path, an open rasterio dataset, a PIL image or a numpy array [H,W] / [H,W,C] for reading.

    The pixel budget is checked from the header before anything is decoded (see check_pixel_budget;
    `mode` is "whole", "tiled" or "read"). Rasters GDAL reads by blocks stay on disk (GdalSource);
    everything else is decoded once, whole (ArraySource): 8-bit PNG/JPEG/GIF/BMP/WebP by Pillow with
    their EXIF orientation applied unless GDAL finds georeferencing, other formats by GDAL.
    Raises GeoreasonError naming the file when it is missing, empty, unreadable or over the budget.
    """
    if mode not in MODES:
        raise GeoreasonError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(source, PixelSource):
        yield source
        return
    if isinstance(source, _OpenRaster):
        check_pixel_budget(str(source.name), source.width, source.height, max_pixels, mode)
        yield GdalSource(source)
        return
    if isinstance(source, np.ndarray):
        array = as_hwc(source, "array")
        check_pixel_budget("array", array.shape[1], array.shape[0], max_pixels, mode)
        yield ArraySource("array", array)
        return
    from PIL import Image

    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "PIL image"
        check_pixel_budget(name, source.width, source.height, max_pixels, mode)
        yield ArraySource(name, decoder="Pillow", orientation=_exif_orientation(source), **_pillow_arrays(source, name))
        return
    if not isinstance(source, (str, Path)):
        raise GeoreasonError(f"image: expected a path, a PIL image, a numpy array or an open rasterio dataset, "
                             f"got {type(source).__name__}")
    plan = _plan(Path(source))
    try:
        width, height = plan.shown_size()
        check_pixel_budget(str(plan.path), width, height, max_pixels, mode, plan.whole)
        yield _decode(plan)
    finally:
        if plan.header is not None:
            plan.header.close()


def _decode(plan: _Plan) -> PixelSource:
    name = str(plan.path)
    if plan.decoder == "Pillow":
        image = _pillow_open(plan.path)
        with image:
            return ArraySource(name, header=plan.header, decoder="Pillow", orientation=plan.orientation,
                               **_pillow_arrays(image, name))
    if plan.whole is None:
        return GdalSource(plan.header)
    src = plan.header
    flags = src.mask_flag_enums
    try:
        values = np.moveaxis(src.read(), 0, -1)
        if all(f == [MaskFlags.all_valid] for f in flags):
            masks = None
        elif all(MaskFlags.per_dataset in f for f in flags):
            masks = src.read_masks(1)[..., None] != 0
        else:
            masks = np.moveaxis(src.read_masks(), 0, -1) != 0
    except GDAL_ERRORS as exc:
        reason = gdal_reason(exc)
        raise GeoreasonError(f"{name}: cannot read the pixels (truncated or corrupt file?): {reason}") from exc
    palette = gdal_palette(src)
    alpha = next((i + 1 for i, c in enumerate(src.colorinterp) if c == ColorInterp.alpha), None)
    return ArraySource(name, values, masks, palette, alpha, src, "GDAL", plan.orientation, src.dtypes,
                       _gdal_masked(src, palette))


def _pillow_arrays(image: Any, name: str) -> dict[str, Any]:
    """Decode a PIL image to values [H, W, C], masks, palette and alpha band, as stored (no orientation).

    Paletted images keep their indexes and colour table (transparent entries are invalid); images with a
    transparent colour (tRNS) gain an alpha band; 1-bit becomes 0/255, CMYK/YCbCr/LAB/HSV become RGB.
    """
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except Image.DecompressionBombError as error:
        raise GeoreasonError(f"{name}: refused as a possible decompression bomb ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise GeoreasonError(f"{name}: the image is unreadable or truncated ({error})") from None
    mode, transparency = image.mode, image.info.get("transparency")
    if mode == "P":
        rawmode = "RGBA" if image.palette is not None and image.palette.mode == "RGBA" else "RGB"
        colours = np.asarray(image.getpalette(rawmode) or [], dtype=np.uint8).reshape(-1, len(rawmode))
        table = np.zeros((256, 4), dtype=np.uint8)
        table[:, 3] = 255
        table[: len(colours), : colours.shape[1]] = colours[:256]
        if isinstance(transparency, int) and 0 <= transparency < 256:
            table[transparency, 3] = 0
        elif isinstance(transparency, bytes):
            alphas = np.frombuffer(transparency, dtype=np.uint8)[:256]
            table[: len(alphas), 3] = alphas
        return {"values": np.asarray(image), "palette": table}
    if mode == "PA" or mode == "RGBa" or (mode == "RGB" and transparency is not None):
        image = image.convert("RGBA")
    elif mode == "La" or (mode == "L" and transparency is not None):
        image = image.convert("LA")
    elif mode == "1":
        image = image.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        image = image.convert("RGB")
    values = np.asarray(image)
    if image.mode.startswith("I;16"):
        values = values.astype(np.uint16)  # native byte order for I;16B
    if image.mode in ("LA", "RGBA"):
        return {"values": values, "masks": values[..., -1:] != 0, "alpha": values.shape[2]}
    return {"values": values}


# -- reading RGB --------------------------------------------------------------------------------------


def as_source(source: Any) -> PixelSource:
    """A PixelSource for an open rasterio dataset (read by windows) or a PixelSource itself."""
    if isinstance(source, PixelSource):
        return source
    if isinstance(source, _OpenRaster):
        return GdalSource(source)
    raise GeoreasonError(f"expected an open raster or a PixelSource, got {type(source).__name__}")


def resolve_bands(source: Any, bands: Sequence[int] | None) -> tuple[int, int, int]:
    """The three 1-based band indexes to read as R, G, B (default 1,2,3, or 1,1,1 for gray or gray + alpha)."""
    source = as_source(source)
    if bands is None:
        return (1, 2, 3) if source.count >= 3 else (1, 1, 1)
    chosen = [int(b) for b in bands]
    if len(chosen) == 1:
        chosen = chosen * 3
    if len(chosen) != 3:
        raise GeoreasonError(f"bands: expected 1 or 3 band indexes (e.g. 3,2,1), got {list(bands)}")
    for band in chosen:
        if not 1 <= band <= source.count:
            raise GeoreasonError(
                f"{source.name}: band {band} does not exist; the raster has {source.count} band(s), numbered from 1"
            )
    return chosen[0], chosen[1], chosen[2]


def needs_stretch(source: Any, bands: Sequence[int] | None = None) -> bool:
    """True unless the image is paletted or every chosen band is already 8-bit."""
    source = as_source(source)
    if source.palette is not None:
        return False
    return any(source.dtypes[b - 1] != "uint8" for b in resolve_bands(source, bands))


def scene_limits(source: Any, bands: Sequence[int] | None = None,
                 max_side: int = LIMITS_MAX_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2/98 % stretch limits of the whole scene, from a decimated read over valid pixels."""
    source = as_source(source)
    chosen = resolve_bands(source, bands)
    scale = min(1.0, max_side / max(source.height, source.width))
    out_shape = (max(1, math.ceil(source.height * scale)), max(1, math.ceil(source.width * scale)))
    data, valid = source.read(chosen, None, None if scale == 1.0 else out_shape)
    if not valid.any():
        raise GeoreasonError(f"{source.name}: every pixel is nodata; there is nothing to segment")
    low, high = percentile_limits(data, valid)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def read_rgb(
    source: Any,
    window: Window | None = None,
    bands: Sequence[int] | None = None,
    limits: tuple[np.ndarray, np.ndarray] | None = None,
    out_shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window (or the image) as RGB uint8 [h, w, 3] plus a validity mask bool [h, w].

    A paletted image shows its colours (whatever `bands`); 8-bit bands pass through unless `limits` are
    given; other types (int8, 16-bit, float, complex amplitude) are stretched with `limits`, which
    default to scene_limits() of the whole image so that every tile gets the same stretch. `out_shape`
    (h, w) resamples (nearest) for previews. Invalid pixels are black.
    """
    source = as_source(source)
    chosen = resolve_bands(source, bands)
    data, valid = source.read(chosen, window, out_shape)
    if source.palette is not None:
        rgb = palette_lookup(source.palette, data[..., 0])[..., :3]
    else:
        if limits is None and needs_stretch(source, chosen):
            limits = scene_limits(source, chosen)
        if limits is None:
            rgb = data.astype(np.uint8, copy=False)
        else:
            rgb = stretch_to_uint8(data, np.asarray(limits[0]), np.asarray(limits[1]))
    if not (rgb.flags.c_contiguous and rgb.flags.writeable and rgb.dtype == np.uint8):
        rgb = np.array(rgb, dtype=np.uint8, order="C")
    if not valid.all():
        rgb[~valid] = 0
    return rgb, valid


def load_image(source: Any, bands: Sequence[int] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """`source` (path, PIL image, numpy array [H,W] / [H,W,C], open rasterio dataset) as uint8 RGB [H,W,3].

    Read as every mode reads it (open_pixels + read_rgb): palettes expanded, alpha 0 / nodata black,
    EXIF orientation applied, non-8-bit data stretched 2-98 %. Raises GeoreasonError naming the file.
    """
    with open_pixels(source, max_pixels, "read") as pixels:
        return read_rgb(pixels, bands=bands)[0]
