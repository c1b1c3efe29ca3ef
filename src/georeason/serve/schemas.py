"""The REST API's response models; their Field descriptions become the OpenAPI schema at /openapi.json.

Web demo and REST service (docs/serve.md); not in the paper.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """Every error (4xx/5xx) has this body; the message says what was wrong and what is expected."""

    detail: str = Field(description="A readable message naming the field or limit at fault.")


class ImageSize(BaseModel):
    width: int = Field(description="Width of the input image in pixels (after EXIF orientation).")
    height: int = Field(description="Height of the input image in pixels.")


class Downloads(BaseModel):
    """Relative URLs of the result files; each expires with the result (see expires_in_seconds)."""

    mask_png: str = Field(description="Binary mask, 8-bit gray PNG at input size: 255 = target, 0 = background.")
    mask_tif: str | None = Field(description="Binary mask as GeoTIFF (uint8 0/1, 255 = nodata), with the input's "
                                             "georeferencing, whatever it is: CRS and geotransform, GCPs and "
                                             "their CRS, RPCs. Null for inputs that are not rasters (PNG, JPEG "
                                             "without georeferencing), as `georeason predict` writes it.")
    overlay_png: str = Field(description="The input with the mask blended in and the question/answer below.")
    image_png: str = Field(description="The input as the model saw it (8-bit RGB), at most preview_max_side "
                                       "pixels on its long side; the demo page draws the mask over it.")
    vectors_gpkg: str | None = Field(description="Mask polygons as a GeoPackage in the input's CRS (through "
                                                 "the geotransform or the GCPs; pixel coordinates without either); "
                                                 "null when vectors=false.")
    vectors_geojson: str | None = Field(description="Mask polygons as RFC 7946 GeoJSON (EPSG:4326 lon/lat); "
                                                    "null when vectors=false or the polygons cannot be lon/lat "
                                                    "(pixel coordinates, a local CRS, no CRS; see warnings).")


class Timings(BaseModel):
    """Wall-clock seconds spent in each stage of this request."""

    upload: float = Field(description="Receiving and checking the upload (size, type, pixel count).")
    queue: float = Field(description="Waiting in the inference queue for earlier requests.")
    inference: float = Field(description="Reading the image and running the model (GeoReasoner.predict).")
    outputs: float = Field(description="Writing the result files (PNG, GeoTIFF, vectors).")
    total: float = Field(description="From the first byte read to the response.")
    model: dict[str, float] = Field(description="The model's own breakdown of `inference` (stage -> seconds).")


class PredictResponse(BaseModel):
    """The result of POST /v1/predict."""

    id: str = Field(description="Opaque random id of the stored result, used in the download URLs.")
    question: str = Field(description="The question as received (surrounding whitespace removed).")
    answer: str | None = Field(description="The model's text answer, or null when answer=false was sent.")
    empty: bool = Field(description="True when the model found no target in the image (the mask is all zero).")
    target_pixels: int = Field(description="Number of mask pixels marked as target.")
    image: ImageSize = Field(description="Size of the input image; the mask has the same size.")
    mask_png_base64: str = Field(description="The binary mask as a base64-encoded 8-bit gray PNG (255 = target).")
    georeferenced: bool = Field(description="True when the polygons are in map coordinates with a known CRS "
                                            "(a CRS with a geotransform, or GCPs with their CRS).")
    crs: str | None = Field(description="The CRS of those map coordinates (e.g. EPSG:4326), else null.")
    georeferencing: str = Field(description="What places the input on the Earth: crs_transform, transform_only "
                                            "(a geotransform without CRS), gcps, rpcs, crs_only (a CRS without "
                                            "geotransform) or none; the mask GeoTIFF keeps all of it.")
    geojson: dict[str, Any] | None = Field(
        description="Mask polygons as a GeoJSON FeatureCollection in EPSG:4326 (lon/lat), when vectors=true and "
                    "the polygons can be expressed in lon/lat; null otherwise (warnings say why, e.g. a local "
                    "CRS, or when too large to inline).")
    timings: Timings = Field(description="Seconds spent per stage.")
    downloads: Downloads = Field(description="Relative URLs of the result files.")
    expires_in_seconds: int = Field(description="The result files can be downloaded for this many seconds.")
    warnings: list[str] = Field(description="Things worth knowing about this result (e.g. pixel-coordinate "
                                            "vectors for an image without georeferencing, or why there is no "
                                            "GeoJSON).")


class QueueStatus(BaseModel):
    waiting: int = Field(description="Requests accepted and waiting for the inference thread.")
    capacity: int = Field(description="Maximum waiting requests; beyond it POST /v1/predict answers 503.")
    busy: bool = Field(description="True while the inference thread runs a request.")
    completed: int = Field(description="Requests processed successfully since start.")
    failed: int = Field(description="Requests whose processing raised an error since start.")
    refused: int = Field(description="Requests refused with 503 because the queue was full.")


class HealthResponse(BaseModel):
    status: str = Field(description="Always 'ok' while the server answers.")
    uptime_seconds: float = Field(description="Seconds since the app was created.")
    queue: QueueStatus = Field(description="The inference queue.")
    results_stored: int = Field(description="Results currently kept for download.")


class Limits(BaseModel):
    """The server's input limits (set by `georeason serve` options)."""

    max_upload_bytes: int = Field(description="Largest accepted image file (--max-upload-mb); larger -> 413.")
    max_pixels: int = Field(description="Largest accepted width x height, checked from the header (--max-pixels); "
                                        "larger -> 413.")
    max_question_chars: int = Field(description="Longest accepted question (--max-question-chars); longer -> 422.")
    queue_size: int = Field(description="Waiting requests before 503 (--queue-size).")
    result_ttl_seconds: int = Field(description="How long result files stay downloadable (--result-ttl).")
    formats: list[str] = Field(description="Accepted image formats, recognised by their magic bytes.")


