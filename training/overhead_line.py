"""Synthetic overhead-line scenes for distillation: there is no open catenary footage.

The shared data are all ground-level (track, sleepers, characters), so a student distilled on them
alone matches the teacher there and nowhere else: on catenary crops (thin dark wires on sky) its
features barely tell a foreign object from a mast. These scenes put the sky, masts, cantilevers,
messenger and contact wires and droppers under the teacher in many variants (sky colour, clouds,
sag, spacing, thickness, a second track's wires, distant skyline), and paste patches of real
training-split photos with random outlines onto about half of them as foreign objects on the line,
so the student learns to see what the teacher sees in that domain. No fault is drawn: a fault type
on the line stays something the operator adds from examples.
"""
from __future__ import annotations

import cv2
import numpy as np

SCENE_WIDTH, SCENE_HEIGHT = 320, 260  # about one catenary tile of a 1080p frame, downscaled
OBJECT_SHARE = 0.55  # scenes that carry at least one pasted foreign object


def _sky(rng: np.random.Generator) -> np.ndarray:
    """A vertical gradient between two sky colours, with blurred-noise clouds on some."""
    palettes = [((110, 160, 205), (200, 225, 240)), ((170, 170, 175), (225, 225, 228)),  # blue, overcast (RGB)
                ((150, 170, 200), (250, 225, 200)), ((185, 190, 195), (235, 230, 215))]  # dusk, haze
    top, bottom = palettes[rng.integers(len(palettes))]
    jitter = rng.integers(-25, 26, 3)
    top = np.clip(np.array(top) + jitter, 0, 255)
    bottom = np.clip(np.array(bottom) + jitter, 0, 255)
    sky = np.linspace(top, bottom, SCENE_HEIGHT)[:, None, :].repeat(SCENE_WIDTH, 1)
    if rng.random() < 0.5:
        clouds = cv2.GaussianBlur(rng.random((SCENE_HEIGHT // 8, SCENE_WIDTH // 8)).astype(np.float32), (0, 0), 1.5)
        clouds = cv2.resize(clouds, (SCENE_WIDTH, SCENE_HEIGHT), interpolation=cv2.INTER_CUBIC)
        sky += (clouds[..., None] - 0.5) * rng.uniform(20, 70)
    return np.clip(sky, 0, 255).astype(np.uint8)


def _skyline(scene: np.ndarray, rng: np.random.Generator) -> None:
    """Trees or buildings along the bottom edge, darker than the sky."""
    colour = np.clip(rng.integers(30, 100) + rng.integers(-20, 21, 3), 0, 255)
    heights = cv2.resize(rng.random((1, rng.integers(4, 30))).astype(np.float32), (SCENE_WIDTH, 1),
                         interpolation=cv2.INTER_LINEAR if rng.random() < 0.6 else cv2.INTER_NEAREST)[0]
    tops = (SCENE_HEIGHT * (1 - rng.uniform(0.05, 0.3) * heights)).astype(int)
    rows = np.arange(SCENE_HEIGHT)[:, None]
    scene[rows >= tops[None, :]] = colour


def _line_set(scene: np.ndarray, rng: np.random.Generator, scale: float) -> None:
    """Masts with cantilevers, a sagging messenger wire, a contact wire and droppers between them."""
    dark = tuple(int(v) for v in rng.integers(15, 70, 3))
    span = int(rng.uniform(0.7, 2.5) * SCENE_WIDTH * scale)
    offset = int(rng.integers(span))
    contact_y = int(SCENE_HEIGHT * rng.uniform(0.45, 0.85))
    hang_y = contact_y - int(SCENE_HEIGHT * rng.uniform(0.15, 0.4) * scale)
    sag = rng.uniform(0.03, 0.2) * SCENE_HEIGHT * scale
    thickness = max(1, round(rng.uniform(1, 4) * scale))
    xs = np.arange(SCENE_WIDTH)
    phase = ((xs + offset) % span) / span
    messenger = (hang_y + sag * 4 * phase * (1 - phase)).astype(np.int32)
    slope = rng.uniform(-0.08, 0.08)
    contact = (contact_y + slope * (xs - SCENE_WIDTH / 2)).astype(np.int32)
    for mx in range(-offset, SCENE_WIDTH + span, span):
        width = max(2, int(rng.uniform(4, 14) * scale))
        grey = tuple(int(v) for v in np.clip(rng.integers(60, 150) + rng.integers(-12, 13, 3), 0, 255))
        cv2.rectangle(scene, (mx - width, 0), (mx + width, SCENE_HEIGHT), grey, -1)
        arm = int(rng.choice([-1, 1]) * rng.uniform(40, 110) * scale)
        cv2.line(scene, (mx, hang_y), (mx + arm, hang_y + int(10 * scale)), grey, max(2, thickness + 1))
        cv2.line(scene, (mx, contact_y - int(8 * scale)), (mx + arm, contact_y), grey, max(1, thickness))
    pitch = max(8, int(rng.uniform(25, 70) * scale))
    for dx in range(int(rng.integers(pitch)), SCENE_WIDTH, pitch):
        cv2.line(scene, (dx, int(messenger[dx])), (dx, int(contact[dx])), dark, 1, cv2.LINE_AA)
    cv2.polylines(scene, [np.stack([xs, messenger], 1)], False, dark, thickness, cv2.LINE_AA)
    cv2.polylines(scene, [np.stack([xs, contact], 1)], False, dark, thickness + 1, cv2.LINE_AA)


def _paste_object(scene: np.ndarray, photo: np.ndarray, rng: np.random.Generator) -> None:
    """A patch of a real photo under a random outline (ellipse, polygon or box), feathered edges."""
    side = int(rng.uniform(0.12, 0.5) * SCENE_WIDTH)
    w, h = side, max(8, int(side * rng.uniform(0.35, 1.2)))
    ph, pw = photo.shape[:2]
    if ph <= h or pw <= w:
        return
    y, x = int(rng.integers(ph - h)), int(rng.integers(pw - w))
    patch = photo[y:y + h, x:x + w].astype(np.float64)
    mask = np.zeros((h, w), np.uint8)
    kind = rng.integers(3)
    if kind == 0:
        cv2.ellipse(mask, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), float(rng.uniform(0, 180)), 0, 360, 255, -1)
    elif kind == 1:
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(5, 10))))
        radii = rng.uniform(0.5, 1.0, len(angles))
        points = np.stack([w / 2 + radii * w / 2 * np.cos(angles), h / 2 + radii * h / 2 * np.sin(angles)], 1)
        cv2.fillPoly(mask, [points.astype(np.int32)], 255)
    else:
        mask[h // 8:h - h // 8, w // 8:w - w // 8] = 255
    alpha = cv2.GaussianBlur(mask, (0, 0), 1.2).astype(np.float64)[..., None] / 255
    top = int(rng.integers(0, max(1, SCENE_HEIGHT - h)))
    left = int(rng.integers(-w // 3, SCENE_WIDTH - 2 * w // 3))
    x0, x1 = max(0, left), min(SCENE_WIDTH, left + w)
    region = scene[top:top + h, x0:x1]
    cut = slice(x0 - left, x1 - left)
    region[:] = (alpha[:, cut] * patch[:, cut] + (1 - alpha[:, cut]) * region).astype(np.uint8)


def render_scene(rng: np.random.Generator, photos: list[np.ndarray]) -> np.ndarray:
    """One RGB uint8 scene, ``SCENE_HEIGHT`` x ``SCENE_WIDTH``; ``photos`` supply the foreign objects."""
    scene = _sky(rng)
    if rng.random() < 0.35:
        _skyline(scene, rng)
    for scale in ([1.0] if rng.random() < 0.6 else [1.0, rng.uniform(0.4, 0.7)]):  # a second track's line, farther
        _line_set(scene, rng, scale)
    if photos and rng.random() < OBJECT_SHARE:
        for _ in range(int(rng.integers(1, 3))):
            _paste_object(scene, photos[int(rng.integers(len(photos)))], rng)
    if rng.random() < 0.3:  # motion blur of a moving train
        length = int(rng.integers(3, 9))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2] = 1.0 / length
        scene = cv2.filter2D(scene, -1, kernel)
    return scene


def render_scenes(count: int, photos: list[np.ndarray], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [render_scene(rng, photos) for _ in range(count)]
