"""A multipart/form-data body built in memory: text fields and one file (no QGIS imports: unit-tested).

QGIS plugin (docs/qgis.md); not in the paper. QgsBlockingNetworkRequest posts raw bytes, so the
form the service's POST /v1/jobs expects (docs/serve.md) is assembled here.
"""

from __future__ import annotations

import secrets


def form_body(fields: dict[str, str], file_field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    """(body, Content-Type header value) of a form with `fields` and the file `data` under `file_field`."""
    boundary = "georeason-" + secrets.token_hex(16)
    marker = boundary.encode("ascii")
    for name, value in fields.items():
        if any(c in name for c in '"\r\n'):
            raise ValueError(f"form field name {name!r} must not contain quotes or line breaks")
    if marker in data:  # astronomically unlikely with 128 random bits; refuse rather than send a broken body
        raise ValueError("the file happens to contain the multipart boundary; try again")
    parts = []
    for name, value in fields.items():
        parts.append(b"--" + marker + b"\r\n"
                     + f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode("utf-8")
                     + str(value).encode("utf-8") + b"\r\n")
    safe_name = "".join(c for c in filename if c.isalnum() or c in "._-") or "image.tif"
    parts.append(b"--" + marker + b"\r\n"
                 + f'Content-Disposition: form-data; name="{file_field}"; filename="{safe_name}"\r\n'.encode("utf-8")
                 + b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    parts.append(b"--" + marker + b"--\r\n")
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
