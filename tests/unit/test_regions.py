import numpy as np
import pytest

from inspector.errors import ProfileError
from inspector.regions import GENERIC_PROFILE, crop_frame, load_profile, parse_profile, profile_for
from tests.factories import PROFILE_TOML


def test_profile_expands_tiles_into_crops():
    profile = parse_profile(PROFILE_TOML)
    names = [s.name for s in profile.crop_specs()]
    assert names == ["catenary[0]", "catenary[1]", "track"]
    left, right, _ = profile.crop_specs()
    assert left.box == pytest.approx((0.0, 0.0, 0.5, 0.4))
    assert right.box == pytest.approx((0.5, 0.0, 1.0, 0.4))


def test_crop_frame_cuts_the_right_pixels_and_converts_to_rgb():
    frame = np.zeros((100, 200, 3), np.uint8)
    frame[50:, 60:140] = (255, 0, 0)  # blue in BGR, inside the track box
    specs = parse_profile(PROFILE_TOML).crop_specs()
    crops = crop_frame(frame, specs, 16)
    assert crops.shape == (3, 16, 16, 3)
    assert crops[2, :, :, 2].mean() == pytest.approx(255)  # blue is the last RGB channel
    assert crops[0].max() == 0


def test_shipped_demo_profile_loads_by_name():
    profile = load_profile("demo")
    assert {r.name for r in profile.regions} == {"catenary", "track"}


def test_profile_digest_changes_with_content():
    assert parse_profile(PROFILE_TOML).digest != parse_profile(PROFILE_TOML + "\n# x\n").digest


@pytest.mark.parametrize("text, message", [
    ("name = 'x'\n[[regions]\n", "not valid TOML"),
    ("name = 'x'\n", "no regions"),
    ("[[regions]]\nbox = [0, 0, 1, 1]\n", "needs a name"),
    ("[[regions]]\nname = 'a'\n", "needs box"),
    ("[[regions]]\nname = 'a'\nbox = [0.5, 0, 0.2, 1]\n", "must satisfy"),
    ("[[regions]]\nname = 'a'\nbox = [0, 0, 1, 1.5]\n", "must satisfy"),
    ("[[regions]]\nname = 'a'\nbox = [0, 0, 1, 1]\ntiles = [0, 1]\n", "tiles"),
    ("[[regions]]\nname = 'a'\nbox = [0, 0, 1, 1]\n[[regions]]\nname = 'a'\nbox = [0, 0, 1, 1]\n", "unique"),
    ("crop_size = 5\n[[regions]]\nname = 'a'\nbox = [0, 0, 1, 1]\n", "crop_size"),
])
def test_bad_profiles_give_one_clear_line(text, message):
    with pytest.raises(ProfileError, match=message) as info:
        parse_profile(text, "bad.toml")
    assert "\n" not in str(info.value)


def test_unknown_profile_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ProfileError, match="shipped: .*demo"):
        load_profile("no-such-profile")


def test_a_video_gets_the_profile_drawn_for_its_frame_size():
    """Never the demo camera's layout on other footage: another size gets the generic tiling."""
    assert profile_for(960, 540).name == "demo"
    generic = profile_for(1920, 1080)
    assert generic.name == GENERIC_PROFILE and {s.region for s in generic.crop_specs()} == {"frame"}
    assert len(generic.crop_specs()) == 8


def test_frame_size_must_be_two_positive_whole_numbers():
    with pytest.raises(ProfileError, match="frame_size must be"):
        parse_profile('frame_size = [960]\n[[regions]]\nname = "a"\nbox = [0, 0, 1, 1]\n')


def test_shrink_is_close_to_an_area_average_and_also_enlarges():
    import cv2

    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (410, 768), np.uint8), (0, 0), 3)  # a fractional 3.2x
    from inspector.regions import shrink

    area = cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA).astype(np.int16)
    assert shrink(image, 128).shape == (128, 128)
    assert np.abs(shrink(image, 128) - area).mean() < 2
    nearest = cv2.resize(image, (128, 128), interpolation=cv2.INTER_NEAREST).astype(np.int16)
    assert np.abs(nearest - area).mean() > 2 * np.abs(shrink(image, 128) - area).mean()  # anti-aliased
    assert shrink(image[:40, :50], 128).shape == (128, 128)
