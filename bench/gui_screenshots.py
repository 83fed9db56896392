"""Screenshots of the desktop app in a real X11 window, for the docs (run under Xvfb).

    xvfb-run -s "-screen 0 1440x900x24" python bench/gui_screenshots.py --out docs

Copies the demo run to a scratch folder, scans it, adds the bird-nest fault type from the five
shipped example frames (as 'faults add' does), then shows the window as a reviewer sees it: the
review queue on a finding (docs/screenshot-review.png), the project's video list
(docs/screenshot-videos.png) and the whole window (docs/screenshot-demo.png). Each picture is the
X server's own screen (the root window grabbed through the xcb platform), not a Qt rendering.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def settle(app, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def until(app, condition, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise SystemExit("timed out waiting for the window")
        app.processEvents()
        time.sleep(0.02)


def shoot(app, path: Path) -> None:
    """The X server's root window as it is on screen (not a Qt re-rendering of the widget)."""
    settle(app, 0.6)
    if not app.primaryScreen().grabWindow(0).save(str(path)):
        raise SystemExit(f"cannot write {path}")
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if not os.environ.get("DISPLAY"):
        raise SystemExit("no X display: run under xvfb-run")
    from PyQt6.QtCore import QSettings
    from PyQt6.QtWidgets import QApplication

    from inspector.examples import read_examples
    from inspector.faults import FaultLibrary, active_head
    from inspector.gui.main_window import MainWindow
    from inspector.scan import reclassify
    from inspector.store import Store

    app = QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp:
        demo = Path(shutil.copy(ROOT / "assets" / "demo" / "demo.mp4", Path(tmp) / "demo.mp4"))
        examples = (ROOT / "assets" / "demo" / "bird_nest_examples.csv").read_text().replace("demo.mp4", str(demo))
        (Path(tmp) / "examples.csv").write_text(examples)
        window = MainWindow(QSettings(str(Path(tmp) / "settings.ini"), QSettings.Format.IniFormat))
        window.setGeometry(0, 0, 1440, 870)
        window.show()
        window.open_path(demo)
        window.scan()
        until(app, lambda: window.scan_worker is not None and not window.scan_worker.isRunning())
        session = window.session
        with Store(session.project) as store:  # the five shipped example frames, as 'faults add' takes them
            FaultLibrary(store, session.bundle, session.backbone).add(
                "bird_nest", read_examples(Path(tmp) / "examples.csv"), session.profile)
            reclassify(store, active_head(store, session.bundle))
        session.reload_head()
        window._refresh_types()
        window.refresh_findings()
        window.start_review()
        for _ in range(3):  # a few reviews done, so the timeline shows the three looks
            window.review("confirmed")
        window.review("rejected")
        shoot(app, args.out / "screenshot-review.png")
        window.docks["Videos"].raise_()
        shoot(app, args.out / "screenshot-videos.png")
        window.docks["Findings"].raise_()
        window.stop_review()
        window.show_frame(80)
        shoot(app, args.out / "screenshot-demo.png")
        window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
