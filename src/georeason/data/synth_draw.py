"""Painting primitives and one sprite painter per land-use category for the synthetic benchmark.

Supports data/synth.py (a synthetic stand-in for EarthReason, paper Sec. 3): numpy + cv2 only.
Colours are RGB floats in 0..255; `s` is the scene's pixels-per-unit scale (1.0 ~ 0.6 m per pixel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

WHITE = (232.0, 232.0, 226.0)


# -- noise and shapes ---------------------------------------------------------------------------------
def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Zero-mean noise [h,w] whose features are about `cell` pixels wide (bicubic upsampled grid)."""
    cell = max(cell, 1.0)
    gh, gw = int(math.ceil(h / cell)) + 2, int(math.ceil(w / cell)) + 2
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    big = cv2.resize(grid, (int((gw - 1) * cell), int((gh - 1) * cell)), interpolation=cv2.INTER_CUBIC)
    return big[:h, :w] if big.shape[0] >= h and big.shape[1] >= w else cv2.resize(grid, (w, h))


def fractal(rng: np.random.Generator, h: int, w: int, cell: float, octaves: int = 3) -> np.ndarray:
    """Sum of `octaves` noise layers, each half the size and amplitude of the last; unit std."""
    total = np.zeros((h, w), np.float32)
    amplitude = 1.0
    for _ in range(octaves):
        total += amplitude * smooth_noise(rng, h, w, cell)
        cell, amplitude = cell / 2, amplitude / 2
    return total / (total.std() + 1e-6)


