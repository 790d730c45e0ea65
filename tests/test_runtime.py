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
import zipfile
from pathlib import Path

import psutil
import pytest
import tomllib

from studio import events, runtime_home
from studio.runtime import setup, state, torch_choice

ROOT = Path(__file__).resolve().parent.parent


def _names(requirements: list[str]) -> set[str]:
    return {state.normalise(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0]) for r in requirements}


def test_shipped_lock_pins_torch_and_every_runtime_package():
    pins = state.read_lock()
    assert pins["torch"] == torch_choice.TORCH_VERSION == "2.13.0"  # no local suffix: CPU or CUDA by index
    missing = [p for p in _names([*setup.ML_PACKAGES, *setup.CORE_PACKAGES]) if p not in pins]
    assert missing == [] and "cryptography" in pins  # pypdf[crypto]'s


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


@pytest.mark.parametrize("gpus, system, variant, requirement, extra", [
    (GPU, "Linux", "cuda", "torch==2.13.0", []),                      # PyPI's Linux wheel is CUDA
    (NO_GPU, "Linux", "cpu", "torch==2.13.0", ["--extra-index-url", torch_choice.CPU_INDEX]),
    # PyPI's Windows wheel is CPU: the CUDA build is pinned by its local version, from its own index
    # (no driver CUDA version known here: the build for the widest range of GPUs)
    (GPU, "Windows", "cuda", "torch==2.13.0+cu126", ["--extra-index-url", "https://download.pytorch.org/whl/cu126"]),
    (NO_GPU, "Windows", "cpu", "torch==2.13.0", []),
    (GPU, "Darwin", "cpu", "torch==2.13.0", []),
])
def test_choose_torch_by_machine(monkeypatch, gpus, system, variant, requirement, extra):
    monkeypatch.delenv("LORA_STUDIO_TORCH_VARIANT", raising=False)
    monkeypatch.delenv("LORA_STUDIO_TORCH_INDEX", raising=False)
    choice = torch_choice.choose_torch(gpus, system)
    assert (choice.variant, choice.requirement, choice.pip_args) == (variant, requirement, extra)


def _gpus(driver: str, cuda: str, *cards: tuple[str, tuple[int, int] | None]) -> dict:
    return {"gpus": [{"index": i, "name": name, "memory_total_mb": 24564, "compute_capability": cc}
                     for i, (name, cc) in enumerate(cards)], "driver": driver, "cuda_driver": cuda}


RTX4090, GTX1080, RTX5090, GTX780 = ("RTX 4090", (8, 9)), ("GTX 1080", (6, 1)), ("RTX 5090", (12, 0)), ("GTX 780", (3, 5))


@pytest.mark.parametrize("gpus, build", [
    (_gpus("560.94", "12.6", RTX4090), "cu126"),
    (_gpus("572.16", "12.8", RTX4090), "cu126"),   # torch 2.13 has no 12.8 build: the newest one the driver runs
    (_gpus("581.57", "13.0", RTX4090), "cu130"),
    (_gpus("591.44", "13.1", RTX4090), "cu130"),
    (_gpus("591.44", "13.1", GTX1080), "cu126"),   # CUDA 13 has no kernels for Pascal, whatever the driver
    (_gpus("581.57", "13.0", RTX5090), "cu130"),
    (_gpus("581.57", "13.0", ("unknown card", None)), "cu130"),
    (_gpus("591.44", "13.1", GTX1080, RTX5090), "cu126"),  # no build runs on both: the first GPU decides
])
def test_windows_cuda_build_follows_the_driver_and_the_gpus(gpus, build):
    chosen, why = torch_choice.torch_cuda_build(gpus)
    assert chosen.tag == build and gpus["driver"] in why


@pytest.mark.parametrize("gpus, words", [
    (_gpus("551.86", "12.4", RTX4090), ["driver 551.86 supports CUDA 12.4", "needs CUDA 12.6", "driver 560 or newer",
                                        "LORA_STUDIO_TORCH_VARIANT=cpu"]),
    (_gpus("572.16", "12.8", RTX5090), ["driver 572.16 supports CUDA 12.8", "RTX 5090 needs CUDA 13.0", "driver 580"]),
    (_gpus("591.44", "13.1", GTX780), ["GTX 780 (compute capability 3.5) is older", "LORA_STUDIO_TORCH_VARIANT=cpu"]),
])
def test_a_driver_or_gpu_too_old_is_refused_in_words(monkeypatch, gpus, words):
    monkeypatch.delenv("LORA_STUDIO_TORCH_VARIANT", raising=False)
    monkeypatch.delenv("LORA_STUDIO_TORCH_INDEX", raising=False)
    with pytest.raises(setup.RuntimeSetupError) as info:
        torch_choice.choose_torch(gpus, "Windows")
    for text in words:
        assert text in str(info.value)


