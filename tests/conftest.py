import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("INSPECTOR_THREADS", "2")

from tests.factories import PROFILE_TOML, make_bundle, make_video  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture
def profile_file(tmp_path) -> Path:
    path = tmp_path / "test_profile.toml"
    path.write_text(PROFILE_TOML)
    return path


@pytest.fixture(scope="session")
def fault_video(tmp_path_factory) -> Path:
    """60 frames at 10 fps; the track region is red on frames 10-19 and 40-44."""
    folder = tmp_path_factory.mktemp("video")
    return make_video(folder / "run.mp4", 60, set(range(10, 20)) | set(range(40, 45)))
