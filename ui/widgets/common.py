"""Small building blocks shared by the pages: page header, cards, banners, busy indicator."""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from studio.units import human_bytes, human_count  # noqa: F401  (the pages import them from here)

CONTENT_SPACING = 12  # between a page's rows; a widget that holds several of them spaces them alike


def label(text: str = "", role: str | None = None, wrap: bool = False) -> QLabel:
    w = QLabel(text)
    if role:
        w.setProperty("role", role)
    w.setWordWrap(wrap)
    w.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return w


def content_row(widget: QWidget) -> QHBoxLayout:
    """A row that fills ``widget`` edge to edge, its items spaced like a page's rows (CONTENT_SPACING)."""
    row = QHBoxLayout(widget)
    row.setContentsMargins(0, 0, 0, 0)
    row.setSpacing(CONTENT_SPACING)
    return row


def primary_button(text: str) -> QPushButton:
    b = QPushButton(text)
    b.setProperty("primary", True)
    b.setCursor(Qt.CursorShape.PointingHandCursor)
    return b


class Card(QFrame):
    """A bordered panel with an optional bold heading."""

    def __init__(self, heading: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("card")
        self.body = QVBoxLayout(self)
        self.body.setContentsMargins(14, 12, 14, 12)
        self.body.setSpacing(8)
        if heading:
            h = QLabel(heading)
            f = h.font()
            f.setBold(True)
            h.setFont(f)
            self.body.addWidget(h)


class Page(QWidget):
    """A page: title, one-line explanation, then the page's own content in ``self.content``."""

    title = ""
    subtitle = ""
    icon_name = ""

    def __init__(self, parent: QWidget | None = None, scroll: bool = False) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 18, 24, 18)
        outer.setSpacing(10)
        head = QVBoxLayout()
        head.setSpacing(2)
        head.addWidget(label(self.title, "title"))
        self.subtitle_label = label(self.subtitle, "subtitle", wrap=True)
        head.addWidget(self.subtitle_label)
        outer.addLayout(head)
        holder = QWidget()
        self.content = QVBoxLayout(holder)
        self.content.setContentsMargins(0, 6, 0, 0)
        self.content.setSpacing(CONTENT_SPACING)
        if scroll:
            area = QScrollArea()
            area.setWidgetResizable(True)
            area.setFrameShape(QFrame.Shape.NoFrame)
            area.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # Tab goes to the controls, not the scroller
            area.setWidget(holder)
            outer.addWidget(area, 1)
        else:
            outer.addWidget(holder, 1)
        # Below the (scrolling) content: a page's main action stays in view however long the page is.
        self.footer = QHBoxLayout()
        self.footer.setContentsMargins(0, 0, 0, 0)
        outer.addLayout(self.footer)

    def on_enter(self) -> None:
        """Called when the page becomes visible."""


class Banner(QFrame):
    """An error or warning strip: what happened, and what to do (the worker's hint)."""

    dismissed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("banner")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(12, 8, 8, 8)
        text = QVBoxLayout()
        self.headline = label("", wrap=True)
        f = self.headline.font()
        f.setBold(True)
        self.headline.setFont(f)
        self.detail = label("", wrap=True)
        text.addWidget(self.headline)
        text.addWidget(self.detail)
        lay.addLayout(text, 1)
        close = QPushButton("Dismiss")
        close.setFlat(True)
        close.clicked.connect(self.hide)
        close.clicked.connect(self.dismissed)
        lay.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, headline: str, detail: str = "") -> None:
        self.headline.setText(headline)
        self.detail.setText(detail)
        self.detail.setVisible(bool(detail))
        self.show()


class Busy(QProgressBar):
    """An indeterminate bar shown while something takes more than a moment."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setRange(0, 0)
        self.setTextVisible(False)
        self.setMaximumHeight(6)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.hide()

    def set_busy(self, busy: bool) -> None:
        self.setVisible(busy)
