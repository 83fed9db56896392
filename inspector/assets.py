"""Where the shipped assets (default bundle, profiles, demo run) live.

In a source checkout or editable install they sit beside the package; ``INSPECTOR_ASSETS``
points elsewhere for installs that keep them in another place.
"""
from __future__ import annotations

import os
from pathlib import Path


def assets_dir() -> Path:
    override = os.environ.get("INSPECTOR_ASSETS")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "assets"
