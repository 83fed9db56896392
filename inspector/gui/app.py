"""Start the desktop app: ``inspector`` or ``inspector gui [VIDEO | PROJECT]``."""
from __future__ import annotations

import sys
from pathlib import Path


def run(target: Path | None = None) -> int:
    from PyQt6.QtWidgets import QApplication

    from inspector.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName("inspector")
    app.setApplicationName("inspector")
    window = MainWindow()
    window.show()
    if target is not None:
        window.open_path(target)
    return app.exec()
