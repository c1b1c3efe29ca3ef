"""The synthetic geospatial pixel-reasoning benchmark: aerial-looking scenes, one target, implicit Q/A.

A small, deterministic stand-in for EarthReason (paper Sec. 3; layout of docs/released_code.md#earthreason): empty
targets, held-out
categories absent from train and held-out question phrasings used only in test, recorded in synth_meta.json.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from georeason.data import synth_draw as draw
from georeason.data.synth_text import TEXT
from georeason.errors import GeoreasonError

GENERATOR_VERSION = 1
CATEGORIES = tuple(TEXT)
# Absent from train, present in val and test (EarthReason holds out four; we hold out two of them).
HELDOUT_CATEGORIES = ("basketball court", "island")
EMPTY_FRACTION = 0.05
TEST_HELDOUT_PHRASING_FRACTION = 0.5
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
JPEG_QUALITY = 92
# Categories drawn as a feature across the scene rather than a placed object.
LINEAR = ("river", "bridge")
# How many separate instances a category gets (low, high exclusive); the target is their union.
MULTI_INSTANCE = {"swimming pool": (1, 4), "lake": (1, 3), "forest": (1, 3), "bare land": (1, 3),
                  "parking lot": (1, 3), "soccer field": (1, 3)}


@dataclass(frozen=True)
class ScenePlan:
    """What one scene must show: decided for the whole split up front, so the counts are exact."""

    split: str
    index: int
    category: str
    empty: bool
    heldout_phrasing: bool

    @property
    def stem(self) -> str:
        # The EarthReason loader's default rule reads the category back from "<words>_<number>".
        return f"{self.category.replace(' ', '_')}_{self.index:06d}"


def plan_split(split: str, count: int, seed: int) -> list[ScenePlan]:
    """Balanced categories, exactly round(5%) empty targets, half the test split with held-out phrasings."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], 1_000_003])
    allowed = [c for c in CATEGORIES if split != "train" or c not in HELDOUT_CATEGORIES]
    cycles = math.ceil(count / len(allowed)) if count else 0
    categories = [allowed[i] for i in np.concatenate([rng.permutation(len(allowed)) for _ in range(cycles)])][:count] \
        if count else []
    empty = np.zeros(count, bool)
    empty[rng.permutation(count)[: int(round(EMPTY_FRACTION * count))]] = True
    heldout = np.zeros(count, bool)
    if split == "test":
        heldout[rng.permutation(count)[: int(round(TEST_HELDOUT_PHRASING_FRACTION * count))]] = True
    return [ScenePlan(split, i, categories[i], bool(empty[i]), bool(heldout[i])) for i in range(count)]


