#!/usr/bin/env python3
"""Install the Windows installer under Wine on a fresh prefix and check what a user gets; then uninstall.

    python3 installer/windows/check_installer.py dist/windows/LoRA-Studio-0.1.0-Setup.exe
    python3 installer/windows/check_installer.py SETUP.exe --runtime-wheels DIR   # + a first-run runtime setup

A fresh Wine prefix stands in for a new Windows account with no Python: the installer runs silently
(/S), then the files, the registry (Settings > Apps entry, "Open with" for the dataset types, a .csv
owner that must keep .csv), the Start-menu shortcut, the installed programs (--version, the window's
smoke test, the doctor's data folder), an update over the installed copy, an update refused while the
app runs, the silent uninstall (the user's runs survive it), and a second cycle with /REMOVEDATA.
With --runtime-wheels (a folder of the lock's Windows wheels, e.g. WINROOT/wheels from wine-setup.sh)
the installed app also sets up its ML runtime from its own bundled Python, offline, as on a first run.

Prints one line per check and `N passed, N failed`; exits 1 on any failure. Not part of `make test`
(minutes). Needs wine (Debian 12: wine64) and the shim DLLs that installer/windows/wine-setup.sh builds
for Wine 8's gaps (WINROOT/shim): they stand in for what a real Windows has.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]
APP = "LoRA Studio"
UNINST_KEY = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Uninstall\LoRAStudio"
PROGID = "LoRAStudio.Dataset"
SHIMS = ("ucrtwine.dll", "ucrtbase.dll", "icuuc.dll", "bcryptprimitives.dll")
SCRIPTS = (".bat", ".cmd", ".ps1", ".psm1", ".vbs", ".vbe", ".js", ".jse", ".wsf", ".wsh", ".hta")


class Checks:
    def __init__(self) -> None:
        self.passed = self.failed = 0

    def __call__(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"PASS {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}" + (f": {detail.strip()[-1500:]}" if detail else ""), flush=True)
        return ok


class Wine:
    """One throw-away prefix: a new Windows account with nothing installed."""

    def __init__(self, prefix: Path, shims: Path) -> None:
        self.prefix = prefix
        self.env = {**os.environ, "WINEPREFIX": str(prefix), "WINEDEBUG": "-all",
                    # the ucrtbase shim; no winemenubuilder, so the Linux desktop gets no menu entries
                    "WINEDLLOVERRIDES": "ucrtbase=n,b;winemenubuilder.exe=d"}
        # Nothing of this Linux machine's Python or pip set-up leaks in (Wine passes the environment on).
        for var in [v for v in self.env if v.startswith(("PIP_", "LORA_STUDIO_", "PYTHON", "VIRTUAL_ENV"))]:
            self.env.pop(var, None)
        shutil.rmtree(prefix, ignore_errors=True)
        prefix.mkdir(parents=True)
        # One persistent wineserver, started first and detached: one that a `wine` call starts inherits
        # that call's output pipe, and reading the output would wait for the server to exit.
        subprocess.Popen(["wineserver", "-p", "900"], env=self.env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(1)
        subprocess.run(["wineboot", "-i"], env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=300)
        self.run(["winecfg", "/v", "win10"], timeout=120)  # a new prefix says Windows 7; Qt 6 and the installer need 10
        system32 = prefix / "drive_c" / "windows" / "system32"
        for name in SHIMS:
            shutil.copy2(shims / name, system32 / name)
        self.reg("add", r"HKCU\Environment", "/v", "QT_QPA_PLATFORM", "/d", "offscreen", "/f")  # Wine drops QT_*
        self.reg("add", r"HKCU\Environment", "/v", "KMP_AFFINITY", "/d", "disabled", "/f")      # torch's libiomp5
        self.user = next(p for p in (prefix / "drive_c" / "users").iterdir() if p.name not in ("Public", "public"))

    def run(self, argv: list[str], timeout: float = 600, wine: bool = True, env: dict | None = None):
        # Output through a pipe: Windows CPython under Wine dies at start when stdout is a regular file.
        return subprocess.run((["wine"] if wine else []) + [str(a) for a in argv], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace",
                              env={**self.env, **(env or {})}, timeout=timeout)

    def reg(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(["reg", *args], timeout=120)

    def values(self, key: str) -> dict[str, str] | None:
        """The values of a registry key ('' for the default value), or None when the key is missing."""
        out = self.reg("query", key)
        if out.returncode != 0:
            return None
        found = {}
        for line in out.stdout.splitlines():
            m = re.match(r"^\s+(.*?)\s+(REG_\w+)\s*(.*)$", line)
            if m:
                found["" if m.group(1) == "(Default)" else m.group(1)] = m.group(3).strip()
        return found

    def unix(self, windows_path: str) -> Path:
        drive, rest = windows_path.split(":", 1)
        return self.prefix / f"drive_{drive.lower()}" / rest.replace("\\", "/").lstrip("/")

    def windows(self, path: Path) -> str:
        rel = path.relative_to(self.prefix / "drive_c")
        return "C:\\" + str(rel).replace("/", "\\")

    def stop(self) -> None:
        subprocess.run(["wineserver", "-k"], env=self.env, timeout=60, capture_output=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("setup", type=Path, help="the installer: LoRA-Studio-<version>-Setup.exe")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    winroot = Path(os.environ.get("WINROOT") or cache / "lora-studio-wine")  # wine-setup.sh's default
    ap.add_argument("--shims", type=Path, default=winroot / "shim", help="the shim DLLs (default: $WINROOT/shim)")
    ap.add_argument("--prefix", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "lora-studio-check-prefix",
                    help="the throw-away Wine prefix (deleted first)")
    ap.add_argument("--runtime-wheels", type=Path, help="also set up the ML runtime, offline, from these Windows wheels")
    ap.add_argument("--keep", action="store_true", help="keep the prefix for a look afterwards")
    args = ap.parse_args(argv)
    if not args.setup.is_file():
        ap.error(f"{args.setup} does not exist: build it with installer/windows/build.sh")
    missing = [n for n in SHIMS if not (args.shims / n).is_file()]
    if missing:
        ap.error(f"{args.shims} lacks {', '.join(missing)}: run installer/windows/wine-setup.sh or pass --shims")
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    check = Checks()
    t0 = time.monotonic()
    wine = Wine(args.prefix, args.shims)
    print(f"fresh prefix {args.prefix} in {time.monotonic() - t0:.0f} s; installer {args.setup.stat().st_size / 2**20:.0f} MB")
    try:
        run_checks(wine, check, args, version)
    finally:
        wine.stop()
        if not args.keep:
            shutil.rmtree(args.prefix, ignore_errors=True)
    print(f"{check.passed} passed, {check.failed} failed")
    return 1 if check.failed else 0


def run_checks(wine: Wine, check: Checks, args, version: str) -> None:
    local = wine.user / "AppData" / "Local"
    instdir, data = local / "Programs" / APP, local / "lora-studio"
    start_menu = wine.user / "AppData" / "Roaming" / "Microsoft" / "Windows" / "Start Menu" / "Programs" / f"{APP}.lnk"
    cli = instdir / "lora-studio-cli.exe"
    # Another program owns .csv (as a spreadsheet does): the installer must leave it the default.
    wine.reg("add", r"HKCU\Software\Classes\.csv", "/ve", "/d", "Excel.CSV", "/f")

    setup = args.setup.resolve()
    t = time.monotonic()
    out = wine.run([setup, "/S"], timeout=900)
    check("silent install exits 0", out.returncode == 0, out.stdout)
    print(f"  install: {time.monotonic() - t:.0f} s, {du_mb(instdir):.0f} MB on disk")

    for rel in ("lora-studio.exe", "lora-studio-cli.exe", "Uninstall LoRA Studio.exe", "_internal",
                "python/python.exe", "python/python311.zip"):
        check(f"installed: {rel}", (instdir / rel).exists())
    check("installed: pip's wheel beside the runtime's Python", any((instdir / "python").glob("pip-*.whl")))
    scripts = [str(p.relative_to(instdir)) for p in instdir.rglob("*") if p.suffix.lower() in SCRIPTS]
    check("no batch, PowerShell, VBScript or JScript file installed", not scripts, ", ".join(scripts[:10]))
    check("Start-menu shortcut to lora-studio.exe", start_menu.is_file() and _links_to(start_menu, "lora-studio.exe"))
    check("no desktop shortcut unless asked", not any(wine.user.glob(f"Desktop/{APP}.lnk")))

    entry = wine.values(UNINST_KEY) or {}
    check("Settings > Apps: DisplayName", entry.get("DisplayName") == APP, str(entry))
    check("Settings > Apps: DisplayVersion is the app's version", entry.get("DisplayVersion") == version, str(entry))
    check("Settings > Apps: Publisher", bool(entry.get("Publisher")), str(entry))
    check("Settings > Apps: DisplayIcon is the program", entry.get("DisplayIcon", "").lower().endswith("lora-studio.exe,0"))
    check("Settings > Apps: UninstallString and QuietUninstallString",
          "Uninstall LoRA Studio.exe" in entry.get("UninstallString", "")
          and entry.get("QuietUninstallString", "").endswith("/S"), str(entry))
    size_kb = int(entry.get("EstimatedSize", "0"), 0)
    check("Settings > Apps: EstimatedSize matches the installed size",
          abs(size_kb / 1024 - du_mb(instdir)) < 0.1 * du_mb(instdir), f"{size_kb} KB")
    check("installed for this user (HKCU, %LOCALAPPDATA%\\Programs)",
          entry.get("InstallLocation", "").lower() == wine.windows(instdir).lower(), entry.get("InstallLocation", ""))

    command = (wine.values(rf"HKCU\Software\Classes\{PROGID}\shell\open\command") or {}).get("", "")
    check("dataset ProgID opens the window on the file", command.endswith('lora-studio.exe" --gui "%1"'), command)
    for ext in (".jsonl", ".parquet", ".csv"):
        progids = wine.values(rf"HKCU\Software\Classes\{ext}\OpenWithProgids") or {}
        check(f"Open with LoRA Studio: {ext}", PROGID in progids, str(progids))
    for ext in (".jsonl", ".parquet"):
        check(f"default program for {ext} (nothing had it)", (wine.values(rf"HKCU\Software\Classes\{ext}") or {}).get("") == PROGID)
    check(".csv keeps its own program", (wine.values(r"HKCU\Software\Classes\.csv") or {}).get("") == "Excel.CSV")

    out = wine.run([cli, "--version"], timeout=120)
    check("lora-studio-cli.exe --version", out.returncode == 0 and out.stdout.strip().endswith(f"lora-studio {version}"), out.stdout)
    out = wine.run([cli, "--smoke-test"], timeout=300)
    report = _last_json(out.stdout)
    check("lora-studio-cli.exe --smoke-test opens the window", out.returncode == 0 and report.get("ok") is True, out.stdout)
    check("the runtime is offered on a machine without one", report.get("runtime") == "missing" and report.get("needs_setup") is True,
          str(report))
    out = wine.run([instdir / "lora-studio.exe", "--smoke-test"], timeout=300)
    check("lora-studio.exe (windowed, what the shortcut starts) passes its smoke test", out.returncode == 0, out.stdout)
    out = wine.run([cli, "doctor", "--json", "--no-probe"], timeout=300)
    doctor = _last_json(out.stdout)
    check("the app's data folder is the one the uninstaller knows (%LOCALAPPDATA%\\lora-studio)",
          doctor.get("data_dir", "").lower() == wine.windows(data).lower(), doctor.get("data_dir", out.stdout))

    work = data / "runs" / "my-first-run" / "adapter" / "adapter_model.safetensors"  # the user's work
    work.parent.mkdir(parents=True, exist_ok=True)
    work.write_bytes(b"\0" * 4096)

    if args.runtime_wheels:
        first_run_runtime(wine, check, args.runtime_wheels, cli, data)
        update_while_a_run_works(wine, check, setup, instdir, data)

    out = wine.run([setup, "/S"], timeout=900)
    check("update over the installed copy (silent) exits 0", out.returncode == 0, out.stdout)
    out = wine.run([cli, "--version"], timeout=120)
    check("after the update: --version", out.stdout.strip().endswith(f"lora-studio {version}"), out.stdout)
    check("after the update: the user's run is untouched", work.is_file())
    update_while_running(wine, check, setup, instdir)

    t = time.monotonic()
    uninstall(wine, check, instdir, [])
    print(f"  uninstall: {time.monotonic() - t:.0f} s")
    check("uninstalled: Start-menu shortcut removed", not start_menu.exists())
    check("uninstalled: Settings > Apps entry removed", wine.values(UNINST_KEY) is None)
    check("uninstalled: the ProgID removed", wine.values(rf"HKCU\Software\Classes\{PROGID}") is None)
    check("uninstalled: no 'Open with' entry left",
          all(PROGID not in (wine.values(rf"HKCU\Software\Classes\{e}\OpenWithProgids") or {}) for e in (".jsonl", ".parquet", ".csv")))
    check("uninstalled: .jsonl has no default program left pointing at us",
          (wine.values(r"HKCU\Software\Classes\.jsonl") or {}).get("") != PROGID)
    check("uninstalled: .csv still opens with its own program", (wine.values(r"HKCU\Software\Classes\.csv") or {}).get("") == "Excel.CSV")
    check("uninstalled: the user's runs are kept", work.is_file())
    if args.runtime_wheels:
        check("uninstalled: the ML runtime is kept (unless ticked)", (data / "runtime" / "Scripts" / "python.exe").is_file())

    out = wine.run([setup, "/S"], timeout=900)
    check("reinstall after uninstall exits 0", out.returncode == 0, out.stdout)
    check("reinstall: the kept run is still there", work.is_file())
    uninstall(wine, check, instdir, ["/REMOVEDATA"])
    check("uninstall /S /REMOVEDATA: the data folder is deleted", not data.exists())


def first_run_runtime(wine: Wine, check: Checks, wheels: Path, cli: Path, data: Path) -> None:
    """`lora-studio runtime setup` from the installed app, offline: what Help > Set up the ML runtime runs."""
    env = {"LORA_STUDIO_PIP_ARGS": f"--no-index --find-links Z:{str(wheels.resolve())}".replace("/", "\\"),
           "LORA_STUDIO_TORCH_VARIANT": "cpu"}
    t = time.monotonic()
    out = wine.run([cli, "runtime", "setup"], timeout=3600, env=env)
    print(f"  runtime setup: {time.monotonic() - t:.0f} s")
    check("first run: the ML runtime is set up from the bundled Python (no Python on the machine)",
          out.returncode == 0, out.stdout[-3000:] + _log_tail(data))
    runtime = data / "runtime"
    check("runtime: a venv's layout (Scripts\\python.exe, pyvenv.cfg, Lib\\site-packages)",
          (runtime / "Scripts" / "python.exe").is_file() and (runtime / "pyvenv.cfg").is_file()
          and (runtime / "Lib" / "site-packages").is_dir())
    check("runtime: no ._pth (so the workers' PYTHONPATH counts)", not list((runtime / "Scripts").glob("*._pth")))
    out = wine.run([cli, "runtime", "status"], timeout=120)
    check("runtime status: ready", "ready" in out.stdout, out.stdout)
    out = wine.run([cli, "doctor", "--json"], timeout=600)
    report = _last_json(out.stdout)
    torch = str(report)
    check("doctor (probe under the runtime): torch 2.13.0 imports", "2.13.0" in torch, out.stdout[-2000:])


def update_while_running(wine: Wine, check: Checks, setup: Path, instdir: Path) -> None:
    """An update while the window is open must stop and say so, not leave half a program behind."""
    proc = subprocess.Popen(["wine", str(instdir / "lora-studio.exe")], env=wine.env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(15)  # the window is up (offscreen)
        running = proc.poll() is None
        before = _files(instdir)
        out = wine.run([setup, "/S"], timeout=900)
        lost = sorted(before - _files(instdir))
        check("update while the app runs is refused (silent: exit code 2), no file touched",
              running and out.returncode == 2 and not lost, f"app running: {running}, exit {out.returncode}, lost {lost[:5]}")
    finally:
        _end(wine, proc, "lora-studio.exe")
        # what the window started under the runtime's Python (a probe, a run) outlives it: end it too
        subprocess.run(["wine", "taskkill", "/f", "/im", "python.exe"], env=wine.env, capture_output=True, timeout=60)


def update_while_a_run_works(wine: Wine, check: Checks, setup: Path, instdir: Path, data: Path) -> None:
    """A worker under the runtime's Python (the app's folder on its PYTHONPATH, as studio.procs.worker_env
    sets it) loads DLLs from the app's folder and outlives the window: an update must wait for it too."""
    code = "import ctypes, ssl, time; print('working', flush=True); time.sleep(600)"
    env = {**wine.env, "PYTHONPATH": wine.windows(instdir / "_internal")}
    proc = subprocess.Popen(["wine", str(data / "runtime" / "Scripts" / "python.exe"), "-c", code], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = proc.stdout.readline().strip() == "working"
        before = _files(instdir)
        out = wine.run([setup, "/S"], timeout=900)
        lost = sorted(before - _files(instdir))
        check("update while a training run holds the app's DLLs is refused (exit code 2), no file touched",
              started and out.returncode == 2 and not lost, f"run started: {started}, exit {out.returncode}, lost {lost[:5]}")
    finally:
        _end(wine, proc, "python.exe")


def _end(wine: Wine, proc: subprocess.Popen, image: str) -> None:
    proc.kill()
    proc.wait(timeout=60)
    subprocess.run(["wine", "taskkill", "/f", "/im", image], env=wine.env, capture_output=True, timeout=60)
    time.sleep(2)


def uninstall(wine: Wine, check: Checks, instdir: Path, extra: list[str]) -> None:
    """The uninstaller copies itself to %TEMP% and returns at once: wait until the app folder is gone."""
    out = wine.run([instdir / "Uninstall LoRA Studio.exe", "/S", *extra], timeout=300)
    deadline = time.monotonic() + 300
    while instdir.exists() and time.monotonic() < deadline:
        time.sleep(1)
    left = [str(p.relative_to(instdir)) for p in instdir.rglob("*")][:10] if instdir.exists() else []
    check(f"uninstall {' '.join(['/S', *extra])}: the app folder is gone",
          out.returncode == 0 and not instdir.exists(), f"exit {out.returncode}; left: {left}")


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def _links_to(lnk: Path, name: str) -> bool:
    raw = lnk.read_bytes()
    return raw[:4] == b"L\0\0\0" and (name.encode() in raw or name.encode("utf-16-le") in raw)


def _last_json(text: str) -> dict:
    """The last JSON object in a program's output (one line, or indented over several)."""
    decoder, found = json.JSONDecoder(), {}
    for m in re.finditer(r"^\{", text, re.M):
        try:
            found = decoder.raw_decode(text[m.start():])[0]
        except ValueError:
            continue
    return found if isinstance(found, dict) else {}


def _log_tail(data: Path) -> str:
    log = data / "logs" / "runtime-setup.log"
    return "\nlog: " + log.read_text(errors="replace")[-3000:] if log.is_file() else ""


if __name__ == "__main__":
    sys.exit(main())
