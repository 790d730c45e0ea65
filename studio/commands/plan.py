"""`lora-studio plan`: settings that fit a GPU (or CPU) budget, with the predicted memory, speed and why.

Given settings are used as they are; the missing ones are fitted. ``--json`` prints the plan
object (fits, device, estimate, budget_bytes, settings, predicted, components, sources, reasons, suggestion).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from studio import hardware, models, speed
from studio.commands import add_setting_args, settings_from_args
from studio.data import inspect
from studio.errors import UserError
from studio.planner import SHAPE
from studio.planning import Machine, budget_bytes, host_budget, plan_for
from studio.recipe import PLANNED

GiB = 1024 ** 3
BAR_WIDTH = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("plan", help="Fit QLoRA settings to your GPU (or, without one, your computer's) memory "
                                           "and show the predicted peak and the run's expected speed.",
                              description="Predict peak memory and choose settings that fit the budget, with the "
                                          "expected tokens/s and duration. Settings you give are kept; the rest are "
                                          "fitted. Without an NVIDIA GPU the plan is for training on the CPU.")
    p.add_argument("--model", required=True, help="'demo', a model folder, a Hugging Face cache id or a catalog id")
    p.add_argument("--vram-gb", type=float, help="GPU budget in GiB (default: the detected GPU's memory)")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                   help="plan for a GPU or for the CPU (default auto: the CPU when no NVIDIA GPU is found "
                        "and no --vram-gb is given; on the CPU the budget is system RAM)")
    p.add_argument("--ram-gb", type=float, help="CPU budget in GiB (default: this computer's memory minus what the "
                                                 "OS and the studio need); for a GPU, the host RAM that activation "
                                                 "offloading may fill (default: this computer's, when it plans for "
                                                 "its own GPU; else not checked, and the plan says what it needs)")
    p.add_argument("--steps", type=int, help="optimizer steps of the run, for its duration (default: one epoch "
                                             "of --dataset)")
    add_setting_args(p, PLANNED)
    add_setting_args(p, SHAPE)  # --objective, --packing: kept as given, they change the memory
    p.add_argument("--effective-batch", type=int, default=16, help="examples per optimizer step to keep (default 16)")
    p.add_argument("--dataset", help="a dataset file (or a folder of documents: their chunks): its token lengths "
                                     "set the sequence length")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the model's own code (trusted models only)")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    p.add_argument("--num-gpus", type=int, metavar="N",
                   help="plan for N GPUs of the budget each: one GPU, DDP (a copy per GPU) or FSDP (sharded), "
                        "with the memory per GPU (default: 1; docs/multi-gpu.md)")
    p.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    if args.effective_batch < 1:
        raise UserError(f"--effective-batch {args.effective_batch}: must be 1 or more")
    if args.vram_gb is not None and args.vram_gb <= 0:
        raise UserError(f"--vram-gb {args.vram_gb}: give the GPU memory in GiB, e.g. --vram-gb 24")
    if args.ram_gb is not None and args.ram_gb <= 0:
        raise UserError(f"--ram-gb {args.ram_gb}: give the memory in GiB, e.g. --ram-gb 8")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps {args.steps}: must be 1 or more")


def _dataset_report(path: str, info: Any) -> Any:
    tokenizer = info.path if info.path else None
    try:
        return inspect(path, tokenizer=tokenizer)
    except (ValueError, OSError) as e:
        raise UserError(f"--dataset {path}: {e}") from None


def run(args: argparse.Namespace) -> int:
    _check(args)
    try:
        info = models.resolve(args.model, trust_remote_code=args.trust_remote_code)
    except models.ModelError as e:
        raise UserError(str(e)) from None
    gpus = hardware.detect_gpus()
    device = args.device
    if device == "auto":
        device = "cuda" if gpus or args.vram_gb else "cpu"
    given = args.ram_gb if device == "cpu" else args.vram_gb
    budget = budget_bytes(gpus, int(given * GiB) if given else None, device)
    report = _dataset_report(args.dataset, info) if args.dataset else None
    if args.num_gpus is not None and args.num_gpus < 1:
        raise UserError(f"--num-gpus {args.num_gpus}: give 1 or more")
    if device == "cpu":
        if speed.cpu_rates() is None:
            print("Measuring this CPU's training speed once (a few seconds; cached for next time)...", file=sys.stderr)
    host = host_budget(device, bool(gpus), int(args.ram_gb * GiB) if args.ram_gb else None)
    machine = Machine(device, (budget,) * (args.num_gpus or 1), gpus[0].name if gpus else "", host)
    plan = plan_for(info, machine, settings_from_args(args, PLANNED + SHAPE), dataset_report=report,
                    effective_batch=args.effective_batch, steps=args.steps, examples=getattr(report, "usable", None),
                    measure=True)
    if args.dataset and getattr(report, "tokens", None) is None:
        plan.reasons.append("The dataset's token lengths need the model's tokenizer (a local model folder); "
                            "the default length was used.")
    if args.json:
        print(json.dumps(plan.to_dict(), indent=2))
    else:
        print(render(plan, info))
    return 0  # a plan that does not fit is still an answer: "fits" says which


def _bar(value: int, scale: int) -> str:
    n = int(round(BAR_WIDTH * value / scale)) if scale else 0
    return "#" * n + "." * (BAR_WIDTH - n)


def render(plan: Any, info: Any) -> str:
    """A readable table: settings, one bar per memory component, the totals and the reasons."""
    s, p = plan.settings, plan.predicted
    lines = [info.summary(), *([info.note] if getattr(info, "note", "") else []), "",
             ("FITS" if plan.fits else "DOES NOT FIT") + f" in {plan.budget_bytes / GiB:.1f} GiB "
             + ("of RAM, on the CPU " if plan.device == "cpu" else "")
             + f"(margin {plan.margin_bytes / GiB:.1f} GiB)", "", "Settings:"]
    lines += [f"  {k:<27}{', '.join(v) if isinstance(v, list) else v}" for k, v in s.to_dict().items()]
    lines += ["", f"Memory (bar scale: budget {plan.budget_bytes / GiB:.1f} GiB):"]
    for name, value in sorted(plan.components.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<26}{value / GiB:7.2f} GiB  {_bar(value, plan.budget_bytes)}")
    if plan.device == "cpu":
        lines += ["", f"  {'peak (RAM)':<26}{p['device_total_bytes'] / GiB:7.2f} GiB  (the worker's resident peak; training runs on the CPU)",
                  "", "Why:"]
    else:
        lines += ["", f"  {'peak allocated':<26}{p['peak_allocated_bytes'] / GiB:7.2f} GiB  (torch.cuda.max_memory_allocated)",
                  f"  {'peak reserved':<26}{p['peak_reserved_bytes'] / GiB:7.2f} GiB  (torch.cuda.max_memory_reserved)",
                  f"  {'device total':<26}{p['device_total_bytes'] / GiB:7.2f} GiB  (nvidia-smi)", "", "Why:"]
    if plan.host_offload:
        where = (f"of the {plan.host_budget / GiB:.1f} GiB this machine can spare" if plan.host_budget
                 else "not checked: planning for a GPU that is not in this computer (give --ram-gb)")
        lines.insert(lines.index("Why:") - 1, f"  {'host RAM (offloaded)':<26}{plan.host_offload / GiB:7.2f} GiB  "
                                               f"(pinned, {where})")
    if plan.longest_seq_len:
        lines.insert(lines.index("Why:") - 1, f"  {'longest context':<26}{plan.longest_seq_len:>7,} tokens "
                                               "(these settings; checkpointing and the long-sequence parts where needed)")
    lines += [f"  - {r}" for r in plan.reasons]
    if getattr(plan, "per_gpu", None):
        lines += ["", f"Per GPU with these settings on {plan.nproc} GPUs (chosen: {plan.strategy}):"]
        lines += [f"  {name:<26}{value / GiB:7.2f} GiB" for name, value in plan.per_gpu.items()]
    return "\n".join(lines)
