"""Reading any raster (PNG/JPEG/TIFF/GeoTIFF, PIL image, numpy array) as an 8-bit RGB array.

Feeds the RGB 0-255 input of SPEC 2 ("Preprocessing"). Non-8-bit data is stretched per band between
its 2nd and 98th percentiles over valid pixels (the usual display stretch for 16-bit/float imagery).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from georeason.errors import GeoreasonError
from georeason.filenames import gdal_name

# Decompression-bomb guard: refuse anything above this many pixels before decoding it.
DEFAULT_MAX_PIXELS = 200_000_000
DEFAULT_PERCENTILES = (2.0, 98.0)
_TIFF_SUFFIXES = {".tif", ".tiff", ".gtiff"}


def percentile_limits(
    array: np.ndarray,
    valid: np.ndarray | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (low, high) percentiles of `array` [H,W,C] over `valid` [H,W] and finite pixels.

    Returns two float64 arrays of length C. A band with no valid pixel gets low = high = 0.
    """
    array = _as_hwc(array, "array")
    channels = array.shape[2]
    if valid is not None and valid.shape != array.shape[:2]:
        raise GeoreasonError(f"valid mask has shape {valid.shape}, expected {array.shape[:2]} (the image's H,W)")
    low = np.zeros(channels, dtype=np.float64)
    high = np.zeros(channels, dtype=np.float64)
    for band in range(channels):
        values = array[..., band]
        values = values[valid] if valid is not None else values.ravel()
        values = values.astype(np.float64, copy=False)
        values = values[np.isfinite(values)]
        if values.size:
            low[band], high[band] = np.percentile(values, [percentiles[0], percentiles[1]])
    return low, high


