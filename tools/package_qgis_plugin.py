"""Package qgis_plugin/georeason as the zip QGIS installs (Plugins > Manage and Install > Install from ZIP).

Usage: python tools/package_qgis_plugin.py [--out dist]   (or `make qgis-plugin`)
Writes dist/georeason-qgis-<version>.zip with one top-level folder `georeason/` (what QGIS expects),
without caches; refuses when metadata.txt's version differs from pyproject.toml's.
"""

from __future__ import annotations

import argparse
import configparser
import re
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "qgis_plugin" / "georeason"
SKIP_PARTS = {"__pycache__", ".pytest_cache"}
SKIP_SUFFIXES = {".pyc", ".pyo"}


def plugin_files(folder: Path = PLUGIN) -> list[Path]:
    """The files that go into the zip, sorted (so the zip's listing is reproducible)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix not in SKIP_SUFFIXES
                  and not SKIP_PARTS & set(p.relative_to(folder).parts))


def metadata_version(folder: Path = PLUGIN) -> str:
    parser = configparser.ConfigParser()
    parser.read(folder / "metadata.txt", encoding="utf-8")
    return parser["general"]["version"]


def project_version() -> str:
    match = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    if match is None:
        raise SystemExit("pyproject.toml: no version = \"...\" line")
    return match.group(1)


def build(out: Path) -> Path:
    version = metadata_version()
    if version != project_version():
        raise SystemExit(f"qgis_plugin/georeason/metadata.txt: version {version} differs from pyproject.toml's "
                         f"{project_version()}; make them equal")
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"georeason-qgis-{version}.zip"
    partial = target.with_suffix(".zip.partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in plugin_files():
            archive.write(path, f"georeason/{path.relative_to(PLUGIN).as_posix()}")
        archive.write(REPO / "LICENSE", "georeason/LICENSE")
    partial.replace(target)  # a failed build never leaves a half-written zip under the final name
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="output folder (default dist/)")
    target = build(parser.parse_args(argv).out)
    print(f"wrote {target} ({target.stat().st_size / 1024:.0f} KB); install it in QGIS with Plugins > Manage and "
          "Install Plugins > Install from ZIP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
