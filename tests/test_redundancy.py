"""Tests of georeason.redundancy: Eq. 1-3 on hand-computable images, skimage agreement, and the CLI."""

from __future__ import annotations

import csv
import json
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from georeason import redundancy
from georeason.cli import main
from georeason.errors import GeoreasonError
from georeason.redundancy import (
    C1,
    C2,
    entropy_redundancy,
    fit_to_patches,
    split_patches,
    ssim_matrix,
    structural_redundancy,
    to_gray,
)


def _random_gray(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w), dtype=np.uint8)


# ---------------------------------------------------------------- grayscale conversion and Eq. 1

def test_gray_is_rounded_bt601_with_halves_up():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(50, 50, 3), dtype=np.uint8)
    # Append pixels whose exact luma ends in .5, to pin the tie rule.
    ties = [(r, g, b) for r in range(0, 256, 5) for g in (0, 1, 2) for b in range(256)
            if (299 * r + 587 * g + 114 * b) % 1000 == 500][:40]
    assert len(ties) == 40
    rgb = np.concatenate([rgb.reshape(-1, 3), np.array(ties, dtype=np.uint8)])[None]
    expected = [int(Fraction(299 * int(r) + 587 * int(g) + 114 * int(b), 1000) + Fraction(1, 2))
                for r, g, b in rgb[0]]
    assert to_gray(rgb)[0].tolist() == expected
    assert to_gray(np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], np.uint8)).tolist() == [
        [76, 150, 29, 255]]
    grays = np.arange(256, dtype=np.uint8)
    assert np.array_equal(to_gray(np.stack([grays] * 3, axis=-1)[None])[0], grays)


def test_gray_rejects_non_rgb():
    with pytest.raises(GeoreasonError, match=r"expected a uint8 RGB array \[H,W,3\]"):
        to_gray(np.zeros((4, 4), np.uint8))


def test_entropy_redundancy_hand_values():
    assert entropy_redundancy(np.full((10, 13), 77, np.uint8)) == 1.0  # one level: H = 0
    uniform = np.arange(256, dtype=np.uint8).repeat(3).reshape(24, 32)  # every level 3 times
    assert entropy_redundancy(uniform) == pytest.approx(0.0, abs=1e-12)
    two_levels = np.zeros((8, 8), np.uint8)
    two_levels[:, 4:] = 200  # H = 1 bit
    assert entropy_redundancy(two_levels) == pytest.approx(1 - 1 / 8, abs=1e-12)
    four_levels = np.array([[0, 0, 1, 2], [0, 0, 3, 3]], np.uint8)  # p = 1/2, 1/8, 1/8, 1/4: H = 1.75
    assert entropy_redundancy(four_levels) == pytest.approx(1 - 1.75 / 8, abs=1e-12)


# ---------------------------------------------------------------- patches and Eq. 2-3

def test_split_patches_row_major():
    gray = np.arange(4 * 6, dtype=np.uint8).reshape(4, 6)
    patches = split_patches(gray, 2)
    assert patches.shape == (6, 4)
    assert patches[0].tolist() == [0, 1, 6, 7]
    assert patches[1].tolist() == [2, 3, 8, 9]
    assert patches[3].tolist() == [12, 13, 18, 19]


def test_identical_patches_give_rs_one():
    tile = _random_gray(16, 16, seed=3)
    gray = np.tile(tile, (3, 4))
    assert structural_redundancy(split_patches(gray, 16)) == pytest.approx(1.0, abs=1e-12)
    assert structural_redundancy(split_patches(np.full((32, 48), 9, np.uint8), 16)) == 1.0


def test_black_and_white_patches_hand_value():
    gray = np.zeros((16, 32), np.uint8)
    gray[:, 16:] = 255  # 4 black and 4 white 8x8 patches, all constant
    cross = C1 / (255.0**2 + C1)  # black vs white: luminance term only, structure term C2/C2 = 1
    expected = (2 * 4 * 3 * 1.0 + 2 * 4 * 4 * cross) / (8 * 7)
    assert structural_redundancy(split_patches(gray, 8)) == pytest.approx(expected, abs=1e-12)


