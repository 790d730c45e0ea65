"""The installer's fast checks: the spec's inputs, the desktop entry, MIME types, icons and the entry
point. The bundle itself is built and run by ``make app-test`` (installer/app_test.py), not here."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from installer import bundle, desktop  # noqa: E402
from studio import __version__  # noqa: E402

ML = ("torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate")


def test_spec_compiles_and_keeps_the_ml_stack_out():
    compile((ROOT / "installer" / "lora-studio.spec").read_text(), "lora-studio.spec", "exec")
    assert set(ML) <= set(bundle.EXCLUDES)
    assert (ROOT / "installer" / "lora_studio_main.py").is_file()


def test_bundle_carries_resources_lock_and_worker_sources():
    pairs = {(Path(src).relative_to(ROOT).as_posix(), dest) for src, dest in bundle.datas_for(ROOT)}
    for needed in [("installer/runtime-lock.txt", "installer"), ("studio/runtime/state.py", "studio/runtime"),
                   ("workers/train.py", "workers"), ("resources/icons/lora-studio.svg", "resources/icons"),
                   ("resources/lora-studio.desktop", "resources")]:
        assert needed in pairs
    assert not any("__pycache__" in src for src, _ in pairs)


def test_desktop_entry_validates():
    tool = shutil.which("desktop-file-validate")
    if tool is None:
        pytest.skip("desktop-file-validate is not installed (Debian: desktop-file-utils)")
    out = subprocess.run([tool, str(ROOT / "resources" / "lora-studio.desktop")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_exec_line_quotes_paths_as_the_spec_says():
    entry = desktop.desktop_entry(["/opt/My Apps/lora-studio", "50%"])
    assert 'Exec="/opt/My Apps/lora-studio" 50%% --gui %f' in entry.splitlines()
    assert "TryExec=/opt/My Apps/lora-studio" in entry.splitlines()


def test_install_desktop_honours_xdg_data_home(tmp_path):
    home = tmp_path / "share"
    env = {**os.environ, "XDG_DATA_HOME": str(home)}
    out = subprocess.run([sys.executable, str(ROOT / "installer" / "desktop.py"), "--exec", "/opt/ls/lora-studio"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    entry = (home / "applications" / "lora-studio.desktop").read_text()
    assert "Exec=/opt/ls/lora-studio --gui %f" in entry and "MimeType=application/jsonl;text/csv;" in entry
    assert (home / "icons" / "hicolor" / "scalable" / "apps" / "lora-studio.svg").is_file()
    assert _png_size(home / "icons" / "hicolor" / "48x48" / "apps" / "lora-studio.png") == (48, 48)
    if shutil.which("desktop-file-validate"):
        check = subprocess.run(["desktop-file-validate", str(home / "applications" / "lora-studio.desktop")],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout
    if shutil.which("update-mime-database"):  # the cache the desktop reads: our globs made it in
        globs = (home / "mime" / "globs2").read_text()
        assert "application/jsonl:*.jsonl" in globs and "application/vnd.apache.parquet:*.parquet" in globs
    out = subprocess.run([sys.executable, str(ROOT / "installer" / "desktop.py"), "--uninstall"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and not (home / "applications" / "lora-studio.desktop").exists()


def test_mime_types_cover_the_dataset_files():
    ns = {"m": "http://www.freedesktop.org/standards/shared-mime-info"}
    tree = ET.parse(ROOT / "resources" / "mime" / "lora-studio.xml")
    globs = {t.get("type"): [g.get("pattern") for g in t.findall("m:glob", ns)] for t in tree.findall("m:mime-type", ns)}
    assert "*.jsonl" in globs["application/jsonl"] and "*.parquet" in globs["application/vnd.apache.parquet"]
    declared = next(line for line in (ROOT / "resources" / "lora-studio.desktop").read_text().splitlines()
                    if line.startswith("MimeType="))
    assert set(globs) <= set(declared.removeprefix("MimeType=").strip(";").split(";"))


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.parametrize("size", desktop.PNG_SIZES)
def test_icon_sizes_are_real_pngs(size):
    assert _png_size(ROOT / "resources" / "icons" / f"lora-studio-{size}.png") == (size, size)


@pytest.mark.platform
def test_entry_point_routes_arguments_to_the_cli():
    out = subprocess.run([sys.executable, str(ROOT / "installer" / "lora_studio_main.py"), "--version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"lora-studio {__version__}"


@pytest.mark.platform
def test_smoke_test_opens_the_real_window_offscreen(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "LORA_STUDIO_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, str(ROOT / "installer" / "lora_studio_main.py"), "--smoke-test"],
                         capture_output=True, text=True, timeout=120, env=env)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0 and report["ok"], (report, out.stderr[-2000:])
    assert report["title"].startswith("LoRA Studio") and report["version"] == __version__
    assert report["frozen"] is False and report["runtime"] == "missing" and report["needs_setup"] is False


@pytest.mark.platform
def test_a_worker_started_without_a_runtime_fails_in_the_protocol():
    from studio import events

    out = subprocess.run([sys.executable, str(ROOT / "installer" / "lora_studio_main.py"), "-m", "workers.train", "RUN"],
                         capture_output=True, timeout=60)
    got = events.EventReader().feed(out.stdout)
    assert out.returncode == 2 and [e.type for e in got] == [events.ERROR]
    assert "needs the ML runtime" in got[0].data["message"] and "Set up the ML runtime" in got[0].data["hint"]


# --- Windows installer (installer/windows): its inputs, compiled against a stand-in bundle -------------------

NSI = ROOT / "installer" / "windows" / "lora-studio.nsi"
BUILD_SH = ROOT / "installer" / "windows" / "build.sh"


def _nsi_code() -> list[str]:
    """The script's instructions, comments left out (they may name what the script does not do)."""
    return [line.split(";", 1)[0] if not line.lstrip().startswith(";") else "" for line in NSI.read_text().splitlines()]


