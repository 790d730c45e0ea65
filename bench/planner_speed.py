"""How fast the planner answers: one prediction, a full fit, and the whole `plan` command, for a 70B model.

Targets (issue 3): a plan for a 70B config under 200 ms, a full fit under 1 s. Printed as medians of
repeated runs. A config.json given as a folder is counted on the meta device once (slow: it imports
transformers and builds the model on 'meta'), then read from the count cache.

    python bench/planner_speed.py
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio import memory, models, planner  # noqa: E402
from studio.memory import GiB  # noqa: E402

MODEL = "llama-3.1-70b-instruct"


def timed(fn, repeat: int = 7) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> int:
    info = models.resolve(MODEL)
    fixed = {"quant.mode": "4bit", "quant.double_quant": True, "lora.rank": 16, "lora.alpha": 32,
             "lora.targets": ["all-linear"], "train.micro_batch": 1, "train.grad_accum": 16, "train.seq_len": 2048,
             "train.grad_ckpt": True, "train.attn": "sdpa", "train.optimizer": "adamw_8bit",
             "quant.compute_dtype": "bfloat16"}
    print(f"model: {info.summary()}")
    print(f"one prediction (memory.estimate):           {timed(lambda: memory.estimate(info, fixed), 50):8.2f} ms")
    for gb in (24, 48, 80):
        print(f"full fit, nothing fixed, {gb:>2} GiB budget:       {timed(lambda gb=gb: planner.fit(info, gb * GiB)):8.2f} ms")
    print(f"plan with every setting fixed (48 GiB):     {timed(lambda: planner.fit(info, 48 * GiB, fixed=fixed)):8.2f} ms")
    from studio.cli import main as cli

    def run_cli() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            cli(["plan", "--model", MODEL, "--vram-gb", "48", "--json"])

    print(f"'lora-studio plan' in-process (catalog id):  {timed(run_cli):8.2f} ms")
    _folder_timings()
    return 0


def _folder_timings() -> None:
    """A 70B config.json in a folder: first run counts on the meta device, later runs use the cache."""
    entry = models.find_catalog(MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "llama-70b"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(entry.config))
        env = dict(os.environ, LORA_STUDIO_HOME=str(Path(tmp) / "home"))
        cmd = [sys.executable, "-m", "studio.cli", "plan", "--model", str(folder), "--vram-gb", "48", "--json"]
        for label in ("cold (meta-device count)", "warm (count cache)"):
            t = time.perf_counter()
            subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True)
            print(f"'lora-studio plan' subprocess, folder, {label}: {(time.perf_counter() - t) * 1000:8.0f} ms "
                  "(includes Python start-up)")


if __name__ == "__main__":
    sys.exit(main())