# -- the canvas ---------------------------------------------------------------------------------------------
class Canvas:
    """The scene being painted, with the occupancy that keeps objects apart and the target mask."""

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        self.rng, self.h, self.w = rng, height, width
        self.s = min(height, width) / 400 * rng.uniform(0.85, 1.2)
        angle = rng.uniform(0, 2 * np.pi)
        self.sun = (math.cos(angle), math.sin(angle))  # direction shadows fall
        self.image = np.zeros((height, width, 3), np.float32)
        self.occupied = np.zeros((height, width), bool)
        self.target = np.zeros((height, width), bool)
        self.water = np.zeros((height, width), bool)
        self.river_width = 0.0
        self.objects = np.zeros((height, width), bool)  # placed sprites: roads must not run over them
        self.roads: list[tuple[np.ndarray, float, float]] = []  # (polyline, width, angle)

    def background(self) -> None:
        """Land cover: a smooth mix of meadow, dry grass, scrub and fallow, with mottling and grain."""
        rng, h, w, s = self.rng, self.h, self.w, self.s
        covers = np.array([(104, 124, 74), (148, 142, 100), (84, 100, 64), (126, 122, 88), (116, 134, 84),
                           (138, 136, 92)], np.float32)
        chosen = covers[rng.permutation(len(covers))[:3]]
        # The cover mix is smooth: compute it at quarter resolution, then upsample.
        sh, sw = max(8, h // 4), max(8, w // 4)
        weights = np.stack([draw.fractal(rng, sh, sw, 40 * s, 2) * 3 for _ in chosen])
        weights = np.exp(weights - weights.max(axis=0))
        weights /= weights.sum(axis=0)
        base = sum(weights[k][..., None] * chosen[k] for k in range(len(chosen)))
        base = cv2.resize(base.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        texture = 1 + 0.06 * draw.fractal(rng, h, w, 14 * s, 3) + 0.03 * draw.smooth_noise(rng, h, w, 2.5)
        shrubs = draw.smooth_noise(rng, h, w, 3 * s) > 1.6  # scattered bushes
        texture = np.where(shrubs, texture * 0.72, texture)
        self.image = base * texture[..., None] + 3 * rng.standard_normal((h, w, 1), dtype=np.float32)
        for _ in range(int(rng.integers(0, 4))):  # dirt paths
            points = _chaikin(rng.uniform(0, 1, (4, 2)) * (w, h), 3)
            path = np.zeros((h, w), np.uint8)
            cv2.polylines(path, [points.astype(np.int32)], False, 1, max(1, int(2 * s)))
            on_path = path.astype(bool)
            self.image[on_path] = self.image[on_path] * 0.5 + np.array([85, 78, 61], np.float32)

    def place(self, sprite: draw.Sprite, is_target: bool, angle: float | None = None,
              center: tuple[float, float] | None = None, margin: float = 6, tries: int = 40) -> bool:
        """Rotate the sprite, find free room (or use `center`), cast its shadow and paint it."""
        rng = self.rng
        angle = rng.uniform(0, 180) if angle is None else angle
        rgb, foot, target = _rotate(sprite, angle)
        sh, sw = foot.shape
        if sh >= self.h or sw >= self.w:
            return False
        pad = max(1, int(margin * self.s))
        grown = cv2.dilate(foot.astype(np.uint8), np.ones((2 * pad + 1, 2 * pad + 1), np.uint8)).astype(bool)
        for _ in range(tries if center is None else 1):
            if center is None:
                y, x = int(rng.integers(0, self.h - sh)), int(rng.integers(0, self.w - sw))
            else:
                y, x = int(center[1] - sh / 2), int(center[0] - sw / 2)
                if y < 0 or x < 0 or y + sh > self.h or x + sw > self.w:
                    return False
            if not (self.occupied[y:y + sh, x:x + sw] & grown).any():
                break
        else:
            return False
        if sprite.height > 0:
            self._shadow(foot, y, x, sprite.height)
        alpha = cv2.GaussianBlur(foot.astype(np.float32), (0, 0), 2.0 * self.s if sprite.soft else 0.6) * foot
        alpha = alpha[..., None]
        region = self.image[y:y + sh, x:x + sw]
        region[:] = region * (1 - alpha) + rgb * alpha
        self.occupied[y:y + sh, x:x + sw] |= foot
        self.objects[y:y + sh, x:x + sw] |= foot
        if is_target:
            self.target[y:y + sh, x:x + sw] |= target
        return True

    def _shadow(self, foot: np.ndarray, y: int, x: int, height: float) -> None:
        dx, dy = int(round(self.sun[0] * height)), int(round(self.sun[1] * height))
        sh, sw = foot.shape
        y0, x0 = max(0, y + dy), max(0, x + dx)
        y1, x1 = min(self.h, y + dy + sh), min(self.w, x + dx + sw)
        if y1 <= y0 or x1 <= x0:
            return
        shadow = foot[y0 - y - dy:y1 - y - dy, x0 - x - dx:x1 - x - dx]
        self.image[y0:y1, x0:x1][shadow] *= 0.58

    # -- linear features ---------------------------------------------------------------------------
    def river(self, is_target: bool) -> None:
        rng, h, w, s = self.rng, self.h, self.w, self.s
        horizontal = rng.random() < 0.5
        along, across = (w, h) if horizontal else (h, w)
        n = int(rng.integers(4, 7))
        t = np.linspace(-0.05, 1.05, n) * along
        offset = across * (rng.uniform(0.25, 0.75) + np.cumsum(rng.normal(0, 0.12, n)))
        offset = np.clip(offset, 0.12 * across, 0.88 * across)
        points = np.stack([t, offset] if horizontal else [offset, t], axis=1)
        points = _chaikin(points, 4)
        centre = np.zeros((h, w), np.uint8)
        cv2.polylines(centre, [points.astype(np.int32)], False, 1, 1)
        distance = cv2.distanceTransform(1 - centre, cv2.DIST_L2, 5)
        width = rng.uniform(14, 34) * s
        self.river_width = width
        edge = width / 2 * (1 + 0.12 * draw.smooth_noise(rng, h, w, 40 * s))
        water = distance < edge
        bank = (distance < edge + rng.uniform(4, 9) * s) & ~water
        trees = self.canopy()
        mud = draw.textured(rng, h, w, (120, 116, 90), 0.08, 5)
        mix = (draw.smooth_noise(rng, h, w, 8 * s) > 0)[..., None]
        self.image[bank] = np.where(mix, trees, mud)[bank]
        colour = draw.water_colour(rng, h, w, 1 - distance / np.maximum(edge, 1))
        self.image[water] = colour[water]
        self.occupied |= water | bank
        self.water |= water
        if is_target:
            self.target |= water

    def road(self, must_cross: bool, may_cross: bool, tries: int = 12) -> np.ndarray | None:
        """A straight or gently bent road across the scene; returns its mask (None if no road fits)."""
        rng, h, w, s = self.rng, self.h, self.w, self.s
        width = rng.uniform(6, 12) * s
        for _ in range(tries):
            if must_cross:  # start from a river pixel, run roughly across the water
                ys, xs = np.nonzero(self.water)
                k = int(rng.integers(len(ys)))
                px, py = xs[k], ys[k]
            else:
                px, py = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
            angle = rng.choice([0.0, 90.0]) + rng.normal(0, 12) if not must_cross else rng.uniform(0, 180)
            a = math.radians(angle)
            reach = h + w
            direction = np.array([math.cos(a), math.sin(a)])
            bend = np.array([-direction[1], direction[0]]) * rng.normal(0, 0.05) * reach
            points = np.array([(px, py) - direction * reach, (px, py) + bend * 0.3, (px, py) + direction * reach])
            mask = np.zeros((h, w), np.uint8)
            cv2.polylines(mask, [_chaikin(points, 3).astype(np.int32)], False, 1, max(2, int(width)))
            mask = mask.astype(bool)
            crosses = (mask & self.water).any()
            if crosses and not (must_cross or may_cross):
                continue
            if must_cross and not crosses:
                continue
            if crosses and (mask & self.water).sum() > 2.5 * width * self.river_width:
                continue  # nearly parallel to the river: not a plausible bridge
            if (mask & self.objects).any():
                continue  # would run over a placed object
            self._paint_road(mask, points, width)
            self.roads.append((_chaikin(points, 3), width, angle))
            return mask
        return None

    def _road_mask(self) -> np.ndarray:
        return getattr(self, "_roads_mask", np.zeros((self.h, self.w), bool))

    def _paint_road(self, mask: np.ndarray, points: np.ndarray, width: float) -> None:
        grain = self.rng.standard_normal(int(mask.sum()), dtype=np.float32)[:, None]
        self.image[mask] = np.float32((96, 96, 99)) + 3 * grain
        if width > 8 * self.s:
            dashes = np.zeros((self.h, self.w), np.uint8)
            dense = _resample(_chaikin(points, 3), step=10 * self.s)
            for i in range(0, len(dense) - 1, 2):
                cv2.line(dashes, tuple(dense[i].astype(int)), tuple(dense[i + 1].astype(int)), 1, 1)
            line = dashes.astype(bool) & mask
            self.image[line] = (205, 200, 170)
        self._roads_mask = self._road_mask() | mask
        self.occupied |= mask

    def bridges(self, is_target: bool) -> None:
        """Where roads cross water, a concrete deck with railings and a shadow on the water."""
        near_water = cv2.dilate(self.water.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        deck = self._road_mask() & near_water
        if not (deck & self.water).any():
            return
        # Keep only the road pieces that really cross water (not a road grazing the bank).
        _, labels = cv2.connectedComponents(deck.astype(np.uint8))
        deck = np.isin(labels, np.unique(labels[deck & self.water])) & deck
        concrete = draw.textured(self.rng, self.h, self.w, (170, 168, 162), 0.04, 6, 3)
        dx, dy = int(round(self.sun[0] * 5 * self.s)), int(round(self.sun[1] * 5 * self.s))
        shadow = np.roll(np.roll(deck, dy, axis=0), dx, axis=1) & self.water & ~deck
        self.image[shadow] *= 0.5
        self.image[deck] = concrete[deck]
        rail = deck & ~cv2.erode(deck.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        self.image[rail] = (222, 222, 216)
        if is_target:
            self.target |= deck

    # -- clutter -----------------------------------------------------------------------------------
    def traffic(self) -> None:
        """A few cars driving in the lanes of each road."""
        rng, s, roads = self.rng, self.s, self._road_mask()
        for points, width, _ in self.roads:
            dense = _resample(points, step=rng.uniform(25, 60) * s)
            for i in range(1, len(dense) - 1):
                if rng.random() < 0.5:
                    continue
                direction = dense[i + 1] - dense[i - 1]
                direction /= np.linalg.norm(direction) + 1e-6
                lane = (1 if rng.random() < 0.5 else -1) * width / 4
                cx, cy = dense[i] + np.array([-direction[1], direction[0]]) * lane
                if not (0 <= int(cy) < self.h and 0 <= int(cx) < self.w and roads[int(cy), int(cx)]):
                    continue
                angle = math.degrees(math.atan2(direction[1], direction[0]))
                box = cv2.boxPoints(((float(cx), float(cy)), (4.5 * s + 1, 2.2 * s + 1), angle))
                colour = draw.CAR_COLORS[int(rng.integers(len(draw.CAR_COLORS)))]
                cv2.fillPoly(self.image, [np.round(box).astype(np.int32)], colour)

    def houses(self, density: float) -> None:
        """Residential blocks facing the roads (urban context; never a target)."""
        rng, s = self.rng, self.s
        for points, width, angle in self.roads:
            normal = np.array([-math.sin(math.radians(angle)), math.cos(math.radians(angle))])
            for p in _resample(points, step=rng.uniform(60, 100) * s):
                for side in (-1, 1):
                    if rng.random() < density:
                        probe = (p + side * normal * (width / 2 + 15 * s)).astype(int)
                        if not (0 <= probe[0] < self.w and 0 <= probe[1] < self.h) or \
                                self.objects[probe[1], probe[0]]:
                            continue  # no room here: skip before painting a block
                        block = draw.residential_block(rng, s, self.sun)
                        offset = width / 2 + 3 * s + block.footprint.shape[0] / 2
                        cx, cy = p + side * normal * offset
                        # the sprite's top edge faces the street: flip it for the far side
                        turn = -angle + (180 if side < 0 else 0)
                        self.place(block, False, angle=turn + rng.normal(0, 2), center=(cx, cy), margin=2)

    def trees(self, count: int) -> None:
        """Scattered clumps of trees on free ground, with shadows (clutter, never a target)."""
        rng, s = self.rng, self.s
        crowns = np.zeros((self.h, self.w), np.uint8)
        for _ in range(count):
            cx, cy = rng.uniform(0, self.w), rng.uniform(0, self.h)
            for _ in range(int(rng.integers(1, 6))):
                r = int(rng.uniform(2.5, 5) * s) + 1
                offset = rng.normal(0, 4 * s, 2)
                cv2.circle(crowns, (int(cx + offset[0]), int(cy + offset[1])), r, 1, -1)
        free = ~cv2.dilate(self.occupied.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        crowns = crowns.astype(bool) & free
        dx, dy = int(round(self.sun[0] * 2.5 * s)), int(round(self.sun[1] * 2.5 * s))
        shadow = np.roll(np.roll(crowns, dy, axis=0), dx, axis=1) & ~crowns & free
        self.image[shadow] *= 0.62
        self.image[crowns] = self.canopy()[crowns]
        self.occupied |= crowns

    def canopy(self) -> np.ndarray:
        """One tree-crown texture for the whole scene (shared by river banks and tree clumps)."""
        if getattr(self, "_canopy", None) is None:
            self._canopy = draw.canopy(self.rng, self.h, self.w, self.s)
        return self._canopy

    def finish(self) -> np.ndarray:
        """Atmosphere, sensor blur and noise -> uint8 RGB."""
        rng = self.rng
        haze = rng.uniform(0.0, 0.1)
        tint = rng.uniform(0.95, 1.05, 3).astype(np.float32)
        image = self.image * tint * (1 - haze) + haze * np.array([196, 202, 212], np.float32)
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 0.8))
        # Sensor noise from a tile (generating a full-size field costs as much as the rest of finish()).
        tile = 2.0 * rng.standard_normal((128, 128, 3), dtype=np.float32)
        reps = (math.ceil(self.h / 128), math.ceil(self.w / 128), 1)
        image += np.tile(tile, reps)[: self.h, : self.w]
        return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _rotate(sprite: draw.Sprite, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = sprite.footprint.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    nw, nh = int(h * sin + w * cos) + 2, int(h * cos + w * sin) + 2
    matrix[0, 2] += nw / 2 - w / 2
    matrix[1, 2] += nh / 2 - h / 2
    rgb = cv2.warpAffine(sprite.rgb, matrix, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    foot = cv2.warpAffine(sprite.footprint.astype(np.uint8), matrix, (nw, nh), flags=cv2.INTER_NEAREST)
    target = cv2.warpAffine(sprite.target.astype(np.uint8), matrix, (nw, nh), flags=cv2.INTER_NEAREST)
    return rgb, foot.astype(bool), target.astype(bool) & foot.astype(bool)


def _chaikin(points: np.ndarray, iterations: int) -> np.ndarray:
    for _ in range(iterations):
        q = 0.75 * points[:-1] + 0.25 * points[1:]
        r = 0.25 * points[:-1] + 0.75 * points[1:]
        points = np.concatenate([points[:1], np.stack([q, r], axis=1).reshape(-1, 2), points[-1:]])
    return points


def _resample(points: np.ndarray, step: float) -> np.ndarray:
    lengths = np.r_[0, np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))]
    samples = np.arange(0, lengths[-1], max(step, 1.0))
    return np.stack([np.interp(samples, lengths, points[:, 0]), np.interp(samples, lengths, points[:, 1])], axis=1)


# -- one scene ----------------------------------------------------------------------------------------------
def _painter(category: str, canvas: Canvas) -> Callable[[], draw.Sprite]:
    rng, s = canvas.rng, canvas.s
    table: dict[str, Callable[[], draw.Sprite]] = {
        "soccer field": lambda: draw.soccer_field(rng, s),
        "running track": lambda: draw.running_track(rng, s),
        "basketball court": lambda: draw.basketball_court(rng, s),
        "tennis court": lambda: draw.tennis_court(rng, s),
        "swimming pool": lambda: draw.swimming_pool(rng, s),
        "parking lot": lambda: draw.parking_lot(rng, s),
        "farmland": lambda: draw.farmland(rng, s),
        "forest": lambda: draw.forest(rng, s),
        "bare land": lambda: draw.bare_land(rng, s),
        "storage tank": lambda: draw.storage_tank(rng, s, canvas.sun),
        "solar farm": lambda: draw.solar_farm(rng, s),
        "greenhouse": lambda: draw.greenhouse(rng, s),
        "lake": lambda: draw.lake(rng, s),
        "island": lambda: draw.lake(rng, s, island=True),
    }
    return table[category]


def _place_runway(canvas: Canvas, is_target: bool) -> bool:
    rng = canvas.rng
    long_side, short_side = max(canvas.h, canvas.w), min(canvas.h, canvas.w)
    tilt = rng.uniform(-20, 20)
    angle = tilt if canvas.w >= canvas.h else 90 + tilt
    a = math.radians(abs(tilt))
    depth = 80 * canvas.s  # runway + taxiway + apron, roughly
    length = min((long_side * 0.95 - depth * math.sin(a)) / max(math.cos(a), 1e-3),
                 (short_side * 0.95 - depth * math.cos(a)) / max(math.sin(a), 1e-3))
    length *= rng.uniform(0.75, 0.95)
    if length < 120 * canvas.s:
        return False
    return canvas.place(draw.runway(rng, canvas.s, length), is_target, angle=angle, tries=60)


def _place_category(canvas: Canvas, category: str, is_target: bool) -> bool:
    if category == "runway":
        return _place_runway(canvas, is_target)
    low, high = MULTI_INSTANCE.get(category, (1, 2))
    count = int(canvas.rng.integers(low, high))
    placed = sum(canvas.place(_painter(category, canvas)(), is_target) for _ in range(count))
    return placed > 0


def render_scene(plan: ScenePlan, seed: int, min_size: int, max_size: int
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, Any], dict[str, Any]]:
    """(image uint8 [H,W,3], mask bool [H,W], QA dict, per-sample metadata) for one planned scene."""
    for attempt in range(10):
        rng = np.random.default_rng([seed, SPLIT_IDS[plan.split], plan.index, attempt])
        result = _try_scene(plan, rng, min_size, max_size)
        if result is not None:
            return result
    raise GeoreasonError(f"synth: could not lay out scene {plan.stem} of {plan.split} (try a larger --min-size)")


def _try_scene(plan: ScenePlan, rng: np.random.Generator, min_size: int, max_size: int):
    long_side = int(rng.integers(min_size, max_size + 1))
    short_side = max(min_size, int(long_side * rng.uniform(0.55, 1.0)))
    height, width = (short_side, long_side) if rng.random() < 0.5 else (long_side, short_side)
    canvas = Canvas(rng, height, width)
    canvas.background()
    category, drawn = plan.category, not plan.empty
    allowed = [c for c in CATEGORIES if plan.split != "train" or c not in HELDOUT_CATEGORIES]
    pool = [c for c in allowed if c != category and c not in LINEAR]
    if category == "lake":
        pool = [c for c in pool if c != "island"]  # an island's water is a lake too
    has_river = category in LINEAR and (drawn or category == "bridge") or \
        (category not in LINEAR and "river" in allowed and rng.random() < 0.3)
    if has_river:
        canvas.river(is_target=drawn and category == "river")
    bridge_target = drawn and category == "bridge"
    if bridge_target and canvas.road(must_cross=True, may_cross=True) is None:
        return None
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.7 or bridge_target else 0):
        canvas.road(must_cross=False, may_cross=bridge_target)
    canvas.bridges(is_target=bridge_target)
    canvas.traffic()
    if drawn and category not in LINEAR and not _place_category(canvas, category, True):
        return None
    distractors = []
    for other in rng.permutation(pool)[: int(rng.integers(3, 7))]:
        if _place_category(canvas, str(other), False):
            distractors.append(str(other))
    if has_river and category != "river":
        distractors.append("river")
    canvas.houses(density=rng.uniform(0.3, 0.9))
    for _ in range(int(rng.integers(0, 4))):  # scattered farmsteads and hamlets
        canvas.place(draw.residential_block(rng, canvas.s, canvas.sun), False, tries=5)
    canvas.trees(int(rng.integers(10, 50) * canvas.s))
    mask = canvas.target
    if drawn and mask.sum() < 30:
        return None
    image = canvas.finish()
    qa = _questions_and_answers(plan, rng, mask)
    meta = {
        "id": plan.stem, "split": plan.split, "category": category, "empty": plan.empty,
        "heldout_category": category in HELDOUT_CATEGORIES, "heldout_phrasing": plan.heldout_phrasing,
        "distractors": sorted(distractors), "height": height, "width": width,
        "target_pixels": int(mask.sum()),
    }
    return image, mask, qa, meta


def location_phrase(mask: np.ndarray) -> str:
    """Where the mask's centre lies, in words ("in the upper left of the image")."""
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean() / mask.shape[0], xs.mean() / mask.shape[1]
    row = "upper" if cy < 1 / 3 else "lower" if cy > 2 / 3 else "middle"
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
    if row == "middle":
        return "in the centre of the image" if col == "centre" else f"on the {col} side of the image"
    if col == "centre":
        return "at the top of the image" if row == "upper" else "at the bottom of the image"
    return f"in the {row} {col} of the image"


def _questions_and_answers(plan: ScenePlan, rng: np.random.Generator, mask: np.ndarray) -> dict[str, list[str]]:
    text = TEXT[plan.category]
    pool = text["heldout" if plan.heldout_phrasing else "seen"]
    count = min(int(rng.integers(4, 7)), len(pool))
    questions = [pool[i] for i in rng.permutation(len(pool))[:count]]
    if plan.empty:
        return {"questions": questions, "answer": []}
    loc = location_phrase(mask)
    templates = [text["answers"][i] for i in rng.permutation(len(text["answers"]))[: int(rng.integers(1, 4))]]
    answers = [t.replace("{Loc}", loc[0].upper() + loc[1:]).replace("{loc}", loc) for t in templates]
    return {"questions": questions, "answer": answers}


# -- the benchmark ------------------------------------------------------------------------------------------
def _pool_context() -> multiprocessing.context.BaseContext:
    """spawn, not fork: a forked child can deadlock on locks held by the parent's OpenCV threads.

    spawn re-imports the parent's main script; when that is not a file (python - < script), fork is
    the only option."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file is None or Path(main_file).is_file():
        return multiprocessing.get_context("spawn")
    return multiprocessing.get_context("fork")


def _write_one(task: tuple[ScenePlan, int, int, int, str]) -> dict[str, Any]:
    plan, seed, min_size, max_size, out = task
    image, mask, qa, meta = render_scene(plan, seed, min_size, max_size)
    split_dir = Path(out) / plan.split
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    (split_dir / "images" / f"{plan.stem}.jpg").write_bytes(jpeg.tobytes())
    ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    (split_dir / "labels" / f"{plan.stem}.png").write_bytes(png.tobytes())
    (split_dir / "QAs" / f"{plan.stem}.json").write_text(json.dumps(qa, indent=1) + "\n", encoding="utf-8")
    return meta


def generate_benchmark(
    out: str | Path,
    num_train: int,
    num_val: int,
    num_test: int,
    seed: int = 0,
    min_size: int = 256,
    max_size: int = 768,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write the benchmark in the EarthReason layout under `out` plus `out/synth_meta.json`; returns the meta."""
    if min_size < 192 or max_size < min_size:
        raise GeoreasonError(f"synth: need 192 <= min_size <= max_size, got min_size={min_size}, max_size={max_size}")
    for name, count in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
        if count < 0:
            raise GeoreasonError(f"synth: {name} must be >= 0, got {count}")
    out = Path(out)
    plans = []
    for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
        for folder in ("images", "labels", "QAs"):
            (out / split / folder).mkdir(parents=True, exist_ok=True)
        plans += plan_split(split, count, seed)
    tasks = [(plan, seed, min_size, max_size, str(out)) for plan in plans]
    workers = workers or min(os.cpu_count() or 1, 8)
    samples: list[dict[str, Any]] = []
    if workers <= 1 or len(tasks) < 8:
        for k, task in enumerate(tasks):
            samples.append(_write_one(task))
            if progress:
                progress(k + 1, len(tasks))
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(),
                                 initializer=cv2.setNumThreads, initargs=(1,)) as pool:
            for k, meta in enumerate(pool.map(_write_one, tasks, chunksize=4)):
                samples.append(meta)
                if progress:
                    progress(k + 1, len(tasks))
    meta = _benchmark_meta(samples, seed, min_size, max_size)
    (out / "synth_meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return meta


def _benchmark_meta(samples: list[dict[str, Any]], seed: int, min_size: int, max_size: int) -> dict[str, Any]:
    counts = {}
    for split in SPLIT_IDS:
        rows = [m for m in samples if m["split"] == split]
        counts[split] = {
            "samples": len(rows), "empty": sum(m["empty"] for m in rows),
            "heldout_category": sum(m["heldout_category"] for m in rows),
            "heldout_phrasing": sum(m["heldout_phrasing"] for m in rows),
            "categories": {c: sum(m["category"] == c for m in rows) for c in CATEGORIES},
        }
    return {
        "generator": "georeason synth", "version": GENERATOR_VERSION, "seed": seed,
        "min_size": min_size, "max_size": max_size, "empty_fraction": EMPTY_FRACTION,
        "categories": list(CATEGORIES),
        "train_categories": [c for c in CATEGORIES if c not in HELDOUT_CATEGORIES],
        "heldout_categories": list(HELDOUT_CATEGORIES),
        "phrasings": {"seen": {c: TEXT[c]["seen"] for c in CATEGORIES},
                      "heldout": {c: TEXT[c]["heldout"] for c in CATEGORIES}},
        "category_rule": "file stem '<category words joined by _>_<6-digit index>'",
        "counts": counts,
        "samples": {split: {m["id"]: {k: v for k, v in m.items() if k not in ("id", "split")}
                            for m in samples if m["split"] == split} for split in SPLIT_IDS},
    }


def save_sample_grid(root: str | Path, png: str | Path, count: int = 12, columns: int = 4, seed: int = 0) -> Path:
    """A thumbnail grid of `count` samples (mask outline in yellow, one question each) -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from georeason.data.earthreason import EarthReason

    root = Path(root)
    samples = []
    for split in ("train", "val", "test"):
        if (root / split / "images").is_dir() and any((root / split / "images").iterdir()):
            data = EarthReason(root, split, mode="eval")
            samples += [data[i] for i in range(len(data))]
    # Distinct categories, and an empty-target sample when there is one.
    rng = np.random.default_rng(seed)
    order = [samples[i] for i in rng.permutation(len(samples))]
    chosen = [next(x for x in order if x["empty"])] if any(x["empty"] for x in order) else []
    for sample in order:
        if len(chosen) < count and sample["category"] not in {c["category"] for c in chosen}:
            chosen.append(sample)
    chosen += [x for x in order if all(x is not c for c in chosen)][: count - len(chosen)]
    rows = math.ceil(len(chosen) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.9 * rows))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, sample in zip(np.atleast_1d(axes).ravel(), chosen):
        image = sample["image"].copy()
        contours, _ = cv2.findContours(sample["mask"].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(image, contours, -1, (255, 230, 0), max(2, max(image.shape[:2]) // 130))
        ax.imshow(image)
        title = f"{sample['category']}{' (empty)' if sample['empty'] else ''}  {image.shape[1]}x{image.shape[0]}"
        question = _wrap(sample["question"], 48)
        ax.set_title(f"{title}\n{question}", fontsize=8.5, loc="left")
    figure.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=70)
    plt.close(figure)
    from PIL import Image

    # A 256-colour palette keeps the PNG small enough for the docs.
    Image.open(buffer).convert("RGB").quantize(colors=256).save(png, optimize=True)
    return png


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])