def stretch_to_uint8(array: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map each band linearly low -> 0, high -> 255 with clipping; constant bands and NaN map to 0."""
    array = _as_hwc(array, "array")
    low = np.asarray(low, dtype=np.float64).reshape(1, 1, -1)
    high = np.asarray(high, dtype=np.float64).reshape(1, 1, -1)
    span = high - low
    safe_span = np.where(span > 0, span, 1.0)
    scaled = (array.astype(np.float64) - low) * (255.0 / safe_span)
    scaled = np.where(span > 0, scaled, 0.0)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb_uint8(
    array: np.ndarray,
    bands: Sequence[int] | None = None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Select three bands (1-based; default the first three, or band 1 repeated) as uint8 [H,W,3].

    uint8 data passes through unchanged; any other dtype is stretched per band between the 2nd and
    98th percentiles of its valid, finite pixels (`percentile_limits` + `stretch_to_uint8`).
    """
    array = _as_hwc(array, "array")
    count = array.shape[2]
    if bands is None:
        bands = [1, 2, 3] if count >= 3 else [1, 1, 1]
    bands = list(bands)
    if len(bands) == 1:
        bands = bands * 3
    if len(bands) != 3:
        raise GeoreasonError(f"bands: expected 1 or 3 band indices, got {len(bands)} ({bands})")
    for index in bands:
        if not 1 <= int(index) <= count:
            raise GeoreasonError(f"bands: band {index} does not exist; the image has {count} band(s) (1-based)")
    selected = array[..., [int(b) - 1 for b in bands]]
    if selected.dtype == np.uint8:
        return np.ascontiguousarray(selected)
    if selected.dtype == np.bool_:
        return selected.astype(np.uint8) * 255
    low, high = percentile_limits(selected, valid)
    return stretch_to_uint8(selected, low, high)


def load_image(
    source: Any,
    bands: Sequence[int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Load `source` (a path, a PIL image or a numpy array [H,W] / [H,W,C]) as uint8 RGB [H,W,3].

    Paths: PIL for common formats (EXIF orientation applied), rasterio for TIFF/GeoTIFF and whatever
    PIL cannot read. Alpha is dropped, palettes are expanded, grayscale is repeated to 3 bands.
    """
    if isinstance(source, np.ndarray):
        _check_pixels(source.shape[0] * source.shape[1] if source.ndim >= 2 else 0, "array", max_pixels)
        return to_rgb_uint8(source, bands)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(source, Image.Image):
        return _from_pil(source, bands, "PIL image", max_pixels)
    if not isinstance(source, (str, Path)):
        raise GeoreasonError(f"load_image: expected a path, a PIL image or a numpy array, got {type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise GeoreasonError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise GeoreasonError(f"{path}: the image file is empty (0 bytes)")
    readers = [_read_with_rasterio, _read_with_pil]
    if path.suffix.lower() not in _TIFF_SUFFIXES:
        readers.reverse()
    problems = []
    for reader in readers:
        try:
            return reader(path, bands, max_pixels)
        except _CannotRead as problem:
            problems.append(str(problem))
    raise GeoreasonError(f"{path}: cannot read this image ({'; '.join(problems)})")


class _CannotRead(Exception):
    """This reader does not understand the file; the next one may."""


def _read_with_pil(path: Path, bands: Sequence[int] | None, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as error:
        raise GeoreasonError(f"{path}: refused as a possible decompression bomb ({error})") from None
    except (UnidentifiedImageError, OSError) as error:
        raise _CannotRead(f"PIL: {error}") from None
    with image:
        return _from_pil(image, bands, str(path), max_pixels)


def _from_pil(image: Any, bands: Sequence[int] | None, name: str, max_pixels: int) -> np.ndarray:
    from PIL import Image, ImageOps

    width, height = image.size
    _check_pixels(width * height, name, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as error:
        raise GeoreasonError(f"{name}: refused as a possible decompression bomb ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise GeoreasonError(f"{name}: the image is unreadable or truncated ({error})") from None
    mode = image.mode
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA" if "transparency" in image.info or mode == "PA" else "RGB")
    elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("L" if mode == "1" else "RGB")
    elif mode == "LA":
        image = image.getchannel("L")
    array = np.asarray(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = array.astype(np.uint16)
    return to_rgb_uint8(array, bands)


def _read_with_rasterio(path: Path, bands: Sequence[int] | None, max_pixels: int) -> np.ndarray:
    try:
        import rasterio
        from rasterio.enums import ColorInterp
        from rasterio.errors import NotGeoreferencedWarning, RasterioError, RasterioIOError
    except ImportError as error:  # pragma: no cover - rasterio is a dependency
        raise _CannotRead(f"rasterio unavailable: {error}") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            dataset = rasterio.open(gdal_name(path))
        except RasterioIOError as error:
            raise _CannotRead(f"rasterio: {error}") from None
        with dataset:
            _check_pixels(dataset.width * dataset.height, str(path), max_pixels)
            try:
                data = dataset.read()
                valid = dataset.dataset_mask() > 0 if data.dtype != np.uint8 else None
            except (RasterioError, RasterioIOError) as error:
                raise GeoreasonError(f"{path}: the image is unreadable or truncated ({error})") from None
            array = np.moveaxis(data, 0, -1)
            if dataset.count == 1 and dataset.colorinterp[0] == ColorInterp.palette:
                array = _apply_colormap(array[..., 0], dataset.colormap(1))
            elif dataset.count in (2, 4) and dataset.colorinterp[-1] == ColorInterp.alpha and bands is None:
                array = array[..., :-1]
    return to_rgb_uint8(array, bands, valid)


def _apply_colormap(indices: np.ndarray, colormap: dict[int, tuple[int, ...]]) -> np.ndarray:
    table = np.zeros((max(256, max(colormap) + 1), 3), dtype=np.uint8)
    for index, colour in colormap.items():
        table[index] = colour[:3]
    return table[indices.astype(np.int64)]


def _check_pixels(count: int, name: str, max_pixels: int) -> None:
    if count <= 0:
        raise GeoreasonError(f"{name}: the image is empty (0 pixels)")
    if count > max_pixels:
        raise GeoreasonError(
            f"{name}: {count} pixels is above the limit of {max_pixels} (max_pixels; a decompression-bomb guard)"
        )


def _as_hwc(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise GeoreasonError(f"{name}: expected an image array [H,W] or [H,W,C], got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0 or array.shape[2] == 0:
        raise GeoreasonError(f"{name}: the image is empty (shape {array.shape})")
    return array


def load_mask(source: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Load a label image (path or array) as a bool mask [H,W]: any non-zero value in any band is target."""
    if isinstance(source, np.ndarray):
        array = source
    else:
        path = Path(source)
        if not path.is_file():
            raise GeoreasonError(f"{path}: no such mask file")
        array = None
        try:
            from PIL import Image

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    _check_pixels(image.size[0] * image.size[1], str(path), max_pixels)
                    # Palette masks keep their indices: index 0 is background, as in VOC-style labels.
                    array = np.asarray(image)
        except GeoreasonError:
            raise
        except Exception:  # noqa: BLE001 - fall back to rasterio (TIFF variants PIL cannot read)
            array = None
        if array is None:
            array = _read_mask_with_rasterio(path, max_pixels)
    array = np.asarray(array)
    if array.ndim == 3:
        array = (array != 0).any(axis=2)
    if array.ndim != 2 or array.size == 0:
        raise GeoreasonError(f"{source}: expected a 2-D label image, got shape {array.shape}")
    return array != 0


def _read_mask_with_rasterio(path: Path, max_pixels: int) -> np.ndarray:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            with rasterio.open(gdal_name(path)) as dataset:
                _check_pixels(dataset.width * dataset.height, str(path), max_pixels)
                return np.moveaxis(dataset.read(), 0, -1)
        except RasterioError as error:
            raise GeoreasonError(f"{path}: cannot read this mask ({error})") from None
