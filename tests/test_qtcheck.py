"""`lora-studio` on a Linux system missing xcb libraries: the libraries and the apt-get line, not Qt's abort."""
from __future__ import annotations

import lora_studio
from lora_studio import qtcheck

LDD = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f1)
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f2)
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
\tlibweird.so.3 => not found
"""


def test_missing_libraries_and_the_apt_line():
    missing = qtcheck.missing_libraries(LDD)
    assert missing == ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libweird.so.3"]
    text = qtcheck.report(missing)
    assert "sudo apt-get install -y libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1\n" in text
    assert "apt-file search" in text and "libweird.so.3" in text


def test_launcher_prints_the_fix_instead_of_opening_qt(monkeypatch, capsys):
    monkeypatch.setattr(qtcheck, "run_ldd", lambda path: LDD)
    monkeypatch.setattr(qtcheck.sys, "platform", "linux")
    monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
    monkeypatch.setattr(qtcheck, "xcb_plugin", lambda: qtcheck.Path("/fake/libqxcb.so"))
    assert lora_studio.main(["gui"]) == 1
    err = capsys.readouterr().err
    assert "libxcb-cursor.so.0" in err and "sudo apt-get install -y libxcb-cursor0" in err


def test_no_report_when_nothing_is_missing_or_xcb_is_not_used(monkeypatch):
    monkeypatch.setattr(qtcheck.sys, "platform", "linux")
    monkeypatch.setattr(qtcheck, "xcb_plugin", lambda: qtcheck.Path("/fake/libqxcb.so"))
    assert qtcheck.check({"QT_QPA_PLATFORM": "xcb"}, ldd=lambda p: "\tlibxcb.so.1 => /lib/libxcb.so.1\n") is None
    assert qtcheck.check({"QT_QPA_PLATFORM": "offscreen"}, ldd=lambda p: LDD) is None
    assert qtcheck.check({"WAYLAND_DISPLAY": "wayland-0", "XDG_SESSION_TYPE": "wayland"}, ldd=lambda p: LDD) is None
    assert qtcheck.check({"DISPLAY": ":0"}, ldd=lambda p: LDD) is not None
