"""Ray actors holding one model replica each, and the scheduler that feeds them overview and tile tasks
(paper Sec. 4's tiled mode over a pool, each tile encoded once for a scene's questions; docs/batch.md)."""

from __future__ import annotations

import contextlib
import heapq
import os
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import ray

from georeason.batch.inputs import Pair
from georeason.errors import GeoreasonError
from georeason.filenames import printable

DESCRIBE, TILE = 0, 1
OPEN_SCENES = 2  # scenes an actor keeps open between tile tasks (a PNG is decoded once, not per tile)


class SceneWorker:
    """One model replica (run as a Ray actor): overview passes and tiles of any scene.

    A failure to load the model is kept and raised by about(), so the driver gets the GeoreasonError
    itself rather than Ray's "actor died in its creation task".
    """

    def __init__(self, model: str, device: str, dtype: str, max_pixels: int, num_beams: int,
                 revision: str | None) -> None:
        from georeason.reasoner import GeoReasoner

        self.reasoner = None
        self.error: BaseException | None = None
        try:
            self.reasoner = GeoReasoner.from_pretrained(model, device=device, dtype=dtype, max_pixels=max_pixels,
                                                        num_beams=num_beams, revision=revision)
        except Exception as error:  # noqa: BLE001 - reported by about()
            self.error = error
        self._sources: OrderedDict[str, tuple[Any, contextlib.ExitStack]] = OrderedDict()

    def about(self) -> dict[str, Any]:
        """The model's fingerprint (georeason.reasoner.GeoReasoner.fingerprint) and name; the actor's name and process id."""
        if self.error is not None:
            raise self.error
        import torch

        return {"fingerprint": self.reasoner.fingerprint(), "name": self.reasoner.name, "pid": os.getpid(),
                "actor": ray.get_runtime_context().get_actor_name(), "max_pixels": self.reasoner.max_pixels,
                "threads": torch.get_num_threads()}

    def pid(self) -> int:
        return os.getpid()

    def peak_rss_mb(self) -> float:
        """Peak resident memory of this worker process so far, in MiB (model, tiles, GDAL cache)."""
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def check_questions(self, questions: list[str]) -> list[str]:
        """Each question stripped; the first bad one raises its GeoreasonError (empty, too long, not UTF-8)."""
        return [self.reasoner.check_question(question) for question in questions]

    def describe(self, source: str, questions: list[str], tile_size: int, bands, answer: bool):
        """The overview pass of one scene for its questions (GeoReasoner.describe_scene_questions); two Ray
        returns: per question its SceneOverview without p, or the GeoreasonError that failed it alone; and
        the p (CPU tensors [1, H_llm]) of the questions that did not fail, in order. Raises GeoreasonError
        when the scene cannot be read."""
        overviews = self.reasoner.describe_scene_questions(source, questions, tile_size, answer, bands)
        return ([own_error(o) if isinstance(o, Exception) else replace(o, description=None) for o in overviews],
                [o.description.cpu() for o in overviews if not isinstance(o, Exception)])

    def tile(self, source: str, window: tuple[int, int, int, int], bands, limits, descriptions: list):
        """(one probability float32 [h, w] per p of `descriptions`, or None when every pixel is nodata;
        CRC-32 of the tile's RGB). The tile is encoded once for all p (GeoReasoner.tile_probabilities).

        `window` is (col_off, row_off, width, height); the tile is read as run_tiled reads it, so the
        driver can check by the CRC that it blends the tile it planned.
        """
        from rasterio.windows import Window

        from georeason.geo import read_rgb

        rgb, valid = read_rgb(self._open(source), Window(*window), bands, limits)
        checksum = zlib.crc32(rgb.tobytes())
        if not valid.any():
            return None, checksum
        return self.reasoner.tile_probabilities(rgb, descriptions), checksum

    def _open(self, source: str):
        if source in self._sources:
            self._sources.move_to_end(source)
            return self._sources[source][0]
        from georeason.data.pixels import open_pixels

        stack = contextlib.ExitStack()
        opened = stack.enter_context(open_pixels(source, self.reasoner.max_pixels, "tiled"))
        self._sources[source] = (opened, stack)
        while len(self._sources) > OPEN_SCENES:
            _, (_, old) = self._sources.popitem(last=False)
            old.close()
        return opened


