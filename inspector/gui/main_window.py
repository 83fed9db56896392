"""The main window: player, timeline, findings, labelling, background scans and adaptation.

Keyboard first, with CVAT/labelme habits: Space play/pause, D/F or Left/Right step a frame,
Shift+Left/Right jump a second, Tab next region, 1-9 label the region with a fault type, 0 or N
normal, Ctrl+Z undo, Ctrl+S save labels, C/X confirm/reject the selected finding. Help > Shortcuts
lists them all.
"""
from __future__ import annotations

import logging
from pathlib import Path

from PyQt6.QtCore import QSettings, QSize, Qt, QTimer
from PyQt6.QtGui import QAction, QColor, QDragEnterEvent, QDropEvent, QIcon, QKeySequence, QPixmap
from PyQt6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSlider,
    QTableView,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from inspector.anomaly import ANOMALY
from inspector.errors import InspectorError
from inspector.faults import NORMAL
from inspector.gui.session import ReviewQueue, Session, default_project_for
from inspector.gui.widgets import FindingsModel, FrameView, Timeline, crop_image
from inspector.gui.workers import AnomalyWorker, LibraryWorker, LiveInference, ReportWorker, ScanWorker
from inspector.regions import GENERIC_PROFILE
from inspector.report import clock
from inspector.status import Review
from inspector.store import FindingRecord
from inspector.video import VIDEO_SUFFIXES, VideoReader

log = logging.getLogger(__name__)

SPEEDS = (0.25, 0.5, 1.0, 2.0, 4.0)
REFIT_EVERY = 5  # reviews recorded between two automatic refits
SHORTCUTS = (
    ("Space", "play / pause"), ("D or Left", "previous frame"), ("F or Right", "next frame"),
    ("Shift+Left / Shift+Right", "one second back / forward"), ("Home / End", "first / last frame"),
    ("[ / ]", "slower / faster playback"), ("Tab", "select the next region"),
    ("drag on the frame", "draw a box to label instead of a region"), ("Esc", "forget the drawn box"),
    ("1 ... 9", "label the drawn box or the selected region with fault type 1 ... 9"),
    ("0 or N", "label it normal (N: when not reviewing)"),
    ("Ctrl+L", "anomaly mode: learn the selected region's normal look from the frames from here on"),
    ("Ctrl+Z", "undo the last label"), ("Ctrl+S", "save the labels (labels.csv in the project)"),
    ("Ctrl+N", "new fault type"), ("Ctrl+Return", "adapt: learn the fault type from its labels"),
    ("F2", "rename the selected fault type"), ("Del", "take the selected example out of its type"),
    ("R", "review the open findings one by one (order: time or score)"),
    ("C / X", "confirm / reject the finding under review (or the selected rows)"),
    ("1 ... 9 while reviewing", "confirm the finding as fault type 1 ... 9 instead"),
    ("S / Backspace", "skip / back while reviewing"), ("N / P", "next / previous finding while reviewing"),
    ("Shift+N", "next finding still open"), ("Esc while reviewing", "stop reviewing"),
    ("F5", "learn from the reviews now (also every 5 reviews by itself)"),
    ("click or Enter on a finding", "show its best frame"),
    ("Ctrl+R", "scan the open video in the background"), ("Scan > Scan videos…", "scan several videos in the background"),
    ("Ctrl+E", "export the report"), ("Ctrl+O", "open a video"), ("Ctrl+Shift+O", "open a project"),
    ("F1", "this list"), ("Ctrl+Q", "quit"),
)


def scrolling(panel: QWidget) -> QScrollArea:
    """A dock's content that scrolls on a small screen instead of forcing the window taller."""
    area = QScrollArea()
    area.setWidget(panel)
    area.setWidgetResizable(True)
    area.setFrameShape(QScrollArea.Shape.NoFrame)
    return area


