"""Every GGUF family end to end through the CLI: a tiny random model of the family, `lora-studio train` for a few
4-bit steps on chat data (200 by default), then `lora-studio export RUN --format gguf --quant Q` for f16, q8_0 and q4_k_m and
`--format ollama`, with llama.cpp's `llama-simple` doing the export's greedy check when it is built.

    LORA_STUDIO_LLAMA_CPP=~/llama.cpp/build python bench/gguf_families.py            # every family
    python bench/gguf_families.py --families gemma2,phi3 --quants f16                  # a few

The tiny models are the test suite's (tests/tiny.py and tests/test_gguf_*.py builders: random norms, biases,
sliding windows, experts, Gated DeltaNet layers, MXFP4 experts), built in a scratch folder; each family prints one
line per export with every check's verdict (ok / FAIL / skip) and the greedy check's per-prompt result. The
studio's data folder is a scratch one (LORA_STUDIO_HOME), never the user's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _builders() -> dict[str, Callable[[Path], Path]]:
    import tiny
    from test_gguf_gemma import make_gemma
    from test_gguf_gpt_oss import make_gpt_oss
    from test_gguf_phi import make_case
    from test_gguf_qwen35 import make_qwen35

    def llama_like(arch: str, **kw) -> Callable[[Path], Path]:
        return lambda out: tiny.make_model(out, arch=arch, **kw)

    return {
        "llama": llama_like("llama"),
        "mistral": llama_like("mistral"),
        "qwen2": llama_like("qwen2", tie=True),
        "qwen3": llama_like("qwen3"),
        "qwen3_moe": llama_like("qwen3_moe", moe_intermediate_size=32, head_dim=16, num_experts=4,
                                num_experts_per_tok=2, norm_topk_prob=True),
        "mixtral": llama_like("mixtral", num_local_experts=4, num_experts_per_tok=2),
        "gemma": lambda out: make_gemma(out, "gemma"),
        "gemma2": lambda out: make_gemma(out, "gemma2"),
        "gemma3_text": lambda out: make_gemma(out, "gemma3_text"),
        "gemma3": lambda out: make_gemma(out, "gemma3"),
        "phi": lambda out: make_case(out, "phi"),
        "phi3": lambda out: make_case(out, "phi3"),
        "phi3_longrope": lambda out: make_case(out, "phi3_longrope"),
        "smollm3": lambda out: make_case(out, "smollm3"),
        "gpt_oss": lambda out: make_gpt_oss(out, mxfp4=False),
        "qwen3_5_text": lambda out: make_qwen35(out),
        "qwen3_5": lambda out: make_qwen35(out, multimodal=True),
        "qwen3_5_moe_text": lambda out: make_qwen35(out, moe=True),
    }


def _cli(args: list[str], env: dict) -> tuple[int, str, float]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "studio.cli", *args], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=1800)
    return out.returncode, out.stdout + out.stderr, time.perf_counter() - t


def _checks(out: Path) -> list[dict]:
    """The checks the export wrote into its folder's report (studio.export.targets.REPORT)."""
    from studio.export.targets import REPORT

    try:
        return json.loads((out / REPORT).read_text()).get("checks", [])
    except (OSError, ValueError):
        return []


def family(name: str, build: Callable[[Path], Path], work: Path, quants: list[str], steps: int, env: dict) -> None:
    import tiny

    folder = build(work / name / "model")
    data = tiny.write_chat_jsonl(work / name / "chat.jsonl")
    recipe = {"model": {"name_or_path": str(folder)}, "data": {"path": str(data), "val_fraction": 0},
              "lora": {"rank": 8, "alpha": 16}, "quant": {"mode": "4bit"},
              "train": {"max_steps": steps, "micro_batch": 2, "grad_accum": 1, "seq_len": 128, "lr": 1e-3}}
    (work / name / "recipe.json").write_text(json.dumps(recipe))
    code, text, secs = _cli(["train", str(work / name / "recipe.json"), "--runs-dir", str(work / name / "runs")], env)
    runs = sorted((work / name / "runs").glob("*"))
    if code or not runs:
        print(f"{name:<18} train FAILED ({code}, {secs:.0f} s): {text.strip().splitlines()[-3:]}", flush=True)
        return
    run = runs[-1]
    print(f"{name:<18} trained {steps} steps in 4-bit ({secs:.0f} s)", flush=True)
    for fmt, quant in [("gguf", q) for q in quants] + [("ollama", quants[0])]:
        out = run / "exports" / f"{fmt}-{quant}"
        code, text, secs = _cli(["export", str(run), "--format", fmt, "--quant", quant, "--out", str(out)], env)
        checks = _checks(out)
        verdicts = " ".join(f"{c['name']}={'skip' if c['ok'] is None else 'ok' if c['ok'] else 'FAIL'}" for c in checks)
        greedy = next((c for c in checks if c["name"] == "gguf_greedy"), None)
        detail = f" | greedy: {greedy['summary'][:140]}" if greedy else ""
        status = "ok" if code == 0 else f"exit {code}: {text.strip().splitlines()[-1][:160] if text.strip() else ''}"
        print(f"{name:<18} {fmt:<6} {quant:<7} {status} ({secs:.0f} s) {verdicts}{detail}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default="", help="comma-separated (default: all): " + ", ".join(_builders()))
    p.add_argument("--quants", default="f16,q8_0,q4_k_m")
    # A random model trained 2 steps answers byte soup at near ties that any rounding flips (Q8_0 changed every
    # answer of Qwen3.5's); 200 steps of the chat data leave answers with margins, as a user's trained model has
    # (80 left the Qwen3.5 MoE one prompt in three that even its f16 file answered otherwise).
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    args = p.parse_args(argv)
    builders = _builders()
    names = [n for n in args.families.split(",") if n] or list(builders)
    unknown = sorted(set(names) - set(builders))
    if unknown:
        p.error(f"unknown families: {', '.join(unknown)}")
    work = args.work or Path(tempfile.mkdtemp(prefix="gguf-families-"))
    env = {**os.environ, "LORA_STUDIO_HOME": str(work / "home"), "PYTHONPATH": str(ROOT)}
    print(f"llama.cpp: {os.environ.get('LORA_STUDIO_LLAMA_CPP') or 'not set (the greedy check is skipped)'}; "
          f"work: {work}", flush=True)
    for name in names:
        family(name, builders[name], work, args.quants.split(","), args.steps, env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