def task_error(error: BaseException) -> GeoreasonError:
    """A Ray task's failure as the GeoreasonError to record: the task's own error, or what Ray says happened."""
    from ray.exceptions import RayActorError, RayTaskError

    cause = getattr(error, "cause", None) if isinstance(error, RayTaskError) else None
    if cause is not None:
        return own_error(cause)
    if isinstance(error, RayActorError):
        return GeoreasonError("the worker running this task died and its retries ran out (out of memory, or the "
                              f"node was lost?): {printable(str(error).splitlines()[0] if str(error) else error)}")
    return GeoreasonError(f"{type(error).__name__}: {printable(error)}")


def own_error(error: BaseException) -> GeoreasonError:
    """An exception of a task's own as the GeoreasonError to record (anything else named an internal error)."""
    if isinstance(error, GeoreasonError):
        return error
    return GeoreasonError(f"internal error: {type(error).__name__}: {printable(error)}")


@dataclass
class _Work:
    """One pass's tasks (one scene, its questions): the overview (the p stay in the object store) and the
    tiles, dispatched or queued."""

    pairs: list[Pair]
    meta: Any = None  # ObjectRef of the overviews (without p) while in flight
    p: Any = None  # ObjectRef of the list of p of the questions whose overview did not fail
    overviews: Any = None  # per question a SceneOverview or its GeoreasonError, once fetched
    error: GeoreasonError | None = None
    windows: list[tuple[int, int, int, int]] = field(default_factory=list)
    limits: Any = None  # the scene's stretch, shared by every tile
    tiles: dict[int, Any] = field(default_factory=dict)  # tile index -> ObjectRef
    released: bool = False