class MainWindow(QMainWindow):
    def __init__(self, settings: QSettings | None = None) -> None:
        super().__init__()
        self.setWindowTitle("inspector")
        self.setAcceptDrops(True)
        self.settings = settings or QSettings("inspector", "inspector")
        self.session: Session | None = None
        self.position = 0
        self.new_types: list[str] = []
        self.last_error = ""
        self.scan_worker: ScanWorker | None = None
        self.adapt_worker: LibraryWorker | None = None
        self.anomaly_worker: AnomalyWorker | None = None
        self.reviews_to_learn: list[tuple[int, str, str | None]] = []  # decisions not yet recorded as examples
        self.refit_wanted = False  # F5 or a full batch while the library was busy
        # finding id -> ('new', None) or ('persisting', the reference run's finding) against its line's reference
        self.versus: dict[int, tuple[str, FindingRecord | None]] = {}
        self.report_worker: ReportWorker | None = None
        self.live: LiveInference | None = None
        self._dialogs: list[QMessageBox] = []
        self.docks: dict[str, QDockWidget] = {}
        self.current_image = None  # the decoded frame on screen (BGR)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._tick)
        self._build()
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
            self.restoreState(self.settings.value("state"))
        else:  # first start: 1400 x 860, or the screen's free area if that is smaller
            free = self.screen().availableGeometry()
            self.resize(min(1400, free.width()), min(860, free.height()))

    # construction ---------------------------------------------------------------------------
    def _build(self) -> None:
        self.view = FrameView()
        self.view.regionClicked.connect(lambda _: self.view.setFocus())
        self.view.boxDrawn.connect(lambda box: self.status_text.setText(
            f"box {box} drawn: a digit labels it, Esc goes back to the regions"))
        self.play_button = QPushButton("Play")
        self.play_button.clicked.connect(self.toggle_play)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.valueChanged.connect(lambda v: v != self.position and self.show_frame(v))
        self.time_label = QLabel("--:--")
        self.speed_box = QComboBox()
        self.speed_box.addItems([f"{s:g}x" for s in SPEEDS])
        self.speed_box.setCurrentIndex(SPEEDS.index(1.0))
        self.speed_box.currentIndexChanged.connect(lambda _: self._restart_timer())
        controls = QHBoxLayout()
        for widget in (self.play_button, QLabel("speed"), self.speed_box):
            controls.addWidget(widget)
        controls.addWidget(self.slider, 1)
        controls.addWidget(self.time_label)
        self.timeline = Timeline()
        self.timeline.seek.connect(self.show_frame)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addWidget(self.view, 1)
        layout.addLayout(controls)
        layout.addWidget(self.timeline)
        self.setCentralWidget(central)

        self.findings_model = FindingsModel()
        self.table = QTableView()
        self.table.setModel(self.findings_model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().hide()
        self.table.clicked.connect(self._seek_to_row)  # a click or Enter on a row shows its best frame
        self.table.activated.connect(self._seek_to_row)
        self.class_filter = QComboBox()
        self.status_filter = QComboBox()
        self.status_filter.addItems(["all", *Review])
        for box in (self.class_filter, self.status_filter):
            box.currentIndexChanged.connect(lambda _: self.refresh_findings())
        confirm, reject = QPushButton("Confirm (C)"), QPushButton("Reject (X)")
        confirm.clicked.connect(lambda: self.review(Review.CONFIRMED))
        reject.clicked.connect(lambda: self.review(Review.REJECTED))
        filters = QHBoxLayout()
        filters.addWidget(self.class_filter)
        filters.addWidget(self.status_filter)
        buttons = QHBoxLayout()
        buttons.addWidget(confirm)
        buttons.addWidget(reject)
        panel = QWidget()
        panel.setMinimumWidth(300)
        column = QVBoxLayout(panel)
        column.addLayout(filters)
        column.addWidget(self.table)
        column.addLayout(buttons)
        self._dock("Findings", panel, Qt.DockWidgetArea.RightDockWidgetArea)

        self.types_list = QListWidget()
        self.labels_list = QListWidget()
        adapt = QPushButton("Adapt (Ctrl+Return)")
        adapt.clicked.connect(self.adapt)
        new = QPushButton("New fault type… (Ctrl+N)")
        new.clicked.connect(self.ask_fault_type)
        self.quality_label = QLabel("")
        self.quality_label.setWordWrap(True)
        label_panel = QWidget()
        column = QVBoxLayout(label_panel)
        column.addWidget(QLabel("Fault types (digit keys; 0 = normal; F2 renames)"))
        column.addWidget(self.types_list)
        self.types_list.currentRowChanged.connect(lambda _: self._refresh_examples())
        self.examples_list = QListWidget()
        self.examples_list.setViewMode(QListWidget.ViewMode.IconMode)
        self.examples_list.setIconSize(QSize(64, 64))
        self.examples_list.setMaximumHeight(110)
        self.examples_list.setToolTip("the selected type's examples: Delete takes a wrong one out")
        column.addWidget(QLabel("Its examples (Delete takes one out)"))
        column.addWidget(self.examples_list)
        self.threshold_box = QDoubleSpinBox()
        self.threshold_box.setRange(0.01, 0.99)
        self.threshold_box.setSingleStep(0.05)
        self.threshold_box.setDecimals(2)
        self.threshold_box.setToolTip("alarm threshold of the selected fault type: a crop's calibrated score must "
                                      "exceed it (higher: fewer false alarms, more misses)")
        set_threshold = QPushButton("Set")
        set_threshold.clicked.connect(lambda: self.set_threshold(self.threshold_box.value()))
        reset_threshold = QPushButton("Default")
        reset_threshold.clicked.connect(lambda: self.set_threshold(None))
        row = QHBoxLayout()
        row.addWidget(QLabel("Alarm threshold"))
        row.addWidget(self.threshold_box)
        row.addWidget(set_threshold)
        row.addWidget(reset_threshold)
        column.addLayout(row)
        column.addWidget(new)
        column.addWidget(QLabel("Labels on this video"))
        column.addWidget(self.labels_list)
        column.addWidget(adapt)
        column.addWidget(self.quality_label)
        self._dock("Labelling", scrolling(label_panel), Qt.DockWidgetArea.RightDockWidgetArea)

        self.videos_list = QListWidget()
        self.videos_list.setToolTip("the project's videos: Enter or double-click opens one")
        self.videos_list.itemActivated.connect(self._open_listed_video)
        self._dock("Videos", self.videos_list, Qt.DockWidgetArea.RightDockWidgetArea)

        self.review_order = QComboBox()
        self.review_order.addItems(["time", "score"])
        self.review_order.setToolTip("review order: by video and time, or most confident first")
        start = QPushButton("Review open findings (R)")
        start.clicked.connect(self.start_review)
        self.zoom = QLabel("R starts reviewing the open findings one by one")
        self.zoom.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.zoom.setMinimumSize(200, 160)
        self.zoom.setWordWrap(True)
        self.review_info = QLabel("")
        self.review_info.setWordWrap(True)
        self.reference_zoom = QLabel()  # a persisting fault: the reference run's crop of it
        self.reference_zoom.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.reference_zoom.setMaximumHeight(140)
        self.reference_zoom.hide()
        review_panel = QWidget()
        column = QVBoxLayout(review_panel)
        row = QHBoxLayout()
        row.addWidget(QLabel("order"))
        row.addWidget(self.review_order)
        row.addWidget(start, 1)
        column.addLayout(row)
        column.addWidget(self.zoom, 1)
        column.addWidget(self.reference_zoom)
        column.addWidget(self.review_info)
        self._dock("Review", scrolling(review_panel), Qt.DockWidgetArea.RightDockWidgetArea)
        self.queue: ReviewQueue | None = None
        # Two tabbed groups on the right (findings | videos above, review | labelling below): the frame
        # keeps most of the width from 800 x 600 up.
        self.tabifyDockWidget(self.docks["Findings"], self.docks["Videos"])
        self.tabifyDockWidget(self.docks["Review"], self.docks["Labelling"])
        self.docks["Findings"].raise_()
        self.docks["Review"].raise_()
        self.resizeDocks([self.docks["Findings"]], [440], Qt.Orientation.Horizontal)  # room for class names

        self.status_text = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMinimumWidth(320)
        self.progress.setMaximumWidth(460)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel scan")
        self.cancel_button.clicked.connect(self.cancel_scan)
        self.cancel_button.hide()
        self.statusBar().addWidget(self.status_text, 1)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.cancel_button)
        self._menus()

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        self.docks[title] = dock
        return dock

    def _action(self, menu, text: str, slot, *keys: str) -> QAction:
        action = QAction(text, self)
        if keys:
            action.setShortcuts([QKeySequence(k) for k in keys])
        action.triggered.connect(slot)
        menu.addAction(action)
        return action

    def _menus(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        self._action(file, "Open &video…", self.ask_video, "Ctrl+O")
        self._action(file, "Open &project…", self.ask_project, "Ctrl+Shift+O")
        self.recent_menu = file.addMenu("Open &recent")
        self._fill_recent()
        self._action(file, "&Export report…", self.ask_report, "Ctrl+E")
        file.addSeparator()
        self._action(file, "&Quit", self.close, "Ctrl+Q")
        play = bar.addMenu("&Playback")
        self._action(play, "Play / pause", self.toggle_play, "Space")
        self._action(play, "Previous frame", lambda: self.step(-1), "D", "Left")
        self._action(play, "Next frame", lambda: self.step(1), "F", "Right")
        self._action(play, "Back one second", lambda: self.step(-self._fps()), "Shift+Left")
        self._action(play, "Forward one second", lambda: self.step(self._fps()), "Shift+Right")
        self._action(play, "First frame", lambda: self.show_frame(0), "Home")
        self._action(play, "Last frame", lambda: self.show_frame(self._frame_count() - 1), "End")
        self._action(play, "Slower", lambda: self._speed(-1), "[")
        self._action(play, "Faster", lambda: self._speed(1), "]")
        label = bar.addMenu("&Label")
        self._action(label, "Next region", self.next_region, "Tab")
        self._action(label, "Forget the drawn box / stop reviewing", self._escape, "Esc")
        for digit in range(1, 10):
            self._action(label, f"Label with fault type {digit}", lambda _, d=digit: self.label_key(d), str(digit))
        self._action(label, "Label normal", lambda: self.label_key(0), "0")
        self._action(label, "Undo label", self.undo_label, "Ctrl+Z")
        self._action(label, "Save labels", self.save_labels, "Ctrl+S")
        self._action(label, "New fault type…", self.ask_fault_type, "Ctrl+N")
        self._action(label, "Adapt", self.adapt, "Ctrl+Return")
        self._action(label, "Rename the selected fault type…", self.ask_rename, "F2")
        self._action(label, "Take the selected example out", self.drop_example, "Delete")
        label.addSeparator()
        self._action(label, "Learn the normal look of the selected region from here…", self.ask_anomaly_fit, "Ctrl+L")
        review = bar.addMenu("&Review")
        self._action(review, "Review open findings", self.start_review, "R")
        self._action(review, "Confirm finding", lambda: self.review(Review.CONFIRMED), "C")
        self._action(review, "Reject finding", lambda: self.review(Review.REJECTED), "X")
        self._action(review, "Skip finding", lambda: self._review_move(1), "S")
        self._action(review, "Back to the previous finding", lambda: self._review_move(-1), "Backspace")
        self._action(review, "Next finding (label normal when not reviewing)", self._key_n, "N")
        self._action(review, "Previous finding", lambda: self._review_move(-1), "P")
        self._action(review, "Next unreviewed finding", self._review_next_open, "Shift+N")
        self._action(review, "Learn from the reviews now (refit)", self._learn_from_reviews, "F5")
        scan = bar.addMenu("&Scan")
        self._action(scan, "Scan this video", self.scan, "Ctrl+R")
        self._action(scan, "Scan videos…", self.ask_scan_videos)
        self._action(scan, "Cancel scan", self.cancel_scan)
        help_menu = bar.addMenu("&Help")
        self._action(help_menu, "&Shortcuts", self.show_shortcuts, "F1")

    # opening --------------------------------------------------------------------------------
    def open_path(self, path: Path) -> bool:
        """A video (its project is made beside it) or a project folder; errors become a dialog."""
        try:
            path = Path(path)
            if path.is_dir():
                if not Session.is_project(path):
                    raise InspectorError(f"{path}: not an inspector project (no project.sqlite); open a video "
                                         "or a project folder")
                self._open_session(path)
                video = self.session.last_video()
                if video is not None:
                    self._open_video(video)
            else:
                VideoReader(path).close()  # an unreadable file changes nothing: no new project, no switch
                project = default_project_for(path)
                if self.session is None or self.session.project != project:
                    self._open_session(project)
                self._open_video(path)
            self._remember(path)
            return True
        except InspectorError as exc:
            self.error(str(exc))
            return False

    def _open_session(self, project: Path) -> None:
        backbone = self.session.backbone if self.session is not None else None
        session = Session.open(project, backbone=backbone)
        if self.session is not None:
            if self.adapt_worker is not None:
                self.adapt_worker.wait()  # its signal then finds the new session: a refresh, no harm
            self._record_waiting_reviews()  # they belong to the project being left
            self.session.close()
        self.session = session
        self.refit_wanted = False
        self.versus = session.versus_reference()  # new / persisting against each line's reference run
        self.queue = None  # a review queue belongs to the project it was started on
        if self.live is None:
            self.live = LiveInference(session.backbone)
            self.live.result.connect(self._live_result)
            self.live.start()
        self.new_types.clear()
        self.setWindowTitle(f"inspector — {project}")
        self.status_text.setText(f"project {project} · bundle {session.bundle.name} ({session.backbone.precision}, "
                                 f"{session.backbone.provider})")
        self._refresh_types()

    def _open_video(self, path: Path) -> None:
        reader = self.session.open_video(path)
        self.slider.setRange(0, reader.info.frame_count - 1)
        self.position = -1
        self.show_frame(0)
        self.refresh_findings()
        self._refresh_labels()
        if self.session.profile.name == GENERIC_PROFILE:
            self.status_text.setText(f"no camera profile is drawn for {reader.info.width}x{reader.info.height} "
                                     f"footage: the whole frame is cut in {len(self.session.crops)} tiles")

    def ask_video(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open video", str(self._last_dir()),
                                              "Videos (" + " ".join(f"*{s}" for s in VIDEO_SUFFIXES) + ");;All (*)")
        if path:
            self.open_path(Path(path))

    def ask_project(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open project", str(self._last_dir()))
        if path:
            self.open_path(Path(path))

    def _last_dir(self) -> Path:
        recent = self.settings.value("recent", []) or []
        return Path(recent[0]).parent if recent else Path.home()

    def _remember(self, path: Path) -> None:
        recent = [str(path.resolve())] + [p for p in (self.settings.value("recent", []) or []) if p != str(path.resolve())]
        self.settings.setValue("recent", recent[:8])
        self._fill_recent()

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for item in self.settings.value("recent", []) or []:
            self._action(self.recent_menu, item, lambda _, p=item: self.open_path(Path(p)))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        urls = event.mimeData().urls()
        if urls:
            self.open_path(Path(urls[0].toLocalFile()))

    # playback -------------------------------------------------------------------------------
    def _fps(self) -> int:
        return max(1, round(self.session.video.info.fps)) if self.session and self.session.video else 1

    def _frame_count(self) -> int:
        return self.session.video.info.frame_count if self.session and self.session.video else 1

    def show_frame(self, index: int) -> None:
        if self.session is None or self.session.video is None:
            return
        index = max(0, min(index, self._frame_count() - 1))
        try:
            frame = self.session.read(index)
        except InspectorError as exc:
            self.pause()
            self.error(str(exc))
            return
        self.position = index
        self.current_image = frame.image
        self.view.show_frame(frame.image, self.session.crops)
        self.view.set_labels({x.target: x.label for x in self.session.labels if x.frame == index})
        self.slider.blockSignals(True)
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        info = self.session.video.info
        self.time_label.setText(f"{clock(frame.timestamp)} / {clock(info.duration)}  frame {index}")
        self.timeline.set_position(index)
        self.live.submit(index, frame.image, self.session.crops, self.session.head, self.session.anomaly)

    def _live_result(self, index: int, results: list) -> None:
        if index == self.position:
            self.view.set_live(results)

    def step(self, delta: int) -> None:
        self.pause()
        self.show_frame(self.position + delta)

    def toggle_play(self) -> None:
        if self.timer.isActive():
            self.pause()
        elif self.session is not None and self.session.video is not None:
            self.play_button.setText("Pause")
            self._restart_timer()

    def pause(self) -> None:
        self.timer.stop()
        self.play_button.setText("Play")

    def _restart_timer(self) -> None:
        if self.session is None or self.session.video is None:
            return
        speed = SPEEDS[self.speed_box.currentIndex()]
        interval = max(1, round(1000 / (self.session.video.info.fps * speed)))
        if self.timer.isActive() or self.play_button.text() == "Pause":
            self.timer.start(interval)

    def _speed(self, delta: int) -> None:
        self.speed_box.setCurrentIndex(max(0, min(len(SPEEDS) - 1, self.speed_box.currentIndex() + delta)))

    def _tick(self) -> None:
        if self.position + 1 >= self._frame_count():
            self.pause()
            return
        self.show_frame(self.position + 1)

    # findings -------------------------------------------------------------------------------
    def refresh_findings(self) -> None:
        if self.session is None or self.session.video is None:
            return
        findings = self.session.findings()
        wanted_class = self.class_filter.currentText()
        classes = sorted({f.class_name for f in findings})
        self.class_filter.blockSignals(True)
        self.class_filter.clear()
        self.class_filter.addItems(["all classes"] + classes)
        self.class_filter.setCurrentText(wanted_class if wanted_class in classes else "all classes")
        self.class_filter.blockSignals(False)
        status = self.status_filter.currentText()
        shown = [f for f in findings if self.class_filter.currentText() in ("all classes", f.class_name)
                 and status in ("all", f.status)]
        self.findings_model.set_rows(shown, self.session.video.info.fps,
                                     {i: mark for i, (mark, _) in self.versus.items()})
        self.timeline.set_findings(findings, self._frame_count())
        self.refresh_videos()

    def review(self, status: str, reviewed_class: str | None = None) -> None:
        """C / X (or a digit while reviewing): the finding under review, else the selected rows.
        The decision shows at once; what it teaches the library is learned in the background."""
        if self.queue is not None and self.queue.current is not None:
            try:
                self.session.set_status(self.queue.current, status, reviewed_class)
                self._learn(self.queue.current, status, reviewed_class)
            except InspectorError as exc:
                self.error(str(exc))
            self.refresh_findings()
            self._review_move(1)
            return
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        if not rows or self.session is None:
            self.status_text.setText("select a finding in the table first")
            return
        try:
            for row in rows:
                finding_id = self.findings_model.rows[row].id
                self.session.set_status(finding_id, status)
                self._learn(finding_id, status, None)
        except InspectorError as exc:  # e.g. the finding went with a rescan: say so, show the current list
            self.error(str(exc))
        self.refresh_findings()
        self.table.selectRow(min(rows[-1] + 1, self.findings_model.rowCount() - 1))

    def _learn(self, finding_id: int, status: str, reviewed_class: str | None) -> None:
        self.reviews_to_learn.append((finding_id, status, reviewed_class))
        if len(self.reviews_to_learn) >= REFIT_EVERY:
            self._learn_from_reviews()

    def _learn_from_reviews(self) -> None:
        """Every ``REFIT_EVERY`` reviews, or on F5: record the waiting decisions as examples, refit
        the head and classify the runs again, all in the background (the keys between two refits
        cost nothing). Decisions made meanwhile wait for the next round; none is lost (at close
        they are recorded, and the next refit uses them)."""
        if self.session is None:
            return
        if self.adapt_worker is not None and self.adapt_worker.isRunning():
            self.refit_wanted = True
            return
        batch, self.reviews_to_learn, self.refit_wanted = self.reviews_to_learn, [], False

        def change(library):
            for decision in batch:
                library.record_review(*decision)
            return library.refit()

        self.quality_label.setText(f"learning from {len(batch)} new reviews…")
        self.adapt_worker = LibraryWorker(self.session.project, self.session.bundle, self.session.backbone, change)
        self.adapt_worker.done.connect(
            lambda change, summary: self._library_changed(change, f"learned from the reviews: {summary}"))
        self.adapt_worker.failed.connect(lambda message: (self.quality_label.setText(""), self.error(message)))
        # The next round once the thread has ended: 'done' is sent while it still runs, and a round
        # started from there would find it busy and wait for the next key.
        self.adapt_worker.finished.connect(self._next_review_round)
        self.adapt_worker.start()

    def _next_review_round(self) -> None:
        if self.refit_wanted or len(self.reviews_to_learn) >= REFIT_EVERY:
            self._learn_from_reviews()

    def refresh_videos(self) -> None:
        self.videos_list.clear()
        if self.session is None:
            return
        current = self.session.video.info.path if self.session.video else None
        for row in self.session.video_rows():
            item = QListWidgetItem(row.describe())
            item.setData(Qt.ItemDataRole.UserRole, str(row.path))
            item.setToolTip(str(row.path))
            if row.path == current:
                font = item.font()
                font.setBold(True)
                item.setFont(font)
            if not row.present:
                item.setForeground(QColor("#888888"))
            self.videos_list.addItem(item)

    def _open_listed_video(self, item: QListWidgetItem) -> None:
        path = Path(item.data(Qt.ItemDataRole.UserRole))
        if not path.is_file():
            self.error(f"{path}: the file is no longer there; put it back or scan it again from its new place")
            return
        try:
            self._open_video(path)
        except InspectorError as exc:
            self.error(str(exc))

    def _seek_to_row(self, index) -> None:
        if 0 <= index.row() < len(self.findings_model.rows):
            self.show_frame(self.findings_model.rows[index.row()].best_frame)

    # review queue ---------------------------------------------------------------------------
    def start_review(self) -> None:
        if self.session is None:
            self.error("open a project first (Ctrl+O)")
            return
        self.docks["Review"].raise_()
        self.queue = ReviewQueue.of(self.session.store.findings(), self.review_order.currentText())
        if not self.queue.ids:
            self.queue = None
            self.status_text.setText("no open findings to review")
            return
        self._show_review()

    def _review_move(self, delta: int) -> None:
        if self.queue is not None:
            self.queue.move(delta)
            self._show_review()

    def _review_next_open(self) -> None:
        if self.queue is not None:
            self.queue.next_open(lambda fid: self.session.finding(fid).status)
            self._show_review()

    def _key_n(self) -> None:
        if self.queue is not None:
            self._review_move(1)
        else:
            self.label_key(0)

    def _escape(self) -> None:
        if self.queue is not None:
            self.stop_review()
        else:
            self.view.clear_box()

    def stop_review(self, note: str = "review stopped") -> None:
        self.queue = None
        self.timeline.current = None
        self.timeline.update()
        self.zoom.clear()
        self.zoom.setText("R starts reviewing the open findings one by one")
        self.review_info.setText(note)
        self.status_text.setText(note)

    def _show_review(self) -> None:
        """Seek to the finding under review, outline it, and zoom its crop beside the frame."""
        assert self.queue is not None
        if self.queue.current is None:
            findings = self.session.store.findings()
            counts = {s: sum(f.status == s for f in findings) for s in Review}
            self.stop_review(f"review done: {counts['confirmed']} confirmed, {counts['rejected']} rejected, "
                             f"{counts[Review.OPEN]} still open")
            return
        if self.session.store.finding(self.queue.current) is None:  # a refit no longer raises it: nothing to review
            self.queue.ids.pop(self.queue.position)
            return self._show_review()
        try:
            finding = self.session.finding(self.queue.current)
            video = self.session.video_of(finding)
            if self.session.video is None or self.session.video.info.path != video:
                self._open_video(video)
        except InspectorError as exc:
            self.error(str(exc))
            self.queue.ids.pop(self.queue.position)
            return self._show_review()
        self.timeline.current = finding.id
        self.show_frame(finding.best_frame)
        for row, f in enumerate(self.findings_model.rows):
            if f.id == finding.id:
                self.table.selectRow(row)
                self.table.scrollTo(self.findings_model.index(row, 0))
        spec = next((c for c in self.session.crops if c.name == finding.crop), None)
        if spec is not None:
            # An anomaly shows why: its heatmap (red: unlike the region's normal look) over the crop.
            explainer = self.session.explainer() if finding.class_name == ANOMALY else None
            paint = (lambda crop: explainer.overlay(finding.region, crop)) if explainer else None
            image = crop_image(self.current_image, spec, paint)  # the frame show_frame just decoded
            self.zoom.setPixmap(QPixmap.fromImage(image).scaled(
                self.zoom.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation))
        mark, earlier = self.versus.get(finding.id, ("", None))
        self._show_reference(earlier)
        types = self._label_names()
        keys = ", ".join(f"{k + 1} {name}" for k, name in enumerate(types[:9]))
        self.review_info.setText(
            f"{self.queue.position + 1} of {len(self.queue.ids)}: {finding.class_name} on {finding.crop}, "
            f"score {finding.best_score:.2f}, {finding.status}" + (f", {mark} since the reference run" if mark else "")
            + "\nC confirm · X reject · S skip · Backspace back · "
            "Shift+N next open · Esc stop" + (f"\nre-class: {keys}" if keys else ""))
        self.status_text.setText(f"reviewing finding {self.queue.position + 1} of {len(self.queue.ids)}")

    def _show_reference(self, earlier: FindingRecord | None) -> None:
        """Beside a persisting finding, the reference run's crop of the same fault (decoded from that run)."""
        self.reference_zoom.hide()
        if earlier is None:
            return
        try:
            frame, spec = self.session.finding_frame(earlier)
        except InspectorError as exc:  # the reference video moved: the review goes on without it
            log.warning("no reference crop for finding %d: %s", earlier.id, exc)
            return
        if spec is not None:
            image = crop_image(frame.image, spec)
            self.reference_zoom.setPixmap(QPixmap.fromImage(image).scaled(
                self.reference_zoom.width(), 130, Qt.AspectRatioMode.KeepAspectRatio,
                Qt.TransformationMode.SmoothTransformation))
            self.reference_zoom.setToolTip(f"the reference run's finding {earlier.id} of the same fault")
            self.reference_zoom.show()

    # labelling ------------------------------------------------------------------------------
    def _label_names(self) -> list[str]:
        known = self.session.fault_types() if self.session else []
        return known + [n for n in self.new_types if n not in known]

    def _refresh_types(self) -> None:
        """The fault types in key order; the selected one stays selected (a refit keeps the place)."""
        selected = self._selected_type()
        self.types_list.blockSignals(True)
        self.types_list.clear()
        names = self._label_names()[:9]
        for i, name in enumerate(names, start=1):
            self.types_list.addItem(f"{i}  {name}" + ("  (new)" if name in self.new_types else ""))
        self.types_list.addItem(f"0  {NORMAL}")
        if selected in names or selected == NORMAL:
            self.types_list.setCurrentRow(names.index(selected) if selected in names else len(names))
        self.types_list.blockSignals(False)
        self._refresh_examples()

    def _selected_type(self) -> str | None:
        item = self.types_list.currentItem()
        if item is None:
            return None
        name = item.text().split()[1]
        return name if name != NORMAL else NORMAL

    def _refresh_examples(self) -> None:
        self.examples_list.clear()
        name = self._selected_type()
        if self.session is None or name is None:
            return
        head = self.session.head
        if name in head.classes and not head.normal[head.classes.index(name)]:
            self.threshold_box.setValue(float(head.threshold_of(head.classes.index(name))))
        for example in self.session.store.examples():
            if example.fault_type != name:
                continue
            item = QListWidgetItem(QIcon(str(self.session.project / example.image)), f"#{example.id}")
            item.setData(Qt.ItemDataRole.UserRole, example.id)
            item.setToolTip(f"example {example.id}: {example.source}, frame {example.frame} {example.crop or ''}")
            self.examples_list.addItem(item)

    def _library_change(self, change, describe: str) -> None:
        """Run a fault-library change in the background; the head and the findings follow."""
        if self.adapt_worker is not None and self.adapt_worker.isRunning():
            self.status_text.setText("the fault library is being changed; wait a moment")
            return
        self.quality_label.setText(f"{describe}…")
        self.adapt_worker = LibraryWorker(self.session.project, self.session.bundle, self.session.backbone, change)
        self.adapt_worker.done.connect(lambda made, summary: self._library_changed(made, f"{describe}: {summary}"))
        self.adapt_worker.failed.connect(lambda message: (self.quality_label.setText(""), self.error(message)))
        self.adapt_worker.start()

    def _library_changed(self, change, text: str) -> None:
        if self.session is None:
            return
        self.session.reload_head()
        self.versus = self.session.versus_reference()  # the findings were classified again
        self.quality_label.setText(f"{text} (head version {change.version})")
        self._refresh_types()
        self.refresh_findings()
        self.refresh_overlay()
        if self.queue is not None:  # the finding under review was classified again: its score and mark
            self._show_review()

    def drop_example(self) -> None:
        item = self.examples_list.currentItem()
        if self.session is None or item is None:
            self.status_text.setText("select an example of a fault type first (Labelling panel)")
            return
        example_id = int(item.data(Qt.ItemDataRole.UserRole))
        self._library_change(lambda library: library.remove_example(example_id), f"example {example_id} taken out")

    def ask_rename(self) -> None:
        old = self._selected_type()
        if self.session is None or old is None or old == NORMAL:
            self.status_text.setText("select one of the project's fault types first (Labelling panel)")
            return
        new, ok = QInputDialog.getText(self, "Rename fault type", f"New name for {old}:", text=old)
        if ok and new.strip() and new.strip() != old:
            self.rename_type(old, new.strip())

    def set_threshold(self, value: float | None) -> None:
        """The selected fault type's alarm threshold (None: back to the default), in the background."""
        name = self._selected_type()
        if self.session is None or name is None or name not in self.session.head.fault_classes:
            self.status_text.setText("select a fault type the head knows first (Labelling panel)")
            return
        describe = f"alarm threshold of {name} " + ("reset" if value is None else f"set to {value:.2f}")
        self._library_change(lambda library: library.set_threshold(name, value), describe)

    def ask_anomaly_fit(self) -> None:
        """Anomaly mode from the app: the selected region's normal look, from the frames shown from
        here on (the operator has checked nothing is wrong in them)."""
        if self.session is None or self.session.video is None or self.view.selected is None:
            self.status_text.setText("open a video and select a region (Tab) first")
            return
        region = next(c.region for c in self.session.crops if c.name == self.view.selected)
        left = self._frame_count() - self.position
        count, ok = QInputDialog.getInt(self, "Learn the normal look", f"Frames from {self.position} on in which "
                                        f"nothing is wrong in region {region}:", min(150, left), 10, max(10, left))
        if ok:
            self.fit_anomaly(region, self.position, self.position + count - 1)

    def fit_anomaly(self, region: str, first: int, last: int) -> None:
        assert self.session is not None and self.session.video is not None
        self.anomaly_worker = AnomalyWorker(self.session.project, self.session.backbone,
                                            self.session.video.info.path, (first, last), region, self.session.profile)
        self.anomaly_worker.done.connect(self._anomaly_fitted)
        self.anomaly_worker.failed.connect(self.error)
        self.status_text.setText(f"learning the normal look of {region} from frames {first}-{last}…")
        self.anomaly_worker.start()

    def _anomaly_fitted(self, summary: str) -> None:
        if self.session is not None:
            self.session.reload_head()  # and the anomaly models: the live overlay uses the new one at once
            self.show_frame(self.position)
        self.status_text.setText(summary)

    def rename_type(self, old: str, new: str) -> None:
        self._library_change(lambda library: library.rename(old, new), f"{old} renamed to {new}")

    def _refresh_labels(self) -> None:
        self.labels_list.clear()
        if self.session is not None:
            for x in self.session.labels:
                self.labels_list.addItem(f"frame {x.frame}  {x.target}  {x.label}")
        self.view.set_labels({x.target: x.label for x in (self.session.labels if self.session else [])
                              if x.frame == self.position})

    def next_region(self) -> None:
        self.view.select_next()

    def label_key(self, key: int) -> None:
        """Label the drawn box if there is one, else the selected region; while reviewing, a digit
        confirms the finding as fault type ``key`` instead (a correction of its class)."""
        if self.queue is not None and key > 0:
            names = self._label_names()
            if key <= len(names):
                self.review(Review.CONFIRMED, names[key - 1])
            return
        if self.session is None or self.session.video is None or (self.view.selected is None and self.view.box is None):
            return
        names = self._label_names()
        if key == 0:
            label = NORMAL
        elif key <= len(names):
            label = names[key - 1]
        else:
            self.status_text.setText(f"no fault type on key {key}; add one with Ctrl+N")
            return
        self.session.add_label(self.position, self.view.selected, label, self.view.box)
        self._refresh_labels()

    def undo_label(self) -> None:
        if self.session is not None and self.session.undo_label() is not None:
            self._refresh_labels()

    def save_labels(self) -> None:
        if self.session is not None and self.session.video is not None:
            path = self.session.save_labels()
            self.status_text.setText(f"labels saved to {path}")

    def ask_fault_type(self) -> None:
        name, ok = QInputDialog.getText(self, "New fault type", "Name of the new fault type (e.g. bird_nest):")
        if ok and name.strip():
            self.start_fault_type(name.strip())

    def start_fault_type(self, name: str) -> None:
        self.docks["Labelling"].raise_()
        if name not in self.new_types:
            self.new_types.append(name)
        self._refresh_types()
        key = self._label_names().index(name) + 1
        self.status_text.setText(f"label a few frames of {name} with key {key} (0 for normal ones), then Adapt")

    def adapt(self) -> None:
        if self.session is None or self.session.video is None:
            return
        teachable = set(self.new_types) | {t.name for t in self.session.store.fault_types() if not t.normal}
        pending = [n for n in self._label_names() if n in teachable and any(x.label == n for x in self.session.labels)]
        if not pending:
            self.error("no labels of a fault type to learn yet: press Ctrl+N to name one (or pick a type of yours), "
                       "then label frames with its key")
            return
        name = pending[0]
        self.quality_label.setText(f"learning {name}…")
        examples, profile = self.session.examples_for(name), self.session.profile
        self.adapt_worker = LibraryWorker(self.session.project, self.session.bundle, self.session.backbone,
                                          lambda library: library.add(name, examples, profile))
        self.adapt_worker.done.connect(lambda change, summary: self._adapted(name, change, summary))
        self.adapt_worker.failed.connect(lambda message: (self.quality_label.setText(""), self.error(message)))
        self.adapt_worker.start()

    def _adapted(self, name: str, change, summary: str) -> None:
        self.session.reload_head()
        if name in self.new_types:
            self.new_types.remove(name)
        self.session.forget_labels({name, NORMAL})
        q = change.quality
        loo = "n/a" if q.loo_accuracy is None else f"{q.loo_accuracy:.0%}"
        text = (f"{name} learnt in {change.seconds:.2f} s (head version {change.version}); leave-one-out "
                f"accuracy {loo}; {summary}")
        if q.warnings:
            text += "\nWarning: " + "; ".join(q.warnings)
        self.quality_label.setText(text)
        self._refresh_types()
        self._refresh_labels()
        self.refresh_findings()
        self.refresh_overlay()

    def refresh_overlay(self) -> None:
        """Classify the frame on screen again (a new head), without decoding it again."""
        if self.session is not None and self.current_image is not None:
            self.live.submit(self.position, self.current_image, self.session.crops, self.session.head,
                             self.session.anomaly)

    # background scans and reports -----------------------------------------------------------
    def scan(self, videos: list[Path] | None = None) -> None:
        if self.session is None or (videos is None and self.session.video is None):
            self.error("open a video first (Ctrl+O)")
            return
        if self.scan_worker is not None and self.scan_worker.isRunning():
            self.status_text.setText("a scan is already running")
            return
        # this video: the regions on screen; a batch: each video's own (by its frame size)
        profile = None if videos else self.session.profile
        videos = videos or [self.session.video.info.path]
        self.scan_worker = ScanWorker(self.session.project, self.session.backbone, self.session.head, profile, videos)
        self.scan_worker.progress.connect(self._scan_progress)
        self.scan_worker.done.connect(self._scan_done)
        self.scan_worker.failed.connect(lambda message: (self._scan_done(""), self.error(message)))
        self.progress.setValue(0)
        self.progress.show()
        self.cancel_button.show()
        self.scan_worker.start()

    def ask_scan_videos(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Scan videos", str(self._last_dir()))
        if paths:
            self.scan([Path(p) for p in paths])

    def _scan_progress(self, name: str, index: int, count: int, frame: int, total: int, fps: float,
                       eta: float) -> None:
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(frame)
        left = "" if eta < 0 else f", {int(eta) // 60}:{int(eta) % 60:02d} left"
        self.progress.setFormat(f"file {index} of {count}: {name} %p%  {fps:.0f} frames/s{left}")
        self.progress.setToolTip(self.progress.format())

    def _scan_done(self, summary: str) -> None:
        self.progress.hide()
        self.cancel_button.hide()
        if summary:
            self.status_text.setText(f"scan finished: {summary}")
        self.versus = self.session.versus_reference() if self.session is not None else {}
        self.refresh_findings()

    def cancel_scan(self) -> None:
        if self.scan_worker is not None:
            self.scan_worker.cancel()

    def ask_report(self) -> None:
        if self.session is None:
            self.error("open a project first")
            return
        folder = QFileDialog.getExistingDirectory(self, "Export the report to", str(self.session.project))
        if folder:
            self.export_report(Path(folder))

    def export_report(self, folder: Path) -> None:
        """In the background, with the progress bar (thumbnails need a decoded frame each)."""
        if self.report_worker is not None and self.report_worker.isRunning():
            self.status_text.setText("a report is already being written")
            return
        self.report_worker = ReportWorker(self.session.project, folder, self.session.backbone)
        self.report_worker.progress.connect(self._report_progress)
        self.report_worker.done.connect(lambda path: (self.progress.hide(),
                                                      self.status_text.setText(f"report written: {path}")))
        self.report_worker.failed.connect(lambda message: (self.progress.hide(), self.error(message)))
        self.status_text.setText(f"writing the report to {folder}…")
        self.report_worker.start()

    def _report_progress(self, done: int, total: int) -> None:
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(done)
        self.progress.setFormat(f"report: {done} of {total} findings")
        self.progress.show()

    # dialogs ----------------------------------------------------------------------------------
    def error(self, message: str) -> None:
        """The CLI's one-line message, in a dialog that does not block the event loop."""
        self.last_error = message
        log.warning("%s", message)
        box = QMessageBox(QMessageBox.Icon.Warning, "inspector", message, QMessageBox.StandardButton.Ok, self)
        box.open()
        self._dialogs = [d for d in self._dialogs if d.isVisible()] + [box]

    def show_shortcuts(self) -> QDialog:
        dialog = QDialog(self)
        dialog.setWindowTitle("Keyboard shortcuts")
        table = QTableWidget(len(SHORTCUTS), 2)
        table.setHorizontalHeaderLabels(["key", "action"])
        for row, (key, what) in enumerate(SHORTCUTS):
            table.setItem(row, 0, QTableWidgetItem(key))
            table.setItem(row, 1, QTableWidgetItem(what))
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        table.verticalHeader().hide()
        table.setWordWrap(True)
        table.resizeRowsToContents()
        layout = QVBoxLayout(dialog)
        layout.addWidget(table)
        # As large as the list needs, never larger than the window: it scrolls inside instead of being cut off.
        wanted = table.horizontalHeader().length() + 60, table.verticalHeader().length() + 80
        cap = max(self.width() - 40, 320), max(self.height() - 40, 240)
        dialog.setMaximumSize(*cap)
        dialog.resize(min(max(wanted[0], 560), cap[0]), min(wanted[1], cap[1]))
        dialog.open()
        return dialog

    def closeEvent(self, event) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("state", self.saveState())
        self.timer.stop()
        for worker in (self.scan_worker, self.adapt_worker, self.anomaly_worker, self.report_worker):
            if worker is not None and worker.isRunning():
                if isinstance(worker, ScanWorker):
                    worker.cancel()
                worker.wait(10000)
        if self.live is not None:
            self.live.stop()
        if self.session is not None:
            self._record_waiting_reviews()
            self.session.close()
            self.session = None  # a worker's last signal, still queued, finds nothing to update
        super().closeEvent(event)

    def _record_waiting_reviews(self) -> None:
        """At close: decisions the background had no time for are recorded now (the next refit uses them)."""
        library = self.session.library()
        for decision in self.reviews_to_learn:
            try:
                library.record_review(*decision)
            except InspectorError as exc:
                log.warning("review of finding %d not learned: %s", decision[0], exc)
        self.reviews_to_learn = []

