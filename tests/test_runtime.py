"""The managed ML runtime: lock, torch build choice, and a real setup into a fresh venv (offline).

The real setup installs a small wheel made here from a local folder (``--no-index``), so it runs
the same steps as a user's first run (venv, pip with the lock as constraints, log, marker)
without the network and without a multi-GB torch download.
"""
from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import psutil
import pytest

from studio import events
from studio.runtime import setup, state

ROOT = Path(__file__).resolve().parent.parent


def _names(requirements: list[str]) -> set[str]:
    return {state.normalise(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in requirements}


def test_shipped_lock_pins_torch_and_every_runtime_package():
    pins = state.read_lock()
    assert pins["torch"] == setup.TORCH_VERSION == "2.13.0"  # no local suffix: CPU or CUDA by index
    missing = [p for p in (*setup.ML_PACKAGES, *setup.CORE_PACKAGES) if state.normalise(p) not in pins]
    assert missing == []


def test_runtime_packages_follow_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["optional-dependencies"]["ml"]) | _names(project["dependencies"])
    assert wanted - {"torch"} == _names([*setup.ML_PACKAGES, *setup.CORE_PACKAGES])


def test_read_lock_names_the_bad_line(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# pins\nnumpy==2.0\n\ntorch>=2\n")
    with pytest.raises(ValueError, match=r"line 4: expected 'name==version'"):
        state.read_lock(lock)


GPU = {"gpus": [{"index": 0, "name": "NVIDIA GeForce RTX 4090", "memory_total_mb": 24564}]}
NO_GPU = {"gpus": []}


@pytest.mark.parametrize("gpus, system, variant, extra", [
    (GPU, "Linux", "cuda", []),                                       # PyPI's Linux wheel is CUDA
    (NO_GPU, "Linux", "cpu", ["--extra-index-url", setup.CPU_INDEX]),
    (GPU, "Windows", "cuda", ["--extra-index-url", setup.WINDOWS_CUDA_INDEX]),
    (NO_GPU, "Windows", "cpu", []),                                   # PyPI's Windows wheel is CPU
    (GPU, "Darwin", "cpu", []),
])
def test_choose_torch_by_machine(monkeypatch, gpus, system, variant, extra):
    monkeypatch.delenv("LORA_STUDIO_TORCH_VARIANT", raising=False)
    monkeypatch.delenv("LORA_STUDIO_TORCH_INDEX", raising=False)
    choice = setup.choose_torch(gpus, system)
    assert (choice.variant, choice.requirement, choice.pip_args) == (variant, "torch==2.13.0", extra)


def test_choose_torch_settings_override(monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_TORCH_VARIANT", "cpu")
    monkeypatch.setenv("LORA_STUDIO_TORCH_INDEX", "https://mirror.example/whl/cpu")
    choice = setup.choose_torch(GPU, "Linux")
    assert choice.variant == "cpu" and choice.pip_args == ["--extra-index-url", "https://mirror.example/whl/cpu"]
    monkeypatch.setenv("LORA_STUDIO_TORCH_VARIANT", "rocm")
    with pytest.raises(setup.RuntimeSetupError, match="LORA_STUDIO_TORCH_VARIANT"):
        setup.choose_torch(GPU, "Linux")


def test_unreachable_default_index_is_dropped(monkeypatch):
    monkeypatch.delenv("LORA_STUDIO_TORCH_INDEX", raising=False)
    dead = setup.TorchChoice("cpu", "torch==2.13.0", ["--extra-index-url", "http://127.0.0.1:9/whl/cpu"], "x")
    kept = setup.without_unreachable_index(dead)
    assert kept.pip_args == [] and "did not answer" in kept.reason


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel (PEP 427): one module, METADATA, WHEEL and RECORD."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}.py": f"VERSION = {version!r}\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    out = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return out


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """A wheelhouse with two versions of a small package and a lock that pins the older one."""
    base = tmp_path_factory.mktemp("offline")
    house = base / "wheels"
    house.mkdir()
    _wheel(house, "studiotinypkg", "1.0")
    _wheel(house, "studiotinypkg", "2.0")
    lock = base / "lock.txt"
    lock.write_text("studiotinypkg==1.0\n")
    return {"house": house, "lock": lock}


def _setup(offline, root: Path, packages: list[str], check: bool = False) -> setup.RuntimeSetup:
    return setup.RuntimeSetup(root=root, lock=offline["lock"], torch=None, packages=packages, demo=False,
                                check=check, pip_args=["--no-index", "--find-links", str(offline["house"])],
                                log=root.parent / "setup.log")


def test_real_setup_installs_the_pinned_version_then_reports_a_failure_in_words(offline):
    root = state.runtime_dir()  # inside this test's LORA_STUDIO_HOME
    assert state.status()["state"] == "missing" and state.runtime_python() is None
    seen: list[tuple[int, int, str]] = []
    python = _setup(offline, root, ["studiotinypkg"]).run(progress=lambda *a: seen.append(a))

    assert python == state.runtime_python() and python.is_file()
    assert [s[2] for s in seen] == ["Creating the Python environment", "Installing the training libraries",
                                    "The ML runtime is ready"]
    version = subprocess.run([str(python), "-c", "import studiotinypkg; print(studiotinypkg.VERSION)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == "1.0"  # the lock, not the newest wheel
    assert state.status()["state"] == "outdated"  # made from a lock other than the shipped one
    first_marker = (root / state.MARKER).read_text()

    with pytest.raises(setup.RuntimeSetupError) as info:
        _setup(offline, root, ["studiodoesnotexist"]).run()
    message = str(info.value)
    assert "Installing the training libraries" in message and "could not find" in message
    assert str(root.parent / "setup.log") in message and info.value.step == "packages"
    log = (root.parent / "setup.log").read_text()
    assert "studiodoesnotexist" in log and "exit code 1" in log
    assert (root / state.MARKER).read_text() == first_marker  # a failed repair keeps the old marker

    with pytest.raises(setup.RuntimeSetupError, match="torch was installed but does not work"):
        _setup(offline, root, [], check=True).run()  # the probe runs for real: this venv has no torch

    (root / state.MARKER).unlink()  # as after an interrupted first setup
    assert state.status()["state"] == "incomplete" and state.runtime_python() is None


def test_missing_base_python_is_reported_with_the_setting_to_change(tmp_path):
    broken = setup.RuntimeSetup(root=tmp_path / "rt", lock=state.lock_path(), torch=None, packages=[],
                                demo=False, check=False, base_python=[str(tmp_path / "no-python")],
                                log=tmp_path / "setup.log")
    with pytest.raises(setup.RuntimeSetupError, match="could not start .*no-python.*The log is"):
        broken.run()


def test_cli_setup_events_carry_the_error_for_the_gui(tmp_path):
    env = {**os.environ, "LORA_STUDIO_HOME": str(tmp_path), "LORA_STUDIO_BASE_PYTHON": str(tmp_path / "nope"),
           "LORA_STUDIO_TORCH_INDEX": "http://127.0.0.1:9/", "PYTHONPATH": str(ROOT)}
    env.pop("LORA_STUDIO_PYTHON", None)
    out = subprocess.run(setup.setup_command("--events"), capture_output=True, env=env, timeout=60)
    reader = events.EventReader()
    got = reader.feed(out.stdout) + reader.close()
    assert out.returncode == 1 and reader.malformed == 0
    assert got[-1].type == events.ERROR and "LORA_STUDIO_BASE_PYTHON" in got[-1].data["message"]
    assert got[-1].data["log"] == str(tmp_path / "logs" / "runtime-setup.log")


def test_needs_setup_is_false_when_this_interpreter_has_torch(monkeypatch):
    monkeypatch.delenv("LORA_STUDIO_PYTHON", raising=False)
    assert state.current_python_has_ml() is True  # the dev venv has the ML extra
    assert state.needs_setup() is False


def _failing_setup(tmp_path) -> setup.RuntimeSetup:
    return setup.RuntimeSetup(root=tmp_path / "runtime", lock=state.lock_path(), torch=None, packages=[],
                                demo=False, check=False, base_python=[str(tmp_path / "no-python")],
                                log=tmp_path / "setup.log")


def test_one_setup_at_a_time_and_a_stale_lock_is_taken_over(tmp_path):
    lock = tmp_path / "runtime.setup-lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(str(holder.pid))
        with pytest.raises(setup.RuntimeSetupError, match=f"another setup .* running \\(process {holder.pid}\\)"):
            _failing_setup(tmp_path).run()
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(setup.RuntimeSetupError, match="could not start"):  # the dead holder's lock is taken
        _failing_setup(tmp_path).run()
    assert not lock.exists()


def test_cancel_stops_the_running_step_and_says_so(tmp_path):
    pidfile = tmp_path / "step.pid"
    fake = tmp_path / "python3"  # answers the version check, then hangs in 'python -m venv'
    fake.write_text(f'#!/bin/sh\nif [ "$1" = "-c" ]; then exec {sys.executable} "$@"; fi\n'
                    f'echo $$ > {pidfile}\nexec sleep 60\n')
    fake.chmod(0o755)
    env = {**os.environ, "LORA_STUDIO_HOME": str(tmp_path), "LORA_STUDIO_BASE_PYTHON": str(fake),
           "LORA_STUDIO_TORCH_INDEX": "http://127.0.0.1:9/", "PYTHONPATH": str(ROOT)}
    env.pop("LORA_STUDIO_PYTHON", None)
    proc = subprocess.Popen(setup.setup_command("--events"), stdout=subprocess.PIPE, env=env)
    reader = events.EventReader()
    got = reader.feed(proc.stdout.readline())
    assert got[0].type == events.PROGRESS and got[0].data["label"] == "Creating the Python environment"
    deadline = time.monotonic() + 30
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.terminate()  # what the window's Cancel does
    got = reader.feed(proc.stdout.read()) + reader.close()
    assert proc.wait(timeout=30) == 1
    assert got[-1].type == events.ERROR and "cancelled at 'Creating the Python environment'" in got[-1].data["message"]
    step_pid = int(pidfile.read_text())
    assert not psutil.pid_exists(step_pid) or psutil.Process(step_pid).status() == psutil.STATUS_ZOMBIE
