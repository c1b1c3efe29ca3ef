"""Upload handling: a streaming, size-limited multipart reader and header-only image checks.

Web demo and REST service (docs/serve.md); not in the paper. Bodies are parsed as they arrive and the
file part is written to a private temporary folder under a server-chosen name, so an oversized
upload is refused after at most `limit` bytes and no client-supplied name is ever a path.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import AsyncIterator
from typing import IO, Any

from starlette.requests import ClientDisconnect

try:
    from python_multipart.multipart import MultipartParser, parse_options_header
    from python_multipart.exceptions import MultipartParseError
except ImportError:  # python-multipart < 0.0.13 names its module `multipart`
    from multipart.exceptions import MultipartParseError  # type: ignore[no-redef]
    from multipart.multipart import MultipartParser, parse_options_header  # type: ignore[no-redef]

# Room for the text fields and the multipart framing on top of the file limit.
BODY_OVERHEAD = 64 * 1024
MAX_FIELD_BYTES = 16 * 1024

# Magic numbers of the accepted formats; the suffix matters to the readers (TIFF goes to rasterio).
_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
]
SUFFIXES = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif"}


class UploadError(Exception):
    """A request the server refuses, with the HTTP status and a message for the client."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class ClientDisconnected(Exception):
    """The client closed the connection before its whole upload arrived (nothing to answer)."""

    def __init__(self, received: int) -> None:
        super().__init__(f"the client disconnected after sending {received:,} bytes")
        self.received = received


@dataclass
class Upload:
    """A parsed form: text fields in memory, the file on disk in `folder` (the caller deletes it)."""

    folder: Path
    fields: dict[str, str] = field(default_factory=dict)
    file_path: Path | None = None
    file_bytes: int = 0

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.3g} MB"


class _FormCollector:
    """python-multipart callbacks that route each part to a bounded buffer or the upload file."""

    def __init__(self, upload: Upload, file_field: str, text_fields: tuple[str, ...], max_file_bytes: int) -> None:
        self.upload = upload
        self.file_field = file_field
        self.text_fields = text_fields
        self.max_file_bytes = max_file_bytes
        self.ended = False
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._buffer = bytearray()
        self._file: IO[bytes] | None = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value_data, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end, "on_end": self._end,
        }

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _part_begin(self) -> None:
        self._headers, self._name, self._buffer = {}, None, bytearray()
        self._header_name = self._header_value = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if disposition != b"form-data" or name is None:
            raise UploadError(400, "malformed multipart body: a part has no Content-Disposition form-data name")
        self._name = name.decode("utf-8", "replace")
        expected = ", ".join([self.file_field, *self.text_fields])
        if self._name not in (self.file_field, *self.text_fields):
            raise UploadError(422, f"unknown form field {self._name[:40]!r}; expected the fields {expected}")
        if self._name in self.upload.fields or (self._name == self.file_field and self.upload.file_path):
            raise UploadError(422, f"form field {self._name!r} was sent twice; send it once")
        if self._name == self.file_field:
            # The client's filename is never used: the server picks the name (suffix set after sniffing).
            self.upload.file_path = self.upload.folder / "upload.bin"
            self._file = open(self.upload.file_path, "xb")  # noqa: SIM115 - closed in _part_end / close

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        if self._file is not None:
            self.upload.file_bytes += size
            if self.upload.file_bytes > self.max_file_bytes:
                raise UploadError(413, f"the uploaded image is larger than the server limit of "
                                       f"{_megabytes(self.max_file_bytes)} (--max-upload-mb)")
            self._file.write(data[start:end])
        else:
            if len(self._buffer) + size > MAX_FIELD_BYTES:
                raise UploadError(413, f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")
            self._buffer += data[start:end]

    def _part_end(self) -> None:
        if self._file is not None:
            self.close()
        elif self._name is not None:
            try:
                self.upload.fields[self._name] = self._buffer.decode("utf-8")
            except UnicodeDecodeError:
                raise UploadError(422, f"form field {self._name!r} is not valid UTF-8 text") from None

    def _end(self) -> None:
        self.ended = True


async def read_form(
    request: Any,
    max_file_bytes: int,
    file_field: str = "image",
    text_fields: tuple[str, ...] = ("question", "answer", "vectors", "bands"),
    timeout: float = 120.0,
) -> Upload:
    """Stream a multipart/form-data request body into an Upload; raises UploadError (400/408/413/415/422),
    or ClientDisconnected when the client goes away mid-upload (the partial upload is deleted).

    The whole body must arrive within `timeout` seconds, so a client that stalls or trickles bytes
    cannot hold a connection and a temporary file forever.
    """
    content_type = request.headers.get("content-type", "")
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise UploadError(415, f"expected a multipart/form-data body (an {file_field!r} file and the fields "
                               f"{', '.join(text_fields)}), got Content-Type {content_type[:60]!r}")
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadError(400, "malformed multipart body: the Content-Type has no boundary")
    body_limit = max_file_bytes + BODY_OVERHEAD
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit:
        raise UploadError(413, f"the request body ({_megabytes(int(declared))}) is larger than the server limit "
                               f"of {_megabytes(max_file_bytes)} for an image (--max-upload-mb)")
    upload = Upload(folder=Path(tempfile.mkdtemp(prefix="georeason-upload-")))  # mode 0700
    collector = _FormCollector(upload, file_field, text_fields, max_file_bytes)
    received = 0
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        async for chunk in _with_deadline(request.stream(), timeout):
            received += len(chunk)
            if received > body_limit:
                raise UploadError(413, f"the request body is larger than the server limit of "
                                       f"{_megabytes(max_file_bytes)} for an image (--max-upload-mb)")
            if chunk:
                parser.write(chunk)
        parser.finalize()
        if not collector.ended:
            raise UploadError(400, "malformed multipart body: it ended before the closing boundary")
    except MultipartParseError as error:
        collector.close()
        upload.discard()
        raise UploadError(400, f"malformed multipart body: {error}") from None
    except ClientDisconnect:
        collector.close()
        upload.discard()
        raise ClientDisconnected(received) from None
    except BaseException:
        collector.close()
        upload.discard()
        raise
    return upload


async def _with_deadline(chunks: AsyncIterator[bytes], timeout: float) -> AsyncIterator[bytes]:
    """The chunks of `chunks`, or UploadError 408 once `timeout` seconds have passed since the first call."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    iterator = chunks.__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), max(0.0, deadline - loop.time()))
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise UploadError(408, f"the upload did not arrive within {timeout:g} s (--upload-timeout)") from None
        yield chunk


def sniff_image(path: Path) -> str | None:
    """'png', 'jpeg' or 'tiff' from the file's first bytes, or None for anything else."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def image_dimensions(path: Path, kind: str) -> tuple[int, int]:
    """(width, height) from the header alone, without decoding pixels (the decompression-bomb check)."""
    if kind == "tiff":
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioError

        try:
            from rasterio._err import CPLE_BaseError as gdal_error
        except ImportError:  # pragma: no cover
            gdal_error = RasterioError
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(path) as dataset:
                    return dataset.width, dataset.height
        except (RasterioError, gdal_error) as error:
            raise UploadError(422, f"the uploaded TIFF is unreadable (its header: {str(error)[:200]})") from None
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:  # lazy: reads the header only
                return image.size
    except Image.DecompressionBombError as error:  # PIL's own ceiling, far above any sane --max-pixels
        raise UploadError(413, f"the uploaded image is refused as a decompression bomb ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise UploadError(422, f"the uploaded {kind.upper()} is unreadable ({str(error)[:200]})") from None
