"""Scene catalogues for `georeason batch`: rasters, folders, globs, text lists of paths/URLs, STAC JSON.

No paper section; the input kinds and their rules are in docs/batch.md, "Inputs".
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from georeason.errors import GeoreasonError
from georeason.filenames import printable, unique_names

# What a folder or glob lists as scenes (anything else in a folder is left alone).
RASTER_SUFFIXES = {".tif", ".tiff", ".gtiff", ".vrt", ".jp2", ".img", ".png", ".jpg", ".jpeg"}
LIST_SUFFIXES = {".txt", ".lst", ".list"}
STAC_SUFFIXES = {".json", ".geojson"}
# URL schemes GDAL reads through its virtual file systems.
URL_PREFIXES = {"http://": "/vsicurl/", "https://": "/vsicurl/", "s3://": "/vsis3/", "gs://": "/vsigs/",
                "az://": "/vsiaz/"}
INPUT_KINDS = "a raster, a folder of rasters, a glob pattern, a text list of paths/URLs (.txt) or STAC JSON (.json)"


@dataclass(frozen=True)
class Scene:
    """One scene of the catalogue: what GDAL opens, the name its outputs start with, where it was listed."""

    source: str  # a local path or a GDAL virtual file name (/vsicurl/https://..., /vsis3/bucket/key)
    stem: str  # the output name before de-duplication: the file stem, or the STAC item id
    origin: str  # the argument, "LIST:LINE" or "STAC:ITEM" that listed it
    error: str | None = None  # set when the catalogue lists the scene but it cannot be used (its pairs fail)


@dataclass(frozen=True)
class Pair:
    """One (scene, question) pair of a run and the name of its outputs (unique within the run)."""

    scene: Scene
    question: str
    name: str

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the pair across reruns of a run folder."""
        return self.scene.source, self.question


def gdal_source(text: str) -> str:
    """A path or URL as GDAL opens it: http(s)://, s3://, gs://, az:// become /vsicurl/, /vsis3/ ... names."""
    for prefix, vsi in URL_PREFIXES.items():
        if text.lower().startswith(prefix):
            return vsi + (text if vsi == "/vsicurl/" else text[len(prefix):])
    return text


def is_remote(source: str) -> bool:
    return source.startswith("/vsi")


def _stem(source: str) -> str:
    name = source.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    return Path(name).stem or "scene"


def _resolve(entry: str, base: Path) -> str:
    """A list or STAC entry: a URL as GDAL opens it, a relative path relative to the listing file's folder."""
    source = gdal_source(entry)
    if is_remote(source) or Path(source).is_absolute():
        return source
    return str(base / source)


def _read_list(path: Path) -> list[Scene]:
    from georeason.textfiles import read_text_file

    scenes = []
    for number, line in enumerate(read_text_file(path, "scene list").splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        source = _resolve(entry, path.parent)
        scenes.append(Scene(source, _stem(source), f"{printable(path)}:{number}"))
    if not scenes:
        raise GeoreasonError(f"{printable(path)}: the scene list has no entries (expected one path or URL per line)")
    return scenes


def _stac_items(path: Path) -> list[Any]:
    """The items of a STAC ItemCollection, Item, Catalog or Collection file (links followed by pystac)."""
    import pystac

    from georeason.textfiles import read_text_file

    try:
        data = json.loads(read_text_file(path, "STAC file"))
    except json.JSONDecodeError as error:
        raise GeoreasonError(f"{printable(path)}: not valid JSON ({error.msg}, line {error.lineno})") from None
    kind = data.get("type") if isinstance(data, dict) else None
    try:
        if kind == "FeatureCollection":
            return list(pystac.ItemCollection.from_dict(data).items)
        if kind == "Feature":
            return [pystac.Item.from_dict(data)]
        if kind in ("Catalog", "Collection"):
            return list(pystac.read_file(str(path)).get_items(recursive=True))
    except GeoreasonError:
        raise
    except Exception as error:  # noqa: BLE001 - pystac raises many kinds for malformed STAC
        raise GeoreasonError(f"{printable(path)}: not a valid STAC {kind} ({type(error).__name__}: "
                             f"{printable(error)})") from None
    raise GeoreasonError(f"{printable(path)}: expected a STAC ItemCollection, Item, Catalog or Collection "
                         f"(JSON \"type\" FeatureCollection, Feature, Catalog or Collection), got type {kind!r}")


def _read_stac(path: Path, asset: str | None) -> list[Scene]:
    items = _stac_items(path)
    if not items:
        raise GeoreasonError(f"{printable(path)}: the STAC file has no items")
    if asset is not None and not any(asset in item.assets for item in items):
        raise GeoreasonError(f"{printable(path)}: no item has an asset {asset!r} (--asset); the first item "
                             f"({items[0].id}) has: {', '.join(sorted(items[0].assets)) or 'no assets'}")
    scenes = []
    for item in items:
        origin = f"{printable(path)}:{item.id}"
        keys = sorted(item.assets)
        key = asset if asset is not None else (keys[0] if len(keys) == 1 else None)
        if key is None:
            raise GeoreasonError(f"{printable(path)}: item {item.id} has {len(keys)} assets "
                                 f"({', '.join(keys) or 'none'}); choose one with --asset KEY, e.g. --asset visual")
        if key not in item.assets:
            scenes.append(Scene(f"{origin}#{key}", item.id, origin,
                                error=f"STAC item {item.id} in {printable(path)} has no asset {key!r} (it has: "
                                      f"{', '.join(keys) or 'none'})"))
            continue
        href = item.assets[key].get_absolute_href() or item.assets[key].href
        scenes.append(Scene(_resolve(href, path.parent), item.id, origin))
    return scenes


def _expand(spec: str, asset: str | None) -> list[Scene]:
    source = gdal_source(spec)
    if is_remote(source):
        return [Scene(source, _stem(source), spec)]
    path = Path(spec)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.suffix.lower() in RASTER_SUFFIXES)
        if not found:
            raise GeoreasonError(f"{printable(path)}: the folder has no rasters "
                                 f"({', '.join(sorted(RASTER_SUFFIXES))})")
        return [Scene(str(p), p.stem, spec) for p in found]
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in LIST_SUFFIXES:
            return _read_list(path)
        if suffix in STAC_SUFFIXES:
            return _read_stac(path, asset)
        return [Scene(str(path), path.stem, spec)]
    if glob.has_magic(spec):
        found = sorted(Path(p) for p in glob.glob(spec, recursive=True))
        found = [p for p in found if p.is_file() and p.suffix.lower() in RASTER_SUFFIXES]
        if not found:
            raise GeoreasonError(f"{printable(spec)}: the pattern matches no rasters "
                                 f"({', '.join(sorted(RASTER_SUFFIXES))})")
        return [Scene(str(p), p.stem, spec) for p in found]
    raise GeoreasonError(f"{printable(spec)}: no such file or folder; expected {INPUT_KINDS}")