def test_ssim_matrix_matches_explicit_eq2():
    patches = split_patches(_random_gray(24, 32, seed=4), 8)
    for sample, ddof in ((True, 1), (False, 0)):
        matrix = ssim_matrix(patches, sample_covariance=sample)
        for i, j in [(0, 1), (3, 7), (11, 2), (5, 5)]:
            x, y = patches[i], patches[j]
            sxy = np.cov(x, y, ddof=ddof)[0, 1]
            value = ((2 * x.mean() * y.mean() + C1) * (2 * sxy + C2)
                     / ((x.mean() ** 2 + y.mean() ** 2 + C1) * (x.var(ddof=ddof) + y.var(ddof=ddof) + C2)))
            assert matrix[i, j] == pytest.approx(value, abs=1e-12)
        assert np.allclose(np.diag(matrix), 1.0, atol=1e-12)
        assert np.allclose(matrix, matrix.T, atol=1e-12)


@pytest.mark.parametrize("patch", [7, 15])
@pytest.mark.parametrize("sample", [True, False])
def test_ssim_matrix_matches_skimage_whole_patch_window(patch: int, sample: bool):
    """skimage with a uniform window as large as the (odd-sized) patch: after cropping the filter radius
    only the centre pixel is left, whose window is exactly the whole patch, so mssim == M(i, j)."""
    skimage_metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(patch)
    # Mix of random, smooth and nearly constant patches so all terms of Eq. 2 matter.
    base = rng.integers(0, 256, size=(patch * 2, patch * 3)).astype(np.float64)
    base[:patch, :patch] = 100 + 0.1 * base[:patch, :patch]
    base[patch:, patch:2 * patch] = np.linspace(0, 255, patch * patch).reshape(patch, patch)
    gray = base.round().astype(np.uint8)
    patches = split_patches(gray, patch)
    matrix = ssim_matrix(patches, sample_covariance=sample)
    images = patches.reshape(-1, patch, patch)
    for i in range(len(images)):
        for j in range(len(images)):
            mssim, full = skimage_metrics.structural_similarity(
                images[i], images[j], win_size=patch, data_range=255, gaussian_weights=False,
                use_sample_covariance=sample, K1=0.01, K2=0.03, full=True)
            assert matrix[i, j] == pytest.approx(mssim, abs=1e-6)
            assert matrix[i, j] == pytest.approx(full[patch // 2, patch // 2], abs=1e-6)


def test_blocked_rs_equals_full_matrix_mean(monkeypatch):
    patches = split_patches(_random_gray(40, 56, seed=5), 8)  # 35 patches
    matrix = ssim_matrix(patches)
    expected = (matrix.sum() - np.trace(matrix)) / (35 * 34)
    monkeypatch.setattr(redundancy, "BLOCK_BYTES", 8 * 35 * 4)  # 4 rows per block, last block partial
    assert structural_redundancy(patches) == pytest.approx(expected, abs=1e-12)


def test_fit_to_patches_resizes_then_centre_crops():
    gray = _random_gray(70, 100)
    fitted = fit_to_patches(gray, 16, max_side=None)
    assert fitted.shape == (64, 96)
    assert np.array_equal(fitted, gray[3:67, 2:98])
    big = np.full((1000, 3000), 50, np.uint8)
    assert fit_to_patches(big, 32, max_side=1024).shape == (320, 1024)  # 3000x1000 -> 1024x341 -> crop
    assert fit_to_patches(big, 32, max_side=0).shape == (992, 2976)
    with pytest.raises(GeoreasonError, match="fewer than 2 patches of 32x32"):
        fit_to_patches(np.zeros((40, 40), np.uint8), 32)


# ---------------------------------------------------------------- the command

def _save(path, gray: np.ndarray) -> None:
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(path)


def _make_collections(tmp_path):
    black_white = np.zeros((16, 32), np.uint8)
    black_white[:, 16:] = 255
    first = tmp_path / "first"
    (first / "sub").mkdir(parents=True)
    _save(first / "bw.png", black_white)
    _save(first / "sub" / "noise.png", _random_gray(40, 48, seed=6))
    (first / "notes.txt").write_text("not an image")
    second = tmp_path / "second"
    second.mkdir()
    _save(second / "flat.png", np.full((24, 24), 128, np.uint8))
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(second / "scene.tif", "w", driver="GTiff", width=32, height=24, count=3, dtype="uint16",
                       crs="EPSG:32633", transform=rasterio.Affine(10, 0, 500000, 0, -10, 4000000)) as dst:
        dst.write(np.random.default_rng(7).integers(0, 4000, size=(3, 24, 32)).astype(np.uint16))
    return first, second


@pytest.mark.parametrize("workers", ["1", "2"])
def test_cli_end_to_end(tmp_path, capsys, workers: str):
    first, second = _make_collections(tmp_path)
    out = tmp_path / "report"
    code = main(["redundancy", str(first), str(second), "--patch", "8", "--out", str(out),
                 "--names", "RS", "natural", "--workers", workers])
    assert code == 0
    rows = list(csv.DictReader((out / "redundancy.csv").open()))
    assert len(rows) == 4
    assert list(rows[0]) == ["collection", "path", "width", "height", "patches", "R_e", "R_s"]
    by_name = {row["path"].rsplit("/", 1)[-1]: row for row in rows}
    bw = by_name["bw.png"]
    assert (bw["collection"], bw["width"], bw["height"], bw["patches"]) == ("RS", "32", "16", "8")
    assert float(bw["R_e"]) == pytest.approx(0.875, abs=1e-6)
    cross = C1 / (255.0**2 + C1)
    assert float(bw["R_s"]) == pytest.approx((24 + 32 * cross) / 56, abs=1e-6)
    assert by_name["noise.png"]["width"] == "48" and by_name["noise.png"]["height"] == "40"
    assert float(by_name["flat.png"]["R_e"]) == 1.0 and float(by_name["flat.png"]["R_s"]) == 1.0
    summary = json.loads((out / "redundancy.json").read_text())
    rs, natural = summary["collections"]
    assert (rs["name"], rs["images"], rs["analysed"], rs["failed"], rs["ignored_files"]) == ("RS", 2, 2, 0, 1)
    values = [float(r["R_e"]) for r in rows if r["collection"] == "RS"]
    assert rs["R_e"]["mean"] == pytest.approx(np.mean(values), abs=1e-6)
    assert rs["R_e"]["max"] == pytest.approx(0.875, abs=1e-6)
    assert natural["R_s"]["max"] == 1.0 and summary["settings"]["patch"] == 8
    chart = out / "redundancy.png"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(chart) as image:
        image.verify()
    printed = capsys.readouterr()
    assert "RS" in printed.out and "natural" in printed.out
    assert "ignored 1 non-image file" in printed.err


def test_cli_counts_and_reports_unreadable_images(tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    _save(folder / "good.png", _random_gray(32, 32))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    _save(folder / "tiny.png", _random_gray(8, 8))  # fewer than 2 patches of 8: reported, not dropped
    out = tmp_path / "report"
    assert main(["redundancy", str(folder), "--patch", "8", "--out", str(out), "--workers", "1"]) == 1
    rows = list(csv.DictReader((out / "redundancy.csv").open()))
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["good.png"]
    collection = json.loads((out / "redundancy.json").read_text())["collections"][0]
    assert (collection["images"], collection["analysed"], collection["failed"]) == (3, 1, 2)
    failed = {f["path"].rsplit("/", 1)[-1]: f["error"] for f in collection["failures"]}
    assert "cannot read this image" in failed["broken.png"] or "unreadable" in failed["broken.png"]
    assert "fewer than 2 patches" in failed["tiny.png"]
    err = capsys.readouterr().err
    assert "broken.png" in err and "2 image(s) could not be analysed" in err


def test_cli_bands_and_max_side_reach_the_workers(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    folder = tmp_path / "multiband"
    folder.mkdir()
    bands = np.random.default_rng(8).integers(0, 256, size=(4, 48, 64)).astype(np.uint8)
    bands[3] = 42  # a constant fourth band: R_e = R_s = 1 when it alone is read
    with rasterio.open(folder / "four.tif", "w", driver="GTiff", width=64, height=48, count=4, dtype="uint8",
                       crs="EPSG:32633", transform=rasterio.Affine(10, 0, 500000, 0, -10, 4000000)) as dst:
        dst.write(bands)
    out = tmp_path / "report"
    assert main(["redundancy", str(folder), "--patch", "8", "--bands", "4", "--max-side", "32",
                 "--workers", "2", "--out", str(out)]) == 0
    (row,) = list(csv.DictReader((out / "redundancy.csv").open()))
    assert (row["width"], row["height"], row["patches"]) == ("32", "24", "12")  # 64x48 -> 32x24
    assert float(row["R_e"]) == 1.0 and float(row["R_s"]) == 1.0
    summary = json.loads((out / "redundancy.json").read_text())
    assert summary["collections"][0]["resized"] == 1 and summary["settings"]["bands"] == [4]
    assert main(["redundancy", str(folder), "--patch", "8", "--workers", "1", "--out", str(out), "--overwrite"]) == 0
    (row,) = list(csv.DictReader((out / "redundancy.csv").open()))
    assert row["width"] == "64" and float(row["R_e"]) < 0.1  # bands 1-3 are noise


def test_cli_never_overwrites_an_earlier_report_unless_asked(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    _save(folder / "a.png", _random_gray(32, 32, seed=1))
    out = tmp_path / "report"
    assert main(["redundancy", str(folder), "--patch", "8", "--workers", "1", "--out", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in ("redundancy.csv", "redundancy.json", "redundancy.png")}
    _save(folder / "b.png", _random_gray(32, 32, seed=2))
    capsys.readouterr()
    assert main(["redundancy", str(folder), "--patch", "8", "--workers", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out}: already holds redundancy.csv, redundancy.json, redundancy.png from an earlier run" in err
    assert "pass --overwrite" in err
    assert {name: (out / name).read_bytes() for name in before} == before
    # A run that fails while writing leaves the earlier report whole and no temporary folder.
    import georeason.redundancy as redundancy

    def broken_chart(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(redundancy, "plot_chart", broken_chart)
    assert main(["redundancy", str(folder), "--patch", "8", "--workers", "1", "--out", str(out), "--overwrite"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "report"]
    monkeypatch.undo()
    assert main(["redundancy", str(folder), "--patch", "8", "--workers", "1", "--out", str(out), "--overwrite"]) == 0
    assert len(list(csv.DictReader((out / "redundancy.csv").open()))) == 2
    assert sorted(p.name for p in out.iterdir()) == ["redundancy.csv", "redundancy.json", "redundancy.png"]


def test_cli_missing_and_empty_folders(tmp_path, capsys):
    assert main(["redundancy", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    assert "nowhere: folder does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    assert main(["redundancy", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "empty: folder contains no images" in capsys.readouterr().err
    with pytest.raises(GeoreasonError, match="contains no images"):
        redundancy.analyse_collections([empty])
    assert not (tmp_path / "r").exists()


def test_cli_argument_errors(tmp_path, capsys):
    folder = tmp_path / "a"
    folder.mkdir()
    _save(folder / "x.png", _random_gray(16, 16))
    assert main(["redundancy", str(folder), "--names", "one", "two", "--out", str(tmp_path / "r")]) == 2
    assert "--names: got 2 name(s) for 1 folder(s)" in capsys.readouterr().err
    assert main(["redundancy", str(folder), "--patch", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--patch: expected a positive patch size" in capsys.readouterr().err
    assert main(["redundancy", str(folder), "--workers", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--workers: expected at least 1" in capsys.readouterr().err


def test_cli_help_has_example(capsys):
    with pytest.raises(SystemExit):
        main(["redundancy", "--help"])
    text = capsys.readouterr().out
    assert "georeason redundancy" in text and "--max-side" in text and "(default 1024)" in text
