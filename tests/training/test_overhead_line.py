"""The synthetic overhead-line scenes the distillation adds (no open catenary footage exists)."""
import numpy as np

from training.overhead_line import OBJECT_SHARE, SCENE_HEIGHT, SCENE_WIDTH, render_scenes


def _red_pixels(scene: np.ndarray) -> int:
    r, g, b = (scene[..., k].astype(int) for k in range(3))
    return int(((r > 180) & (g < 60) & (b < 60)).sum())


def test_scenes_are_seeded_and_carry_objects_from_the_given_photos():
    red = np.zeros((200, 300, 3), np.uint8)
    red[..., 0] = 220  # a photo no sky, mast or wire colour comes near
    scenes = render_scenes(40, [red], seed=3)
    assert all(s.shape == (SCENE_HEIGHT, SCENE_WIDTH, 3) and s.dtype == np.uint8 for s in scenes)
    assert all(np.array_equal(a, b) for a, b in zip(scenes, render_scenes(40, [red], seed=3)))
    assert not all(np.array_equal(a, b) for a, b in zip(scenes, render_scenes(40, [red], seed=4)))
    with_object = sum(_red_pixels(s) > 100 for s in scenes) / len(scenes)
    assert abs(with_object - OBJECT_SHARE) < 0.25, with_object  # about the intended share, not all or none
    assert not any(_red_pixels(s) for s in render_scenes(40, [], seed=3))  # without photos: line and sky only


def test_scenes_vary_where_a_catenary_tile_would():
    scenes = np.stack(render_scenes(30, [], seed=0)).astype(np.float32)
    dark = (scenes.max(axis=3) < 90).mean(axis=(1, 2))  # wires and masts against the sky
    assert (dark > 0.005).all() and dark.std() > 0.01  # every scene has a line, and not the same one
    assert scenes.mean(axis=(1, 2)).std(axis=0).min() > 5  # skies differ in colour
