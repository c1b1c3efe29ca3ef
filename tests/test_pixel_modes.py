"""Whole-image mode, the web service and --tile give the same model input and the same mask, per input kind.

With the tiny preset (at a 128 px input): for a scene smaller than one tile the docs promise whole ==
tiled; this holds for every input kind the pixel reader supports (tests/_pixel_kinds.py), including the
paletted GeoTIFF and complex SAR end to end through the CLI.
"""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient
from PIL import Image

from georeason.cli import main as georeason_main
from georeason.reasoner import GeoReasoner
from georeason.serve import ServeSettings, create_app
from georeason.serve.jobs import JobRequest, run_job
from tests._pixel_kinds import KINDS, cint16, palette_geotiff

QUESTION = "Where could a small plane land?"
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory):
    """The tiny preset at a 128 px input (the smallest its connector allows): 23 kinds x 3 model calls."""
    import dataclasses

    from georeason.config import preset
    from georeason.model.factory import build_model

    folder = tmp_path_factory.mktemp("tiny-128")
    model, tokenizer = build_model(dataclasses.replace(preset("tiny"), image_size=128), seed=0)
    model.save_pretrained(folder, tokenizer=tokenizer)
    return folder


@pytest.fixture(scope="module")
def reasoner(small_model_dir):
    return GeoReasoner.from_pretrained(small_model_dir)


@pytest.mark.parametrize("kind", [k.param() for k in KINDS])
def test_whole_upload_and_tiled_modes_agree_on_a_one_tile_scene(kind, reasoner, tmp_path):
    case = kind.build(tmp_path)
    # The web service's job (whole-image mode on the uploaded file): what it shows and the mask it writes.
    folder = tmp_path / "result"
    folder.mkdir()
    job = run_job(reasoner, JobRequest(case.path, QUESTION, answer=False, vectors=False, result_folder=folder,
                                       preview_max_side=4096, bands=list(case.bands) if case.bands else None))
    assert np.array_equal(np.asarray(Image.open(folder / "image.png")), case.rgb)
    if (folder / "mask.tif").exists():  # raster inputs (the writer `georeason predict` uses: rasters only)
        with rasterio.open(folder / "mask.tif") as src:
            whole = src.read(1)
    else:
        shown = np.asarray(Image.open(folder / "mask.png")) == 255
        assert not shown[~case.valid].any()  # nothing on nodata pixels
        whole = np.where(case.valid, shown.astype(np.uint8), np.uint8(255))
    assert np.array_equal(whole == 255, ~case.valid)  # nodata where the reader found invalid pixels
    assert 0 < int((whole == 1).sum()) < int(case.valid.sum())  # a mask with both classes, so equality means something
    if case.note:
        assert any(case.note in warning for warning in job.warnings), job.warnings
        assert not any(str(tmp_path) in warning for warning in job.warnings)  # no server paths

    tiled = reasoner.predict_tiled(case.path, QUESTION, tmp_path / "tiled.tif", tile_size=64, overlap=16,
                                   answer=False, bands=case.bands)
    assert tiled.tiles == 1 and np.array_equal(tiled.preview, case.rgb)
    with rasterio.open(tmp_path / "tiled.tif") as src:
        assert np.array_equal(src.read(1), whole)
    assert (case.note is None and tiled.notes == []) or any(case.note in note for note in tiled.notes)


@pytest.mark.input_kind("pixels", "one-band paletted GeoTIFF, whole vs --tile from the command line",
                        "both modes feed the palette colours; the mask PNGs are identical")
def test_paletted_geotiff_whole_and_tile_cli_masks_are_identical(small_model_dir, tmp_path):
    case = palette_geotiff(tmp_path)
    for mode, flags in (("whole", []), ("tiled", ["--tile"])):
        assert georeason_main(["predict", "--model", str(small_model_dir), str(case.path), "--question", QUESTION,
                               "--out", str(tmp_path / mode), "--no-progress", "--no-answer", *flags]) == 0
    whole, tiled = (np.asarray(Image.open(tmp_path / mode / "landcover_pal.mask.png")) for mode in ("whole", "tiled"))
    assert np.array_equal(whole, tiled)


@pytest.mark.input_kind("pixels", "complex SAR GeoTIFF (CInt16, CFloat32), whole and --tile, CLI and web service",
                        "amplitude |z| in both modes, exit 0, the note printed and in summary.json; the service "
                        "answers 200 with the note in its warnings")
def test_complex_sar_runs_in_both_modes_with_a_note(small_model_dir, reasoner, tmp_path, capsys):
    case = cint16(tmp_path)
    note = (f"{case.path}: complex samples (complex_int16) are read as their amplitude |z|, stretched 2-98 %, "
            "not as the real part")
    for mode, flags in (("whole", []), ("tiled", ["--tile"])):
        code = georeason_main(["predict", "--model", str(small_model_dir), str(case.path), "--question", QUESTION,
                               "--out", str(tmp_path / mode), "--no-progress", "--no-answer", *flags])
        assert code == 0
        assert f"  note: {note}" in capsys.readouterr().out
        entry = json.loads((tmp_path / mode / "summary.json").read_text())["inputs"][0]
        assert entry["status"] == "ok" and entry["notes"] == [note]
    with TestClient(create_app(reasoner, ServeSettings())) as client:
        response = client.post("/v1/predict", files={"image": ("slc.tif", case.path.read_bytes())},
                               data={"question": QUESTION, "answer": "false"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert ("the uploaded image: complex samples (complex_int16) are read as their amplitude |z|, stretched "
            "2-98 %, not as the real part") in body["warnings"]
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png_base64"]))))
    assert mask.shape == case.rgb.shape[:2]


@pytest.mark.input_kind("pixels", "PNG declaring 60000 x 60000 px with predict --tile",
                        "that pair fails at once with the budget message; summary.json is written")
def test_predict_tile_refuses_a_png_bomb_at_once(small_model_dir, tmp_path, capsys):
    from tests.test_pixel_reader import _png_header

    _png_header(tmp_path / "bomb.png", 60000, 60000)
    code = georeason_main(["predict", "--model", str(small_model_dir), str(tmp_path / "bomb.png"), "--question",
                           QUESTION, "--out", str(tmp_path / "out"), "--no-progress", "--tile"])
    assert code == 2
    entry = json.loads((tmp_path / "out" / "summary.json").read_text())["inputs"][0]
    assert entry["status"] == "failed"
    assert entry["error"].startswith(f"{tmp_path / 'bomb.png'}: a PNG file is decoded whole, even with --tile, and "
                                     "this one declares 60000 x 60000 px (3600.0 Mpx), above the limit of 64.0 Mpx")
    assert "gdal_translate -co TILED=YES -co COMPRESS=DEFLATE bomb.png bomb.tif" in capsys.readouterr().err
