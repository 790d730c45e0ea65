"""Peak RSS and time of LoRA Studio's streaming merge vs peft's merge_and_unload(), same inputs.

    python bench/merge_memory.py            # a random 1.57 B-parameter Llama (bf16, 1 GB shards), rank-16 adapter
    python bench/merge_memory.py --small    # a quick smoke run on a 30 M model

The model is built from a config (names and shapes from a meta-device model), filled with random
bf16 weights and saved in shards; the adapter targets every linear layer with rank 16. Each merge
runs in a fresh subprocess so its peak RSS (ru_maxrss of that child) is its own. Target from the
issue: peak RSS at most a quarter of peft's, time no worse.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIG = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
           num_key_value_heads=4, vocab_size=32000)
SMALL = dict(hidden_size=512, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=2, vocab_size=32000)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHARD_BYTES = 1 << 30


def build_base(folder: Path, dims: dict) -> int:
    """Random bf16 weights for every parameter of a Llama built from ``dims``, saved in shards."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(max_position_embeddings=2048, tie_word_embeddings=False, dtype="bfloat16", **dims)
    with torch.device("meta"):
        shapes = {n: tuple(p.shape) for n, p in AutoModelForCausalLM.from_config(config).named_parameters()}
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    gen = torch.Generator().manual_seed(0)
    shards, current, size = [], {}, 0
    for name, shape in shapes.items():
        t = torch.ones(shape, dtype=torch.bfloat16) if name.endswith("norm.weight") else \
            (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
        current[name] = t
        size += t.numel() * 2
        if size >= SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
    if current:
        shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
    total = sum(t.numel() * 2 for s in shards for t in s.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                      "weight_map": weight_map}))
    return sum(int(torch.Size(s).numel()) for s in shapes.values())


def build_adapter(folder: Path, base: Path, rank: int = 16) -> None:
    """A rank-16 LoRA on every linear layer, in peft's file format, with non-zero A and B."""
    import torch
    from peft import LoraConfig
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    gen = torch.Generator().manual_seed(1)
    tensors = {}
    for name, module in model.named_modules():
        if name.split(".")[-1] in TARGETS:
            out_f, in_f = module.weight.shape
            tensors[f"base_model.model.{name}.lora_A.weight"] = torch.randn(rank, in_f, generator=gen) * 0.01
            tensors[f"base_model.model.{name}.lora_B.weight"] = torch.randn(out_f, rank, generator=gen) * 0.01
    folder.mkdir(parents=True)
    LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=TARGETS, base_model_name_or_path=str(base)).save_pretrained(str(folder))
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})


def child(kind: str, base: Path, adapter: Path, out: Path) -> None:
    """One merge, timed from the first byte read to the last byte written (imports excluded)."""
    import safetensors.torch  # noqa: F401  (imports are not part of the timing, for either side)
    import torch  # noqa: F401

    if kind == "studio":
        from studio.export.adapter import load_adapter
        from studio.export.merge import merge_to_folder

        start = time.perf_counter()
        out.mkdir()
        merge_to_folder(base, load_adapter(adapter), out)
    else:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.bfloat16)
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        model.save_pretrained(str(out), max_shard_size="1GB")
    print(json.dumps({"seconds": time.perf_counter() - start}))


def measure(kind: str, base: Path, adapter: Path, out: Path) -> dict:
    """Run ``child`` in a fresh interpreter; its own peak RSS comes from wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", kind, str(base), str(adapter), str(out)],
                            stdout=subprocess.PIPE, env=_env())
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{kind} merge failed")
    result = json.loads(stdout.decode().strip().splitlines()[-1])
    return {"kind": kind, "peak_rss_mb": usage.ru_maxrss / 1024, "merge_s": result["seconds"],
            "process_s": time.perf_counter() - start}


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a 30 M-parameter model, for a quick check")
    parser.add_argument("--work", type=Path, help="working folder (default: a temp folder, removed after)")
    parser.add_argument("--child", nargs=4, metavar=("KIND", "BASE", "ADAPTER", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, base, adapter, out = args.child
        child(kind, Path(base), Path(adapter), Path(out))
        return
    if args.build:
        params = build_base(args.build / "base", SMALL if args.small else BIG)
        build_adapter(args.build / "adapter", args.build / "base")
        print(params)
        return
    work = args.work or Path(tempfile.mkdtemp(prefix="merge-bench-"))
    try:
        t = time.perf_counter()
        # Built in a subprocess too: this process must stay small, because a child's ru_maxrss
        # starts from the size of the process it was forked from.
        built = subprocess.run([sys.executable, __file__, "--build", str(work)] + (["--small"] if args.small else []),
                               stdout=subprocess.PIPE, check=True, env=_env())
        params = int(built.stdout.decode().split()[-1])
        print(f"model: {params / 1e9:.2f} B parameters, bf16, "
              f"{sum(f.stat().st_size for f in (work / 'base').glob('*.safetensors')) / 2**30:.2f} GiB in "
              f"{len(list((work / 'base').glob('*.safetensors')))} shards; rank-16 adapter on {len(TARGETS)} "
              f"linear types (built in {time.perf_counter() - t:.0f} s)")
        rows = [measure(k, work / "base", work / "adapter", work / f"out-{k}") for k in ("studio", "peft")]
        print(f"{'merge':<22}{'peak RSS (MiB)':>16}{'merge time (s)':>16}{'process (s)':>14}")
        for r in rows:
            name = "lora-studio streaming" if r["kind"] == "studio" else "peft merge_and_unload"
            print(f"{name:<22}{r['peak_rss_mb']:>16.0f}{r['merge_s']:>16.1f}{r['process_s']:>14.1f}")
        s, p = rows
        print(f"RSS ratio studio/peft: {s['peak_rss_mb'] / p['peak_rss_mb']:.3f} (target <= 0.25); "
              f"time ratio: {s['merge_s'] / p['merge_s']:.2f} (target <= 1.0)")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