class ModelResponse(BaseModel):
    preset: str = Field(description="The model preset name (e.g. tiny, smol, paper).")
    parameters: int = Field(description="Number of model parameters.")
    device: str = Field(description="Torch device the model runs on.")
    dtype: str = Field(description="Torch dtype of the weights.")
    num_beams: int = Field(description="Beam search width for answers; 1 = greedy (--num-beams).")
    image_size: int = Field(description="Side of the square model input in pixels.")
    max_question_tokens: int = Field(description="Longest question in tokens the model accepts.")
    limits: Limits = Field(description="The server's input limits.")


class SampleInfo(BaseModel):
    name: str = Field(description="File name of the bundled sample.")
    title: str = Field(description="What the sample shows.")
    question: str = Field(description="A suggested question.")
    url: str = Field(description="Relative URL of the sample file.")


class JobLinks(BaseModel):
    status: str = Field(description="GET this URL for the job's state, progress and (when done) result.")
    cancel: str = Field(description="DELETE this URL to cancel the job.")


class JobError(BaseModel):
    status: int = Field(description="The HTTP status /v1/predict would have answered (422 or 500).")
    detail: str = Field(description="A readable message naming the field or limit at fault.")


class JobResponse(BaseModel):
    """The state of an asynchronous job (POST /v1/jobs, GET and DELETE /v1/jobs/{id})."""

    id: str = Field(description="Opaque random id of the job; also the id of its result files.")
    status: str = Field(description="queued, running, cancelling, done, failed or cancelled.")
    stage: str = Field(description="What the job is doing, in words (e.g. 'tile 3 of 12').")
    progress: float = Field(description="Fraction done, 0..1; in tiled mode it advances with every tile.")
    tiles_done: int | None = Field(description="Tiles predicted so far (tiled mode), else null.")
    tiles_total: int | None = Field(description="Tiles in the scene (tiled mode, once known), else null.")
    elapsed_seconds: float = Field(description="Seconds since the job was accepted (until it finished).")
    error: JobError | None = Field(description="Why the job failed (status failed), else null.")
    result: PredictResponse | None = Field(description="The same body as POST /v1/predict, once status is done.")
    links: JobLinks = Field(description="Relative URLs to poll and to cancel the job.")
