"""Chat worker speed and memory against plain transformers, on the demo model (printed, not a test).

    python bench/chat_speed.py [--run RUN_DIR] [--max-new-tokens 64] [--repeats 3]

1. Time to first token and tokens/s: ``workers.chat --model demo`` (what ``lora-studio chat`` uses)
   against ``model.generate`` in this process, same prompt, greedy, same max new tokens, after one
   warm-up answer each; medians of ``--repeats``. The issue's target: ratio <= 1.10.
2. Resident memory (RSS) of the worker with the base alone, then with two adapters attached (the
   run's adapter under two names), against base alone + the adapters' size on disk. The target:
   <= 1.10 x (base alone + adapters).

``--run`` defaults to the newest run of the demo model with an adapter.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT = [{"role": "user", "content": "Why is the sky blue?"}]


def plain(model_dir: Path, max_new: int, repeats: int) -> tuple[float, float, int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    ids = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)

    class First:
        def __init__(self):
            self.n, self.t = 0, None

        def put(self, value):
            self.n += 1
            if self.n == 2:  # the first put is the prompt
                self.t = time.perf_counter()

        def end(self):
            pass

    ttfts, rates, n = [], [], 0
    for i in range(repeats + 1):
        s = First()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_new, do_sample=False, streamer=s,
                                 pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        t1 = time.perf_counter()
        n = out.shape[1] - ids["input_ids"].shape[1]
        if i:  # the first is the warm-up
            ttfts.append(s.t - t0)
            rates.append(n / (t1 - t0))
    return statistics.median(ttfts), statistics.median(rates), n


def worker(adapter: Path | None, max_new: int, repeats: int) -> dict:
    import psutil

    from studio.chat_client import ChatClient

    out: dict = {}
    with ChatClient(["--model", "demo", "--quant", "none"]) as client:
        client.wait_ready()
        proc = psutil.Process(client.proc.pid)
        ttfts, rates = [], []
        for i in range(repeats + 1):
            a = client.generate(PROMPT, "base", {"max_new_tokens": max_new})
            if i:
                ttfts.append(a["time_to_first_token_s"])
                rates.append(a["tokens_per_s"])
        out.update(ttft=statistics.median(ttfts), rate=statistics.median(rates), tokens=a["tokens"],
                   rss_base=proc.memory_info().rss)
        if adapter is not None:
            for name in ("first", "second"):
                client.add_adapter(name, adapter)
                client.generate(PROMPT, name, {"max_new_tokens": 8})
            out["rss_adapters"] = proc.memory_info().rss
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from studio import runs
    from studio.demo import ensure_demo_model

    model_dir = ensure_demo_model()
    run = args.run
    if run is None:
        run = next((s.path for s in runs.list_runs() if s.model == "demo"
                    and (s.path / runs.ADAPTER / "adapter_config.json").is_file()), None)
    adapter = run / runs.ADAPTER if run else None
    w = worker(adapter, args.max_new_tokens, args.repeats)
    p_ttft, p_rate, p_n = plain(model_dir, args.max_new_tokens, args.repeats)
    print(f"demo model {model_dir.name}, fp32 on the CPU, greedy, {args.max_new_tokens} new tokens, "
          f"median of {args.repeats} after a warm-up")
    print(f"  plain transformers generate: first token {p_ttft:.3f} s, {p_rate:.1f} tokens/s ({p_n} tokens)")
    print(f"  chat worker (streamed)     : first token {w['ttft']:.3f} s, {w['rate']:.1f} tokens/s "
          f"({w['tokens']} tokens)")
    print(f"  ratio worker/plain: time to first token {w['ttft'] / p_ttft:.2f}, "
          f"time per token {p_rate / w['rate']:.2f}   (target <= 1.10)")
    mib = 1 << 20
    print(f"  worker RSS, base alone: {w['rss_base'] / mib:.0f} MiB")
    if adapter is not None:
        size = sum(f.stat().st_size for f in adapter.glob("*.safetensors")) * 2
        limit = 1.10 * (w["rss_base"] + size)
        print(f"  worker RSS with two adapters ({adapter.parent.name}, twice): {w['rss_adapters'] / mib:.0f} MiB; "
              f"base alone + adapters' size {(w['rss_base'] + size) / mib:.0f} MiB "
              f"(adapters {size / mib:.1f} MiB); ratio {w['rss_adapters'] / (w['rss_base'] + size):.3f} "
              f"(target <= 1.10: {'met' if w['rss_adapters'] <= limit else 'NOT met'})")
    else:
        print("  no demo run with an adapter: run 'lora-studio train --demo --max-steps 20' for the memory figure")
    return 0


if __name__ == "__main__":
    sys.exit(main())