def test_installer_version_is_the_apps():
    import tomllib

    out = subprocess.run(["bash", str(BUILD_SH), "--print-version"], capture_output=True, text=True, timeout=60)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert out.returncode == 0 and out.stdout.strip() == version == __version__
    assert all(part.isdigit() for part in version.split(".")) and len(version.split(".")) == 3  # VIProductVersion


def test_windows_installer_compiles_from_a_stand_in_bundle(tmp_path):
    """Every file the script names exists (icon, includes) and it compiles: a 64-bit installer, in seconds."""
    makensis = shutil.which("makensis")
    if makensis is None:
        pytest.skip("makensis is not installed (Debian: apt install nsis)")
    dist = tmp_path / "lora-studio"
    for rel in ("lora-studio.exe", "lora-studio-cli.exe", "_internal/studio/__init__.py", "python/python.exe",
                "python/pip-26.3-py3-none-any.whl"):
        (dist / rel).parent.mkdir(parents=True, exist_ok=True)
        (dist / rel).write_bytes(b"stand-in")
    setup = tmp_path / "LoRA-Studio-Setup.exe"
    out = subprocess.run([makensis, "-V2", "-NOCD", f"-DVERSION={__version__}", f"-DDIST={dist}", f"-DREPO={ROOT}",
                          f"-DOUTFILE={setup}", str(NSI)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    head = setup.read_bytes()[:4096]
    pe = struct.unpack_from("<I", head, 0x3C)[0]
    assert head[:2] == b"MZ" and head[pe:pe + 4] == b"PE\0\0" and struct.unpack_from("<H", head, pe + 4)[0] == 0x8664


def test_windows_installer_runs_no_script_and_downloads_nothing():
    code = "\n".join(_nsi_code()).lower()
    for word in ("powershell", "cmd.exe", "cmd /c", ".bat", ".cmd", ".ps1", ".vbs", "wscript", "cscript", "mshta",
                 "execwait", "nsexec", "execshell", "inetc", "nsisdl", "urldownload"):
        assert word not in code, word
    assert "requestexecutionlevel user" in code and 'installdir "$localappdata\\programs\\${app}"' in code


def test_uninstaller_knows_the_apps_data_folder(monkeypatch):
    """The folder the uninstaller keeps (or deletes when ticked) is platformdirs' on Windows (studio/paths.py)."""
    import platformdirs.windows as pw

    from studio import paths

    monkeypatch.setattr(pw, "get_win_folder", lambda csidl: {"CSIDL_LOCAL_APPDATA": r"C:\LOCALAPPDATA"}.get(csidl, "?"))
    expected = pw.Windows(appname=paths.APP_NAME, appauthor=False).user_data_dir.replace("/", "\\")  # joined on Linux
    assert expected == rf"C:\LOCALAPPDATA\{paths.APP_NAME}"
    assert f'!define DATA_DIR "$LOCALAPPDATA\\{paths.APP_NAME}"' in NSI.read_text()


def test_windows_installer_offers_the_dataset_types_and_leaves_csv_alone():
    import re

    claims = dict(re.findall(r"!insertmacro OPEN_WITH \"(\.\w+)\" ([01])", "\n".join(_nsi_code())))
    assert claims == {".jsonl": "1", ".parquet": "1", ".csv": "0"}  # default program only where unclaimed
    removed = set(re.findall(r"!insertmacro UN_OPEN_WITH \"(\.\w+)\"", NSI.read_text()))
    assert removed == set(claims)