def read_scenes(specs: list[str], asset: str | None = None) -> list[Scene]:
    """The scenes that SCENE arguments list, in order, each source once (a repeated one is dropped).

    Raises GeoreasonError naming the argument when it lists nothing or cannot be read.
    """
    if not specs:
        raise GeoreasonError(f"SCENE: give at least one input: {INPUT_KINDS}")
    scenes: dict[str, Scene] = {}
    for spec in specs:
        for scene in _expand(spec, asset):
            scenes.setdefault(scene.source, scene)
    return list(scenes.values())


def read_question_pairs(path: str) -> list[tuple[Scene, str]]:
    """(scene, question) pairs from a JSONL file: one {"scene": path or URL, "question": text} per line.

    "image" is accepted for "scene" (the `georeason predict --questions` format); relative paths are
    relative to the file. Raises GeoreasonError naming the file and line.
    """
    from georeason.textfiles import read_text_file

    file = Path(path)
    if not file.is_file():
        raise GeoreasonError(f"{printable(file)}: no such questions file (--questions expects a JSONL file)")
    pairs = []
    for number, line in enumerate(read_text_file(file, "--questions").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise GeoreasonError(f"{printable(file)}:{number}: not valid JSON ({error.msg})") from None
        scene = record.get("scene", record.get("image")) if isinstance(record, dict) else None
        if not isinstance(scene, str) or not isinstance(record.get("question"), str):
            raise GeoreasonError(f'{printable(file)}:{number}: expected {{"scene": "path or URL", "question": "text"}}')
        source = _resolve(scene, file.parent)
        pairs.append((Scene(source, _stem(source), f"{printable(file)}:{number}"), record["question"]))
    if not pairs:
        raise GeoreasonError(f"{printable(file)}: the questions file has no entries")
    return pairs


def plan_pairs(pairs: list[tuple[Scene, str]], taken: dict[tuple[str, str], str] | None = None) -> list[Pair]:
    """Name each (scene, question) pair: the scene's stem, plus -qK when the scene has several questions.

    Names are unique within the run (georeason.filenames.unique_names); `taken` maps the pairs of an
    earlier invocation of the same run folder to their names, which they keep.
    """
    taken = dict(taken or {})
    seen: dict[tuple[str, str], None] = {}
    for scene, question in pairs:
        seen.setdefault((scene.source, question), None)
    per_scene: dict[str, list[str]] = {}
    for source, question in seen:
        per_scene.setdefault(source, []).append(question)
    unique: list[tuple[Scene, str]] = []
    for scene, question in pairs:
        if (scene.source, question) in seen:
            del seen[(scene.source, question)]
            unique.append((scene, question))
    fresh = [(scene, question) for scene, question in unique if (scene.source, question) not in taken]
    stems = []
    for scene, question in fresh:
        questions = per_scene[scene.source]
        stems.append(scene.stem if len(questions) == 1 else f"{scene.stem}-q{questions.index(question) + 1}")
    # Earlier names come first so that they keep theirs; new names avoid them.
    names = unique_names(list(taken.values()) + stems)[len(taken):]
    fresh_names = dict(zip([(s.source, q) for s, q in fresh], names))
    return [Pair(scene, question, taken.get((scene.source, question)) or fresh_names[(scene.source, question)])
            for scene, question in unique]
