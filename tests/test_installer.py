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