class TileScheduler:
    """Feeds a pool of SceneWorker actors; the driver takes the results pass by pass, tile by tile in order.

    A pass is one scene and the questions computed together (a list of its pairs). Tasks are queued by
    (pass, overview before tiles, tile index) and dispatched to the least busy actor (at most `depth`
    each), so the tiles of the pass being written go first and the next passes' overviews and tiles fill
    the pool around them: small and large scenes share it. At most `cap` tile results (one probability
    per question each) wait in the object store beyond the one the driver needs next. `on_tiles(count)`
    is told each pass's tiles times its questions once its overview is done.
    """

    def __init__(self, actors: list[Any], passes: list[list[Pair]], tile_size: int, overlap: int, bands,
                 answer: bool, depth: int = 2, cap: int | None = None, lookahead: int | None = None,
                 on_tiles: Callable[[int], None] | None = None) -> None:
        self.actors = actors
        self.works = [_Work(list(pairs)) for pairs in passes]
        self.tile_size, self.overlap, self.bands, self.answer = tile_size, overlap, bands, answer
        self.depth = depth
        self.cap = cap if cap is not None else 4 * len(actors)
        self.lookahead = lookahead if lookahead is not None else len(actors)
        self.on_tiles = on_tiles
        self.load = [0] * len(actors)
        self.in_flight: dict[Any, tuple[tuple[int, int, int], int]] = {}
        self.queue: list[tuple[int, int, int]] = []
        self.head = 0
        self.wanted: tuple[int, int, int] | None = None
        self.described = 0  # overviews queued so far (passes 0 .. described-1)
        self.outstanding = 0  # tile results dispatched and not yet taken or released

    # -- what the driver calls ----------------------------------------------------------------------
    def overview(self, index: int) -> list:
        """Per question of pass `index` its SceneOverview without p, or the GeoreasonError that failed it
        alone; raises the GeoreasonError that failed the whole overview task (an unreadable scene)."""
        self.head = index
        work = self.works[index]
        self._until((index, DESCRIBE, 0), lambda: work.overviews is not None or work.error is not None)
        if work.error is not None:
            raise work.error
        return work.overviews

    def tile(self, index: int, number: int):
        """(list of probabilities, one per question that has p, or None; CRC-32) of tile `number` of pass
        `index`; raises the task's GeoreasonError."""
        work = self.works[index]
        key = (index, TILE, number)
        self._until(key, lambda: number in work.tiles and work.tiles[number] not in self.in_flight)
        ref = work.tiles.pop(number)
        self.outstanding -= 1
        try:
            return ray.get(ref)
        except Exception as error:  # noqa: BLE001 - a task failure fails this pair only
            raise task_error(error) from None

    def windows(self, index: int) -> list[tuple[int, int, int, int]]:
        return self.works[index].windows

    def release(self, index: int) -> None:
        """Forget pass `index` (done or failed): its queued tasks are dropped, its results freed."""
        work = self.works[index]
        work.released = True
        self.outstanding -= len(work.tiles)
        work.tiles.clear()
        work.meta = work.p = work.overviews = None

    # -- the pump -----------------------------------------------------------------------------------
    def _until(self, key: tuple[int, int, int], ready: Callable[[], bool]) -> None:
        self.wanted = key
        while not ready():
            self._dispatch()
            if not self.in_flight:
                raise GeoreasonError(f"internal error: nothing in flight while waiting for task {key}")
            self._collect()
        self.wanted = None
        self._dispatch()  # keep the pool busy while the driver writes

    def _dispatch(self) -> None:
        while self.described < min(len(self.works), self.head + self.lookahead + 1):
            heapq.heappush(self.queue, (self.described, DESCRIBE, 0))
            self.described += 1
        while self.queue:
            key = self.queue[0]
            index, phase, number = key
            work = self.works[index]
            if work.released or work.error is not None:
                heapq.heappop(self.queue)
                continue
            if phase == TILE and key != self.wanted and self.outstanding >= self.cap:
                return
            actor = min(range(len(self.actors)), key=self.load.__getitem__)
            if self.load[actor] >= self.depth:
                return
            heapq.heappop(self.queue)
            handle = self.actors[actor]
            if phase == DESCRIBE:
                work.meta, work.p = handle.describe.options(num_returns=2).remote(
                    work.pairs[0].scene.source, [pair.question for pair in work.pairs], self.tile_size,
                    self.bands, self.answer)
                ref = work.meta
            else:
                ref = handle.tile.remote(work.pairs[0].scene.source, work.windows[number], self.bands,
                                         work.limits, work.p)
                work.tiles[number] = ref
                self.outstanding += 1
            self.in_flight[ref] = (key, actor)
            self.load[actor] += 1

    def _collect(self) -> None:
        ready, _ = ray.wait(list(self.in_flight), num_returns=1)
        for ref in ready:
            (index, phase, _), actor = self.in_flight.pop(ref)
            self.load[actor] -= 1
            work = self.works[index]
            if phase == DESCRIBE and not work.released:
                self._described(index, work)

    def _described(self, index: int, work: _Work) -> None:
        from georeason.geo import plan_tiles

        try:
            work.overviews = ray.get(work.meta)
        except Exception as error:  # noqa: BLE001 - the pass's pairs fail, the others go on
            work.error = task_error(error)
            return
        work.meta = None
        described = [overview for overview in work.overviews if not isinstance(overview, Exception)]
        if not described:
            return  # every question failed: no tiles to compute
        windows = plan_tiles(described[0].height, described[0].width, self.tile_size, self.overlap)
        work.windows = [(int(w.col_off), int(w.row_off), int(w.width), int(w.height)) for w in windows]
        work.limits = described[0].limits
        for number in range(len(windows)):
            heapq.heappush(self.queue, (index, TILE, number))
        if self.on_tiles is not None:
            self.on_tiles(len(windows) * len(described))
