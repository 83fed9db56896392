"""The window's own widgets: the frame with its regions, the findings timeline, the findings table."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PyQt6.QtCore import QAbstractTableModel, QModelIndex, QPointF, QRectF, QSize, Qt, pyqtSignal
from PyQt6.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QPaintEvent, QPen
from PyQt6.QtWidgets import QSizePolicy, QWidget

from inspector.regions import CropSpec
from inspector.report import PALETTE, clock
from inspector.status import Review
from inspector.store import FindingRecord


def colour_for(name: str, names: list[str]) -> QColor:
    ordered = sorted(set(names) | {name})
    return QColor(PALETTE[ordered.index(name) % len(PALETTE)])


class FrameView(QWidget):
    """The current frame scaled to fit, each region outlined with its live class and score;
    the selected region (for labelling) is drawn thicker, labelled regions carry their label.
    Dragging draws a box (in frame pixels) that the next label applies to instead of a region."""

    regionClicked = pyqtSignal(str)
    boxDrawn = pyqtSignal(tuple)

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumSize(320, 180)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self._image: QImage | None = None
        self._specs: list[CropSpec] = []
        self._live: dict[str, tuple[str, float, bool]] = {}
        self._labels: dict[str, str] = {}
        self.selected: str | None = None
        self.box: tuple[int, int, int, int] | None = None  # drawn box in frame pixels
        self._drag_from = None
        self._drag_to = None

    def sizeHint(self) -> QSize:
        return QSize(960, 540)

    def show_frame(self, image_bgr: np.ndarray, specs: list[CropSpec]) -> None:
        rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
        height, width = rgb.shape[:2]
        self._image = QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
        self._specs = specs
        if self.selected not in {s.name for s in specs}:
            self.selected = specs[0].name if specs else None
        self.update()

    def set_live(self, results: list[tuple[str, str, float, bool]]) -> None:
        self._live = {crop: (cls, score, fault) for crop, cls, score, fault in results}
        self.update()

    def set_labels(self, labels: dict[str, str]) -> None:
        self._labels = labels
        self.update()

    def _target(self) -> QRectF:
        if self._image is None:
            return QRectF()
        scale = min(self.width() / self._image.width(), self.height() / self._image.height())
        w, h = self._image.width() * scale, self._image.height() * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def _to_frame(self, point, target: QRectF) -> tuple[int, int]:
        x = (point.x() - target.x()) / target.width() * self._image.width()
        y = (point.y() - target.y()) / target.height() * self._image.height()
        return (round(min(max(x, 0), self._image.width())), round(min(max(y, 0), self._image.height())))

    def _to_view(self, box: tuple[int, int, int, int], target: QRectF) -> QRectF:
        x0, y0, x1, y1 = box
        sx, sy = target.width() / self._image.width(), target.height() / self._image.height()
        return QRectF(target.x() + x0 * sx, target.y() + y0 * sy, (x1 - x0) * sx, (y1 - y0) * sy)

    def clear_box(self) -> None:
        self.box = None
        self.update()

    def _box(self, spec: CropSpec, target: QRectF) -> QRectF:
        x0, y0, x1, y1 = spec.box
        return QRectF(target.x() + x0 * target.width(), target.y() + y0 * target.height(),
                      (x1 - x0) * target.width(), (y1 - y0) * target.height())

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#202124"))
        if self._image is None:
            painter.setPen(QColor("#bbbbbb"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter,
                             "Open a video or a project (File menu, Ctrl+O) or drop one here")
            return
        target = self._target()
        painter.drawImage(target, self._image)
        font = QFont()
        font.setPointSize(9)
        painter.setFont(font)
        for spec in self._specs:
            box = self._box(spec, target)
            cls, score, fault = self._live.get(spec.name, ("", 0.0, False))
            colour = QColor("#ff3b30") if fault else QColor("#34c759") if cls else QColor("#c7c7cc")
            if spec.name == self.selected:  # stands out: a yellow halo outside the class colour
                painter.setPen(QPen(QColor("#ffd60a"), 6))
                painter.drawRect(box.adjusted(-4, -4, 4, 4))
            painter.setPen(QPen(colour, 3 if spec.name == self.selected else 1.5))
            painter.drawRect(box)
            text = f"{spec.name}: {cls} {score:.2f}" if cls else spec.name
            if spec.name in self._labels:
                text += f"  [label: {self._labels[spec.name]}]"
            metrics = painter.fontMetrics()
            back = QRectF(box.x(), box.y(), metrics.horizontalAdvance(text) + 8, metrics.height() + 4)
            painter.fillRect(back, QColor(0, 0, 0, 170))
            painter.setPen(QColor("white"))
            painter.drawText(back.adjusted(4, 2, 0, 0), text)
        drawn = self.box
        if self._drag_from is not None and self._drag_to is not None:
            drawn = (*map(min, self._drag_from, self._drag_to), *map(max, self._drag_from, self._drag_to))
        if drawn is not None:
            painter.setPen(QPen(QColor("#ffd60a"), 3, Qt.PenStyle.DashLine))
            painter.drawRect(self._to_view(drawn, target))
            key = f"box {' '.join(map(str, drawn))}"
            if key in self._labels:
                painter.drawText(self._to_view(drawn, target).bottomLeft() + QPointF(4, 14), self._labels[key])

    def mousePressEvent(self, event: QMouseEvent) -> None:
        if self._image is not None:
            self._drag_from = self._to_frame(event.position(), self._target())
            self._drag_to = None

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag_from is not None and self._image is not None:
            self._drag_to = self._to_frame(event.position(), self._target())
            self.update()

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        """A drag of a few pixels or more draws a box; a click selects the region under it."""
        if self._drag_from is None or self._image is None:
            return
        start, end = self._drag_from, self._to_frame(event.position(), self._target())
        self._drag_from = self._drag_to = None
        if abs(end[0] - start[0]) >= 8 and abs(end[1] - start[1]) >= 8:
            self.box = (min(start[0], end[0]), min(start[1], end[1]), max(start[0], end[0]), max(start[1], end[1]))
            self.boxDrawn.emit(self.box)
            self.update()
            return
        target = self._target()
        for spec in self._specs:
            if self._box(spec, target).contains(event.position()):
                self.selected = spec.name
                self.box = None
                self.regionClicked.emit(spec.name)
                self.update()
                return

    def select_next(self) -> str | None:
        self.box = None
        names = [s.name for s in self._specs]
        if names:
            self.selected = names[(names.index(self.selected) + 1) % len(names)] if self.selected in names else names[0]
            self.update()
        return self.selected


class Timeline(QWidget):
    """Findings of the open video along its length, one lane per fault type; a click jumps there."""

    seek = pyqtSignal(int)

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumHeight(70)
        self._findings: list[FindingRecord] = []
        self._frames = 1
        self._position = 0
        self.current: int | None = None  # the finding under review, outlined

    def set_findings(self, findings: list[FindingRecord], frame_count: int) -> None:
        self._findings = findings
        self._frames = max(frame_count, 1)
        self.update()

    def set_position(self, frame: int) -> None:
        self._position = frame
        self.update()

    def paintEvent(self, event: QPaintEvent) -> None:
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#2b2c2f"))
        classes = sorted({f.class_name for f in self._findings})
        lane = (self.height() - 8) / max(len(classes), 1)
        names = [f.class_name for f in self._findings]
        for row, name in enumerate(classes):
            y = 4 + row * lane
            for f in (f for f in self._findings if f.class_name == name):
                x0 = f.start_frame / self._frames * self.width()
                x1 = (f.end_frame + 1) / self._frames * self.width()
                colour = colour_for(name, names)
                box = QRectF(x0, y, max(x1 - x0, 2), lane - 2)
                if f.status == Review.REJECTED:  # faded and struck through
                    colour.setAlpha(60)
                    painter.fillRect(box, colour)
                    painter.setPen(QPen(QColor("#bbbbbb"), 1))
                    painter.drawLine(box.bottomLeft(), box.topRight())
                elif f.status == Review.CONFIRMED:  # solid with a white frame
                    painter.fillRect(box, colour)
                    painter.setPen(QPen(QColor("white"), 1.5))
                    painter.drawRect(box.adjusted(0.5, 0.5, -0.5, -0.5))
                else:  # open: lighter, still to be reviewed
                    colour.setAlpha(170)
                    painter.fillRect(box, colour)
                if f.id == self.current:
                    painter.setPen(QPen(QColor("#ffd33d"), 2.5))
                    painter.drawRect(box.adjusted(-1, -1, 1, 1))
            width = painter.fontMetrics().horizontalAdvance(name) + 8
            painter.fillRect(QRectF(2, y + 1, width, lane - 4), QColor(0, 0, 0, 150))
            painter.setPen(QColor("#eeeeee"))
            painter.drawText(QRectF(6, y, width, lane), Qt.AlignmentFlag.AlignVCenter, name)
        x = self._position / self._frames * self.width()
        painter.setPen(QPen(QColor("white"), 2))
        painter.drawLine(int(x), 0, int(x), self.height())

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.seek.emit(int(event.position().x() / max(self.width(), 1) * self._frames))


class FindingsModel(QAbstractTableModel):
    COLUMNS = ("time", "region", "class", "score", "frames", "status", "vs reference")

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[FindingRecord] = []
        self.fps = 25.0
        self.versus: dict[int, str] = {}

    def set_rows(self, rows: list[FindingRecord], fps: float, versus: dict[int, str] | None = None) -> None:
        """``versus``: finding id -> 'new' or 'persisting' against its line's reference run."""
        self.beginResetModel()
        self.rows, self.fps, self.versus = rows, fps, versus or {}
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | None = None) -> int:
        return len(self.rows)

    def columnCount(self, parent: QModelIndex | None = None) -> int:
        return len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        f = self.rows[index.row()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            name = f.class_name if not f.reviewed_class else f"{f.class_name} → {f.reviewed_class}"
            return (clock(f.start_frame / self.fps), f.crop, name, f"{f.best_score:.2f}", str(f.frames),
                    f.status, self.versus.get(f.id, ""))[index.column()]
        if role == Qt.ItemDataRole.ForegroundRole and index.column() == 6 and self.versus.get(f.id) == "new":
            return QColor("#d62728")
        if role == Qt.ItemDataRole.ForegroundRole:
            if f.status == Review.REJECTED:
                return QColor("#888888")
            if index.column() == 5:
                return QColor({Review.CONFIRMED: "#1a7f37"}.get(f.status, "#9a6700"))
        if role == Qt.ItemDataRole.FontRole and f.status == Review.REJECTED:
            font = QFont()
            font.setStrikeOut(True)
            return font
        return None


def crop_image(image_bgr: np.ndarray, spec: CropSpec,
               paint: Callable[[np.ndarray], np.ndarray | None] | None = None) -> QImage:
    """A region of a frame at its own resolution, for the reviewer's zoom; ``paint`` may draw on
    the crop (an anomaly's heatmap) or return None to leave it as it is."""
    height, width = image_bgr.shape[:2]
    x0, y0, x1, y1 = spec.pixel_box(width, height)
    crop = image_bgr[y0:y1, x0:x1]
    painted = paint(crop) if paint is not None else None
    rgb = np.ascontiguousarray((crop if painted is None else painted)[..., ::-1])
    return QImage(rgb.data, rgb.shape[1], rgb.shape[0], 3 * rgb.shape[1], QImage.Format.Format_RGB888).copy()
