"""Our training worker against a plain transformers Trainer + peft script, same settings, same data.

    python bench/train_overhead.py [--pairs 3] [--steps 12]

Both train 4-bit QLoRA (NF4, double quant) on the demo model (SmolLM2-135M-Instruct) with the
demo's settings (rank 16, alpha 32, no dropout, all linear layers, micro-batch 4, length 256,
AdamW, lr 1e-3, no validation, no checkpoints, no held-out answers) on the demo dataset, each in a
fresh interpreter, alternating (ours, plain, ours, plain, ...) so a busy moment hits both. Printed
per pair and as medians with the ratio ours/plain: the median optimizer step time (steps 3 to N,
after warm-up), the time from spawn to the first finished step, and the peak resident memory.

The plain script trains every token of the chat-templated example; the worker trains only what
the assistant must produce (docs/data.md), which is why their first losses differ slightly.
"""
from __future__ import annotations

import argparse
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

PLAIN = r'''
import json, sys, time, threading
import psutil, torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, DataCollatorForSeq2Seq,
                          Trainer, TrainerCallback, TrainingArguments)
from peft import LoraConfig, get_peft_model
from datasets import Dataset

folder, data, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
peak = [0]
def watch():
    proc = psutil.Process()
    while True:
        peak[0] = max(peak[0], proc.memory_info().rss); time.sleep(0.05)
threading.Thread(target=watch, daemon=True).start()
tok = AutoTokenizer.from_pretrained(folder)
rows = [json.loads(line) for line in open(data, encoding="utf-8")]
def encode(row):
    text = tok.apply_chat_template(row["messages"], tokenize=False)
    ids = tok(text, add_special_tokens=False, truncation=True, max_length=256)["input_ids"]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": list(ids)}
ds = Dataset.from_list([encode(r) for r in rows])
q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                       bnb_4bit_compute_dtype=torch.float32)
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, quantization_config=q, device_map={"": "cpu"})
model.config.use_cache = False
torch.manual_seed(42)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                         task_type="CAUSAL_LM"))
times = []
class Clock(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        times.append(time.time())
args = TrainingArguments(output_dir=sys.argv[4], max_steps=steps, per_device_train_batch_size=4,
                         gradient_accumulation_steps=1, learning_rate=1e-3, lr_scheduler_type="cosine",
                         warmup_steps=0.05, optim="adamw_torch", logging_steps=1, save_strategy="no",
                         report_to="none", disable_tqdm=True, use_cpu=True, seed=42, remove_unused_columns=False,
                         dataloader_num_workers=0)
Trainer(model=model, args=args, train_dataset=ds, callbacks=[Clock()],
        data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)).train()
print(json.dumps({"step_times": times, "peak_rss": peak[0]}), flush=True)
'''


def _ours(steps: int, work: Path) -> dict:
    from studio import runs
    from studio.demo import demo_recipe
    from studio.events import read_events
    from studio.procs import worker_argv, worker_env

    recipe = demo_recipe()
    recipe.train.max_steps, recipe.train.save_steps = steps, 10_000
    recipe.data.val_fraction, recipe.data.heldout = 0.0, ""
    run_dir = runs.create(recipe, work / "runs")
    t0 = time.time()
    subprocess.run(worker_argv("workers.train", str(run_dir)), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=open(run_dir / "worker.log", "ab"), env=worker_env(), check=True)
    events = read_events(run_dir / runs.EVENTS)
    step_ts = [e.ts for e in events if e.type == "metric" and "loss" in e.data]
    rss = [e.data.get("allocated") or 0 for e in events if e.type == "memory"]
    return {"spawn": t0, "step_times": step_ts, "peak_rss": max(rss, default=0)}


def _plain(steps: int, work: Path) -> dict:
    from studio.demo import demo_dataset, ensure_demo_model
    from studio.procs import worker_env

    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", PLAIN, str(ensure_demo_model()), str(demo_dataset()), str(steps),
                          str(work / "plain")], capture_output=True, text=True, env=worker_env())
    if out.returncode:
        raise SystemExit(f"the plain script failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"spawn": t0, **result}


def _figures(r: dict) -> dict:
    ts = r["step_times"]
    gaps = [b - a for a, b in zip(ts[2:], ts[3:])]  # after two warm-up steps
    return {"step_s": statistics.median(gaps), "first_step_s": ts[0] - r["spawn"], "peak_rss_mb": r["peak_rss"] / 2**20}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    os.environ.setdefault("LORA_STUDIO_HOME", tempfile.mkdtemp(prefix="lora-studio-overhead-"))
    work = Path(tempfile.mkdtemp(prefix="train-overhead-"))
    from studio.demo import ensure_demo_model

    ensure_demo_model()  # converted once before the clock starts: neither side pays for it
    rows = []
    for i in range(args.pairs):
        ours, plain = _figures(_ours(args.steps, work)), _figures(_plain(args.steps, work))
        rows.append((ours, plain))
        print(f"pair {i + 1}: ours step {ours['step_s']:.3f} s, first step {ours['first_step_s']:.1f} s, "
              f"peak {ours['peak_rss_mb']:.0f} MB | plain step {plain['step_s']:.3f} s, first step "
              f"{plain['first_step_s']:.1f} s, peak {plain['peak_rss_mb']:.0f} MB", flush=True)
    print(f"medians of {args.pairs} pairs, {args.steps} steps each (ours / plain):")
    for key, name in (("step_s", "optimizer step"), ("first_step_s", "time to first step"),
                      ("peak_rss_mb", "peak resident memory")):
        ratios = [o[key] / p[key] for o, p in rows]
        print(f"  {name:<22} ours {statistics.median(o[key] for o, _ in rows):8.3f}  plain "
              f"{statistics.median(p[key] for _, p in rows):8.3f}  ratio {statistics.median(ratios):.2f} "
              f"(pairs {min(ratios):.2f}-{max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