def test_choose_torch_settings_override(monkeypatch):
    monkeypatch.setenv("LORA_STUDIO_TORCH_VARIANT", "cpu")
    monkeypatch.setenv("LORA_STUDIO_TORCH_INDEX", "https://mirror.example/whl/cpu")
    choice = torch_choice.choose_torch(GPU, "Linux")
    assert choice.variant == "cpu" and choice.pip_args == ["--extra-index-url", "https://mirror.example/whl/cpu"]
    monkeypatch.setenv("LORA_STUDIO_TORCH_VARIANT", "rocm")
    with pytest.raises(setup.RuntimeSetupError, match="LORA_STUDIO_TORCH_VARIANT"):
        torch_choice.choose_torch(GPU, "Linux")


def test_unreachable_default_index_is_dropped(monkeypatch):
    monkeypatch.delenv("LORA_STUDIO_TORCH_INDEX", raising=False)
    dead = torch_choice.TorchChoice("cpu", "torch==2.13.0", ["--extra-index-url", "http://127.0.0.1:9/whl/cpu"], "x")
    kept = setup.without_unreachable_index(dead)
    assert kept.pip_args == [] and "did not answer" in kept.reason


def _wheel(folder: Path, name: str, version: str, tag: str = "py3-none-any") -> Path:
    """A minimal wheel (PEP 427): one module, METADATA, WHEEL and RECORD, for the platform ``tag``."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}.py": f"VERSION = {version!r}\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    out = folder / f"{name}-{version}-{tag}.whl"
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
    first_marker = (root / runtime_home.MARKER).read_text()

    with pytest.raises(setup.RuntimeSetupError) as info:
        _setup(offline, root, ["studiodoesnotexist"]).run()
    message = str(info.value)
    assert "Installing the training libraries" in message and "could not find" in message
    assert str(root.parent / "setup.log") in message and info.value.step == "packages"
    log = (root.parent / "setup.log").read_text()
    assert "studiodoesnotexist" in log and "exit code 1" in log
    assert (root / runtime_home.MARKER).read_text() == first_marker  # a failed repair keeps the old marker

    with pytest.raises(setup.RuntimeSetupError, match="torch was installed but does not work"):
        _setup(offline, root, [], check=True).run()  # the probe runs for real: this venv has no torch

    (root / runtime_home.MARKER).unlink()  # as after an interrupted first setup
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



@pytest.mark.skipif(sys.platform == "win32", reason="sends itself SIGTERM")
def test_a_cancel_while_a_step_starts_still_ends_that_step(tmp_path, monkeypatch):
    """The signal lands inside Popen, after the fork (CI saw the step left sleeping): the step is ended anyway."""
    import signal

    started: list[subprocess.Popen] = []
    real_popen = subprocess.Popen

    def popen_then_cancel(argv, *args, **kwargs):
        if argv != ["sleep", "60"]:  # platform.platform() starts processes of its own
            return real_popen(argv, *args, **kwargs)
        started.append(real_popen(argv, *args, **kwargs))
        os.kill(os.getpid(), signal.SIGTERM)  # the window's Cancel, before Popen has returned
        time.sleep(0.2)  # the handler runs here, on the main thread, as it would inside Popen
        return started[-1]

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM,)}
    monkeypatch.setattr(setup.subprocess, "Popen", popen_then_cancel)
    job = setup.RuntimeSetup(root=tmp_path / "rt", log=tmp_path / "setup.log", packages=[], demo=False,
                             check=False, embedded=None, base_python=[sys.executable])
    monkeypatch.setattr(job, "steps", lambda: [setup.Step("venv", "Creating the Python environment",
                                                          ["sleep", "60"])])
    try:
        setup.cancel_on_stop_signal()
        with pytest.raises(state.RuntimeSetupError, match="cancelled at 'Creating the Python environment'"):
            job.run()
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert started and started[0].poll() is not None, "the step's process was left running"

# --- Windows: which wheel the setup's pip commands take, against a local PEP 503 index -----------------

WIN = "cp311-cp311-win_amd64"


@pytest.fixture(scope="module")
def local_index(tmp_path_factory):
    """PyPI and PyTorch's per-CUDA indexes in miniature, served on 127.0.0.1 (PEP 503 simple pages).

    "pypi" has the CPU torch for Windows, bitsandbytes 0.50.2 (the lock's) and a newer 0.51.0; "whl/cu126"
    and "whl/cu130" have the CUDA builds with their local versions; "whl/cu128" has none (torch 2.13 has no
    12.8 build). The wheels are small fakes with the real names.
    """
    import functools
    import http.server
    import threading
    import urllib.parse

    www = tmp_path_factory.mktemp("index")
    files = www / "files"
    files.mkdir()
    projects = {
        "pypi": [("torch", "2.13.0", WIN), ("torch", "2.13.0", "cp311-cp311-manylinux_2_28_x86_64"),
                 ("bitsandbytes", "0.50.2", "py3-none-win_amd64"), ("bitsandbytes", "0.50.2", "py3-none-manylinux_2_24_x86_64"),
                 ("bitsandbytes", "0.51.0", "py3-none-win_amd64")],
        "whl/cu126": [("torch", "2.13.0+cu126", WIN), ("torch", "2.13.0+cu126", "cp311-cp311-manylinux_2_28_x86_64")],
        "whl/cu130": [("torch", "2.13.0+cu130", WIN)],
        "whl/cu128": [("torch", "2.11.0+cu128", WIN)],
    }
    for index, wheels in projects.items():
        pages: dict[str, list[str]] = {}
        for name, version, tag in wheels:
            wheel = _wheel(files, name, version, tag)
            href = "/files/" + urllib.parse.quote(wheel.name)  # '+' travels as %2B, as on download.pytorch.org
            pages.setdefault(name, []).append(f'<a href="{href}">{wheel.name}</a><br>')
        for name, links in pages.items():
            page = www / index / ("simple" if index == "pypi" else "") / name
            page.mkdir(parents=True)
            (page / "index.html").write_text("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _download_as_windows(argv: list[str], index: str, dest: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The setup's `pip install ...` turned into `pip download` for Windows/CPython 3.11: what it would take.

    ``--isolated`` keeps this machine's pip configuration (find-links, extra indexes) out; the local
    "pypi" stands in for the configured index that the setup's --extra-index-url adds to.
    """
    pip_at = argv.index("install")
    cmd = [sys.executable, "-m", "pip", "--isolated", "download", *argv[pip_at + 1:], "--no-deps",
           "--only-binary=:all:", "--platform", "win_amd64", "--python-version", "3.11", "--implementation", "cp",
           "--abi", "cp311", "--index-url", f"{index}/pypi/simple", "--timeout", "5", "--retries", "0", "-d", str(dest)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    return out, sorted(p.name for p in dest.glob("*.whl")) if dest.exists() else []


def _windows_steps(monkeypatch, tmp_path, index: str, gpus: dict) -> dict[str, list[str]]:
    monkeypatch.delenv("LORA_STUDIO_TORCH_VARIANT", raising=False)
    monkeypatch.delenv("LORA_STUDIO_TORCH_INDEX", raising=False)
    monkeypatch.delenv("LORA_STUDIO_PIP_ARGS", raising=False)
    monkeypatch.setattr(torch_choice, "PYTORCH_INDEX", f"{index}/whl")
    runtime = setup.RuntimeSetup(root=tmp_path / "rt", lock=state.lock_path(), torch=torch_choice.choose_torch(gpus, "Windows"),
                                 packages=["bitsandbytes"], demo=False, check=False, base_python=["python"])
    return {step.key: step.argv for step in runtime.steps()}


@pytest.mark.parametrize("gpus, wheel", [
    (_gpus("560.94", "12.6", RTX4090), f"torch-2.13.0+cu126-{WIN}.whl"),
    (_gpus("572.16", "12.8", RTX4090), f"torch-2.13.0+cu126-{WIN}.whl"),
    (_gpus("581.57", "13.0", RTX4090), f"torch-2.13.0+cu130-{WIN}.whl"),
    (_gpus("591.44", "13.1", GTX1080), f"torch-2.13.0+cu126-{WIN}.whl"),
    (NO_GPU, f"torch-2.13.0-{WIN}.whl"),  # no NVIDIA GPU: PyPI's Windows wheel, the CPU build
])
def test_windows_setup_takes_the_torch_build_for_the_driver_from_a_local_index(monkeypatch, tmp_path, local_index,
                                                                                 gpus, wheel):
    steps = _windows_steps(monkeypatch, tmp_path, local_index, gpus)
    out, got = _download_as_windows(steps["torch"], local_index, tmp_path / "dl")
    assert out.returncode == 0, out.stdout + out.stderr
    assert got == [wheel]  # with the shipped lock as constraints: its torch==2.13.0 admits the +cuXXX build


def test_windows_setup_takes_bitsandbytes_windows_wheel_at_the_locked_version(monkeypatch, tmp_path, local_index):
    steps = _windows_steps(monkeypatch, tmp_path, local_index, _gpus("560.94", "12.6", RTX4090))
    out, got = _download_as_windows(steps["packages"], local_index, tmp_path / "dl")
    assert out.returncode == 0, out.stdout + out.stderr
    assert got == ["bitsandbytes-0.50.2-py3-none-win_amd64.whl"]  # the lock's, not the newer 0.51.0


def test_windows_cuda_index_down_fails_instead_of_installing_the_cpu_build(monkeypatch, tmp_path, local_index):
    """PyPI has torch 2.13.0 for Windows too (CPU only): a GPU machine must never end up with it silently."""
    steps = _windows_steps(monkeypatch, tmp_path, local_index, _gpus("560.94", "12.6", RTX4090))
    dead = [a.replace(f"{local_index}/whl", "http://127.0.0.1:9/whl") for a in steps["torch"]]
    out, got = _download_as_windows(dead, local_index, tmp_path / "dl")
    assert out.returncode != 0 and got == [] and "torch==2.13.0+cu126" in out.stderr
    words = setup._failure_words(setup.Step("torch", "Installing PyTorch", dead), 1, out.stderr, tmp_path / "x.log")
    assert "could not get torch==2.13.0+cu126, the CUDA build" in words and "http://127.0.0.1:9/whl/cu126" in words


def test_settings_keep_windows_paths_whole():
    """LORA_STUDIO_PIP_ARGS / LORA_STUDIO_BASE_PYTHON on Windows: backslashes are paths (found under Wine)."""
    text = r'--no-index --find-links D:\wheels\win --proxy "http://proxy:3128"'
    assert setup.split_setting(text, windows=True) == ["--no-index", "--find-links", r"D:\wheels\win", "--proxy",
                                                       "http://proxy:3128"]
    assert setup.split_setting(r'"C:\Program Files\Python311\python.exe" -X utf8', windows=True) == [
        r"C:\Program Files\Python311\python.exe", "-X", "utf8"]
    assert setup.split_setting("--find-links '/media/my wheels'", windows=False) == ["--find-links", "/media/my wheels"]


def test_embedded_python_becomes_a_venv_shaped_runtime(tmp_path):
    """The installer's Python has no venv module: the setup copies it and bootstraps pip from its wheel."""
    bundled = tmp_path / "app" / "python"
    bundled.mkdir(parents=True)
    for name in ("python.exe", "python311.dll", "python311.zip", "python311._pth", "_ssl.pyd"):
        (bundled / name).write_text(name)
    _wheel(bundled, "pip", "26.3")
    root = tmp_path / "data" / "runtime"
    runtime = setup.RuntimeSetup(root=root, lock=state.lock_path(), torch=None, packages=["numpy"], demo=False,
                                 check=False, embedded=bundled)
    steps = runtime.steps()
    assert [s.key for s in steps] == ["venv", "pip", "packages"]
    assert steps[0].argv[:4] == [str(bundled / "python.exe"), "-I", "-c", setup.EMBEDDED_VENV]
    wheel = str(bundled / "pip-26.3-py3-none-any.whl")
    assert steps[1].argv[1:4] == ["-m", "pip", "install"] and steps[1].argv[-1] == wheel
    assert steps[1].env["PYTHONPATH"] == wheel and "--no-index" in steps[1].argv  # from the shipped wheel, offline

    # the copy itself (plain Python, so it runs here too): a venv's layout, the ._pth left out
    subprocess.run([sys.executable, "-I", "-c", setup.EMBEDDED_VENV, str(bundled), str(root)], check=True,
                   capture_output=True)
    scripts = root / "Scripts"
    assert sorted(p.name for p in scripts.iterdir()) == ["_ssl.pyd", "python.exe", "python311.dll", "python311.zip"]
    assert (root / "Lib" / "site-packages").is_dir()
    assert (root / "pyvenv.cfg").read_text().splitlines()[0] == f"home = {scripts}"


def test_explicit_base_python_wins_over_the_bundled_one(monkeypatch, tmp_path):
    monkeypatch.setattr(setup, "bundled_python", lambda: tmp_path / "python")
    assert setup.RuntimeSetup(root=tmp_path / "rt", torch=None, packages=[]).embedded == tmp_path / "python"
    assert setup.RuntimeSetup(root=tmp_path / "rt", torch=None, packages=[], base_python=["py", "-3"]).embedded is None
    monkeypatch.setenv("LORA_STUDIO_BASE_PYTHON", "py -3.12")
    assert setup.RuntimeSetup(root=tmp_path / "rt", torch=None, packages=[]).embedded is None
