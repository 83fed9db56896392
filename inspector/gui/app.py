"""Start the desktop app: ``inspector`` or ``inspector gui [VIDEO | PROJECT]``."""
from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

log = logging.getLogger(__name__)


def _keep_running(window) -> None:
    """An exception escaping a Qt slot would abort the process (PyQt6's default) and lose the
    operator's unsaved labels: log it, show one line, and carry on."""

    def hook(kind, exc, tb) -> None:
        detail = "".join(traceback.format_exception(kind, exc, tb))
        log.error("unexpected error in the window:\n%s", detail)
        crash = Path.home() / ".inspector-crash.log"
        try:
            crash.write_text(detail, encoding="utf-8")
        except OSError:
            pass
        window.error(f"unexpected error: {kind.__name__}: {exc} (details in {crash}); please report it")

    sys.excepthook = hook


def run(target: Path | None = None) -> int:
    from PyQt6.QtWidgets import QApplication

    from inspector.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("inspector")
    app.setApplicationName("inspector")
    window = MainWindow()
    _keep_running(window)
    window.show()
    if target is not None:
        window.open_path(target)
    return app.exec()