def blob(rng: np.random.Generator, h: int, w: int, roughness: float = 0.25) -> np.ndarray:
    """An irregular filled shape inside an h x w box (an ellipse with a wobbly radius)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = (yy - (h - 1) / 2) / (h / 2), (xx - (w - 1) / 2) / (w / 2)
    angle = np.arctan2(dy, dx)
    radius = np.ones_like(angle)
    for k in range(2, 7):
        radius += roughness / k * rng.uniform(0.3, 1.0) * np.sin(k * angle + rng.uniform(0, 2 * np.pi))
    radius *= 0.92 / (1 + roughness * 0.6)
    edge = 0.04 * smooth_noise(rng, h, w, max(h, w) / 12)
    return np.sqrt(dx * dx + dy * dy) < radius + edge


def stadium(h: int, w: int, inset: float = 0.0) -> np.ndarray:
    """A running-track (stadium) shape filling h x w (w >= h), shrunk by `inset` pixels."""
    mask = np.zeros((h, w), np.uint8)
    r = h / 2 - inset
    if r <= 0:
        return mask.astype(bool)
    cy, cl, cr = (h - 1) / 2, h / 2, w - h / 2
    cv2.rectangle(mask, (int(round(cl)), int(round(cy - r))), (int(round(cr)), int(round(cy + r))), 1, -1)
    for cx in (cl, cr):
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(r)), 1, -1)
    return mask.astype(bool)


def textured(rng: np.random.Generator, h: int, w: int, color, amount: float = 0.06, cell: float = 6.0,
             grain: float = 3.0) -> np.ndarray:
    """A flat colour with some mottling and grain: float32 [h,w,3]."""
    base = np.asarray(color, np.float32).reshape(1, 1, 3)
    mottle = 1 + amount * fractal(rng, h, w, cell, 2)[..., None]
    return base * mottle + grain * rng.standard_normal((h, w, 1), dtype=np.float32)


def thick(s: float, width: float = 1.0) -> int:
    return max(1, int(round(width * s)))


@dataclass
class Sprite:
    """An object painted in its own axis-aligned frame, placed into the scene (rotated) by the canvas."""

    rgb: np.ndarray  # float32 [h,w,3]
    footprint: np.ndarray  # bool [h,w]: pixels the object covers
    target: np.ndarray  # bool [h,w]: pixels that belong to the category's mask
    height: float = 0.0  # in pixels: casts a shadow of this length
    soft: bool = False  # blend its edge into the ground (vegetation, soil)


def _sprite(rgb, footprint, target=None, height=0.0, soft=False) -> Sprite:
    return Sprite(rgb.astype(np.float32), footprint, footprint.copy() if target is None else target, height, soft)


# -- category painters --------------------------------------------------------------------------------
def runway(rng: np.random.Generator, s: float, length: float) -> Sprite:
    width = rng.uniform(16, 24) * s
    taxi_w, gap = width * 0.45, width * 1.3
    apron_h = rng.uniform(22, 34) * s
    L, h = int(length), int(width + gap + taxi_w + apron_h + 4 * s)
    rgb = textured(rng, h, L, (120, 128, 92), 0.05, 20)
    target = np.zeros((h, L), bool)
    y0, y1 = 0, int(width)
    concrete = textured(rng, y1, L, (172, 172, 166), 0.05, 10, 4)
    # rubber marks in the touchdown zones
    for lo, hi in ((0.04, 0.2), (0.8, 0.96)):
        zone = slice(int(lo * L), int(hi * L))
        concrete[:, zone] *= (0.82 + 0.1 * smooth_noise(rng, y1, zone.stop - zone.start, 6)[..., None] * 0.5)
    rgb[y0:y1] = concrete
    target[y0:y1] = True
    line = thick(s, 0.9)
    cy = y1 // 2
    for x in range(int(0.1 * L), int(0.9 * L), int(18 * s)):  # dashed centre line
        cv2.line(rgb, (x, cy), (x + int(9 * s), cy), WHITE, line)
    for yy in (int(1.5 * s), y1 - 1 - int(1.5 * s)):  # side stripes
        cv2.line(rgb, (int(0.02 * L), yy), (int(0.98 * L), yy), WHITE, line)
    bars = 6
    for end in (int(0.02 * L), int(0.98 * L) - int(14 * s)):  # threshold "piano keys"
        for k in range(bars):
            yy = int((k + 1) * y1 / (bars + 1))
            cv2.line(rgb, (end, yy), (end + int(14 * s), yy), WHITE, max(1, int(width / 14)))
    for x in (int(0.17 * L), int(0.8 * L)):  # aiming point marks
        for yy in (int(0.28 * y1), int(0.72 * y1)):
            cv2.rectangle(rgb, (x, yy - line), (x + int(16 * s), yy + line), WHITE, -1)
    # taxiway with connectors and an apron with parked aircraft
    ty0 = int(width + gap)
    asphalt = (96, 96, 94)
    paved = np.zeros((h, L), np.uint8)  # the footprint: grass between the paved parts stays the scene's
    paved[y0:y1] = 1
    for canvas_, colour in ((rgb, asphalt), (paved, 1)):
        cv2.rectangle(canvas_, (int(0.05 * L), ty0), (int(0.95 * L), int(ty0 + taxi_w)), colour, -1)
        for x in (int(0.05 * L), int(0.5 * L), int(0.95 * L) - int(taxi_w)):
            cv2.rectangle(canvas_, (x, y1), (x + int(taxi_w), ty0), colour, -1)
    cv2.line(rgb, (int(0.05 * L), int(ty0 + taxi_w / 2)), (int(0.95 * L), int(ty0 + taxi_w / 2)),
             (200, 170, 60), 1)
    ax0, ax1 = int(rng.uniform(0.2, 0.5) * L), int(rng.uniform(0.6, 0.85) * L)
    ay0 = int(ty0 + taxi_w)
    cv2.rectangle(rgb, (ax0, ay0), (ax1, h - 1), (140, 140, 136), -1)
    cv2.rectangle(paved, (ax0, ay0), (ax1, h - 1), 1, -1)
    for _ in range(int(rng.integers(1, 4))):
        px, py = rng.uniform(ax0 + 12 * s, ax1 - 12 * s), rng.uniform(ay0 + 10 * s, h - 10 * s)
        aircraft(rgb, px, py, rng.uniform(7, 11) * s, rng.uniform(0, 2 * np.pi))
    return _sprite(rgb, paved.astype(bool), target)


def aircraft(rgb: np.ndarray, x: float, y: float, size: float, angle: float) -> None:
    """A small white plane seen from above (fuselage, wings, tail)."""
    c, si = math.cos(angle), math.sin(angle)

    def pt(u: float, v: float) -> tuple[int, int]:
        return int(round(x + u * c - v * si)), int(round(y + u * si + v * c))

    w = max(1, int(size / 5))
    cv2.line(rgb, pt(-size, 0), pt(size, 0), WHITE, w + 1)
    cv2.line(rgb, pt(0.1 * size, -0.9 * size), pt(0.1 * size, 0.9 * size), WHITE, w)
    cv2.line(rgb, pt(-0.85 * size, -0.35 * size), pt(-0.85 * size, 0.35 * size), WHITE, w)


def soccer_field(rng: np.random.Generator, s: float) -> Sprite:
    L = int(rng.uniform(95, 140) * s)
    W = int(L * rng.uniform(0.6, 0.68))
    m = int(6 * s)
    h, w = W + 2 * m, L + 2 * m
    rgb = textured(rng, h, w, (96, 128, 76), 0.05, 10)
    stripes = 12
    shade = np.array([(70, 132, 62), (84, 148, 72)], np.float32)
    xs = np.arange(L)
    band = (xs * stripes // L) % 2
    field = shade[band][None, :, :].repeat(W, axis=0) + rng.normal(0, 2.5, (W, L, 1)).astype(np.float32)
    rgb[m:m + W, m:m + L] = field
    t = thick(s, 1.0)
    x0, y0, x1, y1 = m, m, m + L - 1, m + W - 1
    cv2.rectangle(rgb, (x0, y0), (x1, y1), WHITE, t)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    cv2.line(rgb, (cx, y0), (cx, y1), WHITE, t)
    cv2.circle(rgb, (cx, cy), int(0.087 * L), WHITE, t)
    for end, sign in ((x0, 1), (x1, -1)):
        pd, pw = int(0.157 * L), int(0.59 * W)
        gd, gw = int(0.052 * L), int(0.27 * W)
        cv2.rectangle(rgb, (end, cy - pw // 2), (end + sign * pd, cy + pw // 2), WHITE, t)
        cv2.rectangle(rgb, (end, cy - gw // 2), (end + sign * gd, cy + gw // 2), WHITE, t)
        cv2.circle(rgb, (end + sign * int(0.105 * L), cy), t, WHITE, -1)
    foot = np.ones((h, w), bool)
    target = np.zeros((h, w), bool)
    target[m:m + W, m:m + L] = True
    return _sprite(rgb, foot, target)


def running_track(rng: np.random.Generator, s: float) -> Sprite:
    L = int(rng.uniform(140, 200) * s)
    H = int(L * 0.52)
    stands = int(rng.uniform(0, 14) * s) if rng.random() < 0.5 else 0
    h, w = H + stands, L
    rgb = textured(rng, h, w, (120, 126, 100), 0.05, 12)
    outer = stadium(H, L)
    ring = H * 0.11
    inner = stadium(H, L, ring)
    track = textured(rng, H, L, rng.choice([(168, 82, 64), (178, 96, 70), (92, 120, 150)]), 0.04, 8, 3)
    region = rgb[:H]
    region[outer] = track[outer]
    infield = textured(rng, H, L, (78, 138, 66), 0.06, 10, 3)
    region[inner] = infield[inner]
    t = max(1, int(0.6 * s))
    lanes = int(min(6, ring // 3))  # lane lines only where the ring is wide enough to show them
    for k in range(1, lanes + 1):
        line = stadium(H, L, ring * k / (lanes + 1)) & ~stadium(H, L, ring * k / (lanes + 1) + t)
        region[line] = WHITE
    # a throwing circle in the plain infield (no pitch markings: a pitch would be a soccer field)
    cv2.circle(region, (int(H / 2 + ring), H // 2), max(2, int(2.5 * s)), (200, 196, 186), -1)
    if stands:
        stand = textured(rng, stands, int(L * 0.5), (150, 150, 152), 0.03, 4)
        for k in range(0, stands, max(2, int(2 * s))):
            stand[k:k + 1] *= 0.8
        x0 = int(L * 0.25)
        rgb[H:H + stands, x0:x0 + stand.shape[1]] = stand
    foot = np.zeros((h, w), bool)
    foot[:H] = outer
    if stands:
        foot[H:, int(L * 0.25):int(L * 0.25) + int(L * 0.5)] = True
    target = np.zeros((h, w), bool)
    target[:H] = outer
    return _sprite(rgb, foot, target, height=2 * s if stands else 0)


def _court_lines(rgb, x0, y0, L, W, t, kind, key_color=None):
    x1, y1 = x0 + L - 1, y0 + W - 1
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    if kind == "basketball":
        kd, kw = int(0.2 * L), int(0.33 * W)
        for end, sign in ((x0, 1), (x1, -1)):
            if key_color is not None:
                cv2.rectangle(rgb, (end, cy - kw // 2), (end + sign * kd, cy + kw // 2), key_color, -1)
            cv2.rectangle(rgb, (end, cy - kw // 2), (end + sign * kd, cy + kw // 2), WHITE, t)
            bx = end + sign * int(0.056 * L)
            start, stop = (-80, 80) if sign == 1 else (100, 260)
            cv2.ellipse(rgb, (bx, cy), (int(0.24 * L), int(0.45 * W)), 0, start, stop, WHITE, t)
        cv2.circle(rgb, (cx, cy), int(0.064 * L), WHITE, t)
        cv2.line(rgb, (cx, y0), (cx, y1), WHITE, t)
        cv2.rectangle(rgb, (x0, y0), (x1, y1), WHITE, t)
    else:  # tennis
        cv2.rectangle(rgb, (x0, y0), (x1, y1), WHITE, t)
        inset = int(0.125 * W)
        cv2.line(rgb, (x0, y0 + inset), (x1, y0 + inset), WHITE, t)
        cv2.line(rgb, (x0, y1 - inset), (x1, y1 - inset), WHITE, t)
        sx = int(0.27 * L)
        cv2.line(rgb, (cx - sx, y0 + inset), (cx - sx, y1 - inset), WHITE, t)
        cv2.line(rgb, (cx + sx, y0 + inset), (cx + sx, y1 - inset), WHITE, t)
        cv2.line(rgb, (cx - sx, cy), (cx + sx, cy), WHITE, t)
        cv2.line(rgb, (cx, y0 - 2), (cx, y1 + 2), (45, 45, 45), t + 1)


def basketball_court(rng: np.random.Generator, s: float) -> Sprite:
    L = int(rng.uniform(46, 64) * s)
    W = int(L * 0.535)
    m = int(4 * s)
    count = int(rng.integers(1, 3))
    gap = int(5 * s)
    h, w = count * W + (count - 1) * gap + 2 * m, L + 2 * m
    rgb = textured(rng, h, w, (150, 150, 146), 0.04, 6)
    target = np.zeros((h, w), bool)
    palette = [((62, 96, 150), (150, 70, 55)), ((70, 125, 84), (60, 90, 140)), ((160, 78, 62), (70, 110, 150)),
               ((140, 120, 90), (160, 80, 60))]
    court, key = palette[int(rng.integers(len(palette)))]
    for k in range(count):
        y0 = m + k * (W + gap)
        rgb[y0:y0 + W, m:m + L] = textured(rng, W, L, court, 0.03, 6, 2)
        _court_lines(rgb, m, y0, L, W, thick(s, 0.8), "basketball", key)
        target[y0:y0 + W, m:m + L] = True
    return _sprite(rgb, np.ones((h, w), bool), target)


def tennis_court(rng: np.random.Generator, s: float) -> Sprite:
    L = int(rng.uniform(44, 60) * s)
    W = int(L * 0.5)
    count = int(rng.integers(1, 5))
    runoff = int(0.12 * L)
    cw = W + 2 * runoff // 2
    h, w = count * cw, L + 2 * runoff
    combos = [((60, 110, 150), (70, 130, 84)), ((78, 128, 82), (150, 80, 66)), ((186, 106, 72), (176, 100, 68)),
              ((84, 132, 88), (96, 142, 100))]
    court, surround = combos[int(rng.integers(len(combos)))]
    rgb = textured(rng, h, w, surround, 0.03, 6, 2)
    for k in range(count):
        y0 = k * cw + runoff // 2
        rgb[y0:y0 + W, runoff:runoff + L] = textured(rng, W, L, court, 0.02, 6, 2)
        _court_lines(rgb, runoff, y0, L, W, thick(s, 0.7), "tennis")
        if k:
            cv2.line(rgb, (0, k * cw), (w - 1, k * cw), (60, 62, 60), 1)  # fence between courts
    cv2.rectangle(rgb, (0, 0), (w - 1, h - 1), (60, 62, 60), 1)
    return _sprite(rgb, np.ones((h, w), bool))


def swimming_pool(rng: np.random.Generator, s: float) -> Sprite:
    L = int(rng.uniform(16, 44) * s)
    W = int(L * rng.uniform(0.4, 0.65))
    deck = int(rng.uniform(2, 5) * s)
    h, w = W + 2 * deck, L + 2 * deck
    rgb = textured(rng, h, w, (204, 196, 178), 0.03, 4)
    water = np.zeros((h, w), np.uint8)
    shape = rng.integers(3)
    if shape == 0:
        cv2.rectangle(water, (deck, deck), (deck + L - 1, deck + W - 1), 1, -1)
    elif shape == 1:
        r = max(2, W // 3)
        cv2.rectangle(water, (deck + r, deck), (deck + L - 1 - r, deck + W - 1), 1, -1)
        cv2.rectangle(water, (deck, deck + r), (deck + L - 1, deck + W - 1 - r), 1, -1)
        for cx in (deck + r, deck + L - 1 - r):
            for cy in (deck + r, deck + W - 1 - r):
                cv2.circle(water, (cx, cy), r, 1, -1)
    else:  # kidney
        cv2.ellipse(water, (deck + L // 3, h // 2), (L // 3, W // 2), 0, 0, 360, 1, -1)
        cv2.ellipse(water, (deck + 2 * L // 3, h // 2 + W // 8), (L // 3, int(W / 2.4)), 0, 0, 360, 1, -1)
    water = water.astype(bool)
    xs = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    blue = np.array([62, 172, 200], np.float32) * (1 - xs) + np.array([112, 206, 226], np.float32) * xs
    pool = blue + rng.normal(0, 3, (h, w, 1)).astype(np.float32)
    if shape == 0 and L > 32 * s:
        for k in range(1, 5):
            yy = deck + k * W // 5
            pool[yy:yy + 1, deck + 2:deck + L - 2] *= 0.75
    rim = cv2.dilate(water.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool) & ~water
    rgb[water] = pool[water]
    rgb[rim] = (236, 236, 232)
    return _sprite(rgb, np.ones((h, w), bool), water)


CAR_COLORS = [(225, 225, 222), (35, 35, 38), (168, 170, 172), (150, 40, 38), (40, 60, 118), (110, 110, 112),
              (200, 190, 150)]


def parking_lot(rng: np.random.Generator, s: float) -> Sprite:
    w = int(rng.uniform(70, 150) * s)
    h = int(rng.uniform(50, 100) * s)
    rgb = textured(rng, h, w, (88, 88, 91), 0.05, 8, 3)
    stall_w, stall_l, aisle = 4.8 * s, 9.5 * s, 11 * s
    fill = rng.uniform(0.45, 0.9)
    y = 2 * s
    while y + stall_l <= h - 2 * s:
        for row in range(2):
            yy = y + row * stall_l
            if yy + stall_l > h - 2 * s:
                break
            x = 2 * s
            while x + stall_w <= w - 2 * s:
                cv2.line(rgb, (int(x), int(yy)), (int(x), int(yy + stall_l)), WHITE, 1)
                if rng.random() < fill:
                    color = CAR_COLORS[int(rng.integers(len(CAR_COLORS)))]
                    cx0, cy0 = int(x + 0.8 * s), int(yy + 0.9 * s)
                    cx1, cy1 = int(x + stall_w - 0.8 * s), int(yy + stall_l - 0.9 * s)
                    cv2.rectangle(rgb, (cx0, cy0), (cx1, cy1), color, -1)
                    wy = cy0 + (cy1 - cy0) // 3 if row == 0 else cy1 - (cy1 - cy0) // 3
                    cv2.line(rgb, (cx0, wy), (cx1, wy), (30, 34, 40), 1)
                x += stall_w
        y += 2 * stall_l + aisle
    cv2.rectangle(rgb, (0, 0), (w - 1, h - 1), (150, 150, 146), thick(s, 1.2))  # kerb
    return _sprite(rgb, np.ones((h, w), bool))


CROPS = [((92, 132, 62), (72, 110, 50)), ((192, 176, 112), (170, 156, 96)), ((128, 98, 72), (106, 82, 62)),
         ((150, 160, 84), (120, 138, 70)), ((104, 148, 70), (140, 160, 90))]


def farmland(rng: np.random.Generator, s: float) -> Sprite:
    cols, rows = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    pw, ph = rng.uniform(70, 130) * s, rng.uniform(55, 110) * s
    track = max(2, int(2.5 * s))
    w, h = int(cols * pw + (cols - 1) * track), int(rows * ph + (rows - 1) * track)
    rgb = textured(rng, h, w, (150, 136, 104), 0.05, 6)  # dirt tracks between parcels
    yy, xx = np.mgrid[0:int(ph), 0:int(pw)].astype(np.float32)
    for r in range(rows):
        for c in range(cols):
            a, b = CROPS[int(rng.integers(len(CROPS)))]
            period = max(4.0, rng.uniform(4, 8) * s)
            theta = rng.choice([0.0, np.pi / 2]) + rng.uniform(-0.1, 0.1)
            phase = (xx * math.cos(theta) + yy * math.sin(theta)) * 2 * np.pi / period
            mix = (0.5 + 0.5 * np.tanh(2.5 * np.sin(phase)))[..., None]
            parcel = np.asarray(a, np.float32) * mix + np.asarray(b, np.float32) * (1 - mix)
            parcel *= 1 + 0.05 * fractal(rng, int(ph), int(pw), 15, 2)[..., None]
            y0, x0 = int(r * (ph + track)), int(c * (pw + track))
            rgb[y0:y0 + int(ph), x0:x0 + int(pw)] = parcel[: h - y0, : w - x0]
    return _sprite(rgb, np.ones((h, w), bool))


def canopy(rng: np.random.Generator, h: int, w: int, s: float) -> np.ndarray:
    """Tree crowns: dark green with bright tops and deep gaps."""
    crowns = fractal(rng, h, w, 3.2 * s, 2)
    species = fractal(rng, h, w, 40 * s, 2)
    light = (0.62 + 0.38 * np.tanh(1.3 * crowns))[..., None]
    base = np.array([46, 74, 40], np.float32) + 7 * species[..., None] * np.array([1.0, 1.2, 0.5], np.float32)
    return base * (0.45 + light) + 3 * rng.standard_normal((h, w, 1), dtype=np.float32)


def forest(rng: np.random.Generator, s: float) -> Sprite:
    h, w = int(rng.uniform(100, 220) * s), int(rng.uniform(110, 240) * s)
    foot = blob(rng, h, w, 0.35)
    return _sprite(canopy(rng, h, w, s), foot, height=3 * s, soft=True)


def bare_land(rng: np.random.Generator, s: float) -> Sprite:
    h, w = int(rng.uniform(90, 190) * s), int(rng.uniform(100, 210) * s)
    foot = blob(rng, h, w, 0.3)
    soil = rng.choice([(170, 150, 108), (156, 136, 98), (184, 168, 126)])
    rgb = textured(rng, h, w, soil, 0.09, 18, 5)
    for _ in range(int(rng.integers(2, 5))):  # tyre tracks
        pts = np.cumsum(rng.normal(0, 12 * s, (6, 2)), axis=0) + [rng.uniform(0, w), rng.uniform(0, h)]
        cv2.polylines(rgb, [pts.astype(np.int32)], False, tuple(float(v) * 0.82 for v in soil), thick(s, 1.5))
    speck = rng.random((h, w)) < 0.01
    rgb[speck] *= 0.75
    return _sprite(rgb, foot, soft=True)


def storage_tank(rng: np.random.Generator, s: float, sun: tuple[float, float]) -> Sprite:
    rows, cols = int(rng.integers(1, 3)), int(rng.integers(2, 5))
    r = rng.uniform(8, 17) * s
    spacing = 2.7 * r
    pad = 1.3 * r
    w, h = int(cols * spacing - spacing + 2 * pad + 2 * r), int(rows * spacing - spacing + 2 * pad + 2 * r)
    rgb = textured(rng, h, w, (152, 152, 146), 0.04, 6)
    target = np.zeros((h, w), np.uint8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(rows):
        for j in range(cols):
            cx, cy = pad + r + j * spacing, pad + r + i * spacing
            shadow = (xx - cx - sun[0] * r * 0.9) ** 2 + (yy - cy - sun[1] * r * 0.9) ** 2 < r * r
            rgb[shadow] *= 0.55
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            lit = 0.86 + 0.14 * (-(xx - cx) * sun[0] - (yy - cy) * sun[1]) / r
            tank = np.array([218, 218, 212], np.float32) * lit[..., None]
            rgb[disc] = tank[disc]
            ring = disc & ((xx - cx) ** 2 + (yy - cy) ** 2 > (r - max(1.0, 0.9 * s)) ** 2)
            rgb[ring] *= 0.78
            if rng.random() < 0.5:  # floating roof
                inner = (xx - cx) ** 2 + (yy - cy) ** 2 < (0.72 * r) ** 2
                rgb[inner] *= 0.88
            target[disc] = 1
    return _sprite(rgb, np.ones((h, w), bool), target.astype(bool))


def solar_farm(rng: np.random.Generator, s: float) -> Sprite:
    w, h = int(rng.uniform(90, 180) * s), int(rng.uniform(60, 130) * s)
    rgb = textured(rng, h, w, rng.choice([(150, 140, 105), (112, 126, 84)]), 0.05, 10)
    row_w = rng.uniform(5, 8) * s
    gap = row_w * rng.uniform(0.5, 0.8)
    y = 3 * s
    while y + row_w < h - 3 * s:
        panel = textured(rng, int(row_w), int(w - 6 * s), (40, 50, 82), 0.03, 20, 2)
        panel[: max(1, int(row_w / 4))] *= 1.25  # the sunlit upper edge
        for x in range(0, panel.shape[1], max(3, int(6 * s))):
            panel[:, x:x + 1] = (70, 80, 108)
        rgb[int(y):int(y) + panel.shape[0], int(3 * s):int(3 * s) + panel.shape[1]] = panel
        y += row_w + gap
    cv2.rectangle(rgb, (0, 0), (w - 1, h - 1), (120, 120, 118), 1)  # fence
    return _sprite(rgb, np.ones((h, w), bool))


def greenhouse(rng: np.random.Generator, s: float) -> Sprite:
    count = int(rng.integers(3, 9))
    hall_w, length, gap = rng.uniform(7, 12) * s, rng.uniform(50, 110) * s, rng.uniform(1.5, 3) * s
    w, h = int(length), int(count * (hall_w + gap))
    rgb = textured(rng, h, w, (128, 124, 100), 0.04, 6)
    target = np.zeros((h, w), bool)
    for k in range(count):
        y0 = int(k * (hall_w + gap))
        hall = textured(rng, int(hall_w), w, (206, 212, 208), 0.03, 8, 3)
        for x in range(0, w, max(2, int(3 * s))):  # arches of the frame
            hall[:, x:x + 1] *= 0.9
        hall[: max(1, int(hall_w / 2))] *= 1.04
        rgb[y0:y0 + int(hall_w)] = hall
        target[y0:y0 + int(hall_w)] = True
    return _sprite(rgb, np.ones((h, w), bool), target, height=1.5 * s)


def water_colour(rng: np.random.Generator, h: int, w: int, depth: np.ndarray) -> np.ndarray:
    """Water: shallow green-blue at the edge, darker with distance from the shore."""
    deep = np.array(rng.choice([(26, 48, 64), (32, 58, 62), (38, 54, 78)]), np.float32)
    shallow = np.array(rng.choice([(66, 96, 92), (74, 98, 84), (70, 100, 110)]), np.float32)
    t = np.clip(depth, 0, 1)[..., None]
    water = shallow * (1 - t) + deep * t
    return water * (1 + 0.04 * fractal(rng, h, w, 25, 2)[..., None]) + rng.normal(0, 1.5, (h, w, 1))


def lake(rng: np.random.Generator, s: float, island: bool = False) -> Sprite:
    size = (150, 260) if island else (90, 220)
    h, w = int(rng.uniform(*size) * s), int(rng.uniform(*size) * s)
    shore_w = max(2, int(rng.uniform(2, 5) * s))
    water = blob(rng, h - 2 * shore_w, w - 2 * shore_w, 0.35)
    water = np.pad(water, shore_w)
    land = cv2.dilate(water.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                                        (2 * shore_w + 1, 2 * shore_w + 1)))
    land = land.astype(bool)
    isle = np.zeros_like(water)
    if island:
        ih, iw = int(h * rng.uniform(0.25, 0.4)), int(w * rng.uniform(0.25, 0.4))
        y0 = int(h / 2 - ih / 2 + rng.uniform(-0.08, 0.08) * h)
        x0 = int(w / 2 - iw / 2 + rng.uniform(-0.08, 0.08) * w)
        isle[y0:y0 + ih, x0:x0 + iw] = blob(rng, ih, iw, 0.4)
        isle &= cv2.erode(water.astype(np.uint8), np.ones((int(6 * s) | 1, int(6 * s) | 1), np.uint8)).astype(bool)
        water &= ~isle
    distance = cv2.distanceTransform(water.astype(np.uint8), cv2.DIST_L2, 5)
    rgb = water_colour(rng, h, w, distance / (distance.max() * 0.6 + 1e-6))
    shore = land & ~water & ~isle
    sand = textured(rng, h, w, rng.choice([(150, 140, 106), (128, 124, 96)]), 0.08, 4)
    rgb[shore] = sand[shore]
    if island:
        core = cv2.erode(isle.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        beach = isle & ~core
        trees = canopy(rng, h, w, s)
        rgb[core] = trees[core]
        rgb[beach] = sand[beach]
    return _sprite(rgb, land, isle if island else water, soft=True)


def residential_block(rng: np.random.Generator, s: float, sun: tuple[float, float]) -> Sprite:
    """Houses on fenced lots with yards, driveways and garden trees (clutter, never a target).

    The block's top edge faces the street."""
    cols, rows = int(rng.integers(3, 8)), int(rng.integers(1, 3))
    lot_w, lot_d = rng.uniform(16, 24) * s, rng.uniform(18, 26) * s
    w, h = int(cols * lot_w), int(rows * lot_d)
    rgb = textured(rng, h, w, rng.choice([(112, 128, 86), (126, 130, 96), (104, 120, 80)]), 0.07, 5)
    roofs = [(150, 82, 66), (118, 118, 124), (178, 172, 162), (98, 72, 62), (72, 90, 112), (160, 110, 90)]
    for r in range(rows):
        for c in range(cols):
            x0, y0 = c * lot_w, r * lot_d
            hw, hd = lot_w * rng.uniform(0.5, 0.75), lot_d * rng.uniform(0.35, 0.5)
            hx = x0 + rng.uniform(0.1, 0.9) * (lot_w - hw)
            front = y0 + 0.2 * lot_d if r == 0 else y0 + lot_d - 0.2 * lot_d - hd
            dx, dy = sun[0] * 3 * s, sun[1] * 3 * s
            cv2.rectangle(rgb, (int(hx + dx), int(front + dy)), (int(hx + hw + dx), int(front + hd + dy)),
                          (60, 62, 58), -1)  # shadow
            drive_x = int(hx + hw * rng.uniform(0.1, 0.6))
            street = int(y0) if r == 0 else int(y0 + lot_d) - 1
            cv2.rectangle(rgb, (drive_x, min(street, int(front))), (drive_x + max(2, int(3.5 * s)),
                          max(street, int(front + hd))), (150, 148, 140), -1)
            roof = np.asarray(roofs[int(rng.integers(len(roofs)))], np.float32)
            y_mid = front + hd / 2
            cv2.rectangle(rgb, (int(hx), int(front)), (int(hx + hw), int(y_mid)), tuple(map(float, roof * 1.1)), -1)
            cv2.rectangle(rgb, (int(hx), int(y_mid)), (int(hx + hw), int(front + hd)), tuple(map(float, roof * 0.8)),
                          -1)
            if rng.random() < 0.6:
                tr = int(rng.uniform(2.5, 4.5) * s) + 1
                tx = int(x0 + rng.uniform(tr, lot_w - tr))
                ty = int(y0 + lot_d - tr - 1) if r == 0 else int(y0 + tr + 1)
                cv2.circle(rgb, (tx + int(dx), ty + int(dy)), tr, (50, 58, 44), -1)
                cv2.circle(rgb, (tx, ty), tr, (58, 92, 48), -1)
            cv2.rectangle(rgb, (int(x0), int(y0)), (int(x0 + lot_w), int(y0 + lot_d)), (96, 100, 84), 1)
    return _sprite(rgb, np.ones((h, w), bool), np.zeros((h, w), bool))
