"""`lora-studio train RECIPE.json` and `lora-studio train --demo`: run the training worker headless."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from studio import driver, hardware, models, planner, runs
from studio.commands import add_setting_args, settings_from_args
from studio.commands.demo_model import ensure_with_progress
from studio.data import inspect
from studio.demo import demo_grpo, demo_preference, demo_recipe
from studio.errors import UserError
from studio.events import ERROR, METRIC, PROGRESS, WARNING
from studio.launch import gpu_list, train_argv, train_env, unsupported
from studio.methods import needs_no_grad_ckpt
from studio.planning import Machine, plan_for
from studio.recipe import (
    OBJECTIVE_SETTINGS,
    PREFERENCE_OBJECTIVES,
    REWARD_OBJECTIVES,
    Recipe,
    RecipeError,
    set_setting,
    setting_field,
)

# The adapter method and its size, as flags that override the recipe (studio.methods lists the methods).
METHOD_SETTINGS = ("lora.method", "lora.virtual_tokens")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune a model (headless): a recipe file, or --demo",
                       description="Start a training run in a worker process and follow it. Ctrl-C stops "
                                   "the run cleanly (the adapter is saved); a second Ctrl-C ends it at once.")
    p.add_argument("recipe", nargs="?", type=Path, help="a recipe JSON file (see docs/ARCHITECTURE.md)")
    p.add_argument("--demo", action="store_true",
                   help="fine-tune the embedded demo model (SmolLM2-135M-Instruct) on the demo dataset")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps (overrides the recipe)")
    p.add_argument("--runs-dir", type=Path, help="where run folders go (default: the studio's data folder)")
    add_setting_args(p, METHOD_SETTINGS)  # --peft METHOD, --virtual-tokens N (override the recipe)
    add_setting_args(p, OBJECTIVE_SETTINGS)  # --objective, --pref-beta, --packing, grpo's (override the recipe)
    p.add_argument("--trust-reward-file", action="store_true",
                   help="grpo: run the --reward-file without asking (you have read it); its sha256 is kept in the "
                        "run and a changed file is refused")
    multi = p.add_argument_group("several GPUs (torchrun; docs/multi-gpu.md)")
    add_setting_args(multi, MULTI_GPU)
    p.set_defaults(func=run)


MULTI_GPU = ("train.nproc", "train.gpus", "train.strategy")


def _recipe_from(args: argparse.Namespace) -> Recipe:
    if args.demo == bool(args.recipe):
        raise UserError("give either a recipe file or --demo")
    if args.demo:
        recipe = demo_recipe()
    else:
        warnings: list[str] = []
        try:
            recipe = Recipe.load(args.recipe, warnings)
        except RecipeError as e:
            raise UserError(str(e)) from None
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
    if args.max_steps is not None:
        recipe.train.max_steps = args.max_steps
    for key, value in settings_from_args(args, METHOD_SETTINGS).items():
        set_setting(recipe, key, value)

    if getattr(args, "lora.method", None) and needs_no_grad_ckpt(recipe.lora.method) and recipe.train.grad_ckpt:
        recipe.train.grad_ckpt = False  # said, not silent: the user asked for the method, not for checkpointing
        print("note: prefix tuning does not work with gradient checkpointing (peft); train.grad_ckpt is off for "
              "this run, so every layer's activations are kept", file=sys.stderr)
    for key, value in settings_from_args(args, OBJECTIVE_SETTINGS).items():
        set_setting(recipe, key, value)
    if args.demo and recipe.train.objective in PREFERENCE_OBJECTIVES:
        demo_preference(recipe)
    if args.demo and recipe.train.objective in REWARD_OBJECTIVES:
        demo_grpo(recipe)
        for key, value in settings_from_args(args, OBJECTIVE_SETTINGS).items():  # the user's flags win
            set_setting(recipe, key, value)
        if args.max_steps is not None:
            recipe.train.max_steps = args.max_steps
    _reward_file(args, recipe)
    for key, value in settings_from_args(args, MULTI_GPU).items():
        set_setting(recipe, key, value)
    if getattr(args, "train.gpus", None) and getattr(args, "train.nproc", None) is None:
        recipe.train.nproc = max(1, len(gpu_list(recipe.train.gpus)))  # --gpus 0,1 means two processes
    return recipe


DEFAULT_REWARDS = setting_field("train.grpo_rewards").default


def _reward_file(args: argparse.Namespace, recipe: Recipe) -> None:
    """grpo's own reward file is Python code: it runs only after an explicit yes (asked here on a terminal, or
    --trust-reward-file), bound to the file's sha256, so an edited file is asked about again."""
    from studio import rewards

    t = recipe.train
    given = getattr(args, "train.grpo_reward_file", None)
    if given and getattr(args, "train.grpo_rewards", None) is None and "file" not in t.grpo_rewards:
        if t.grpo_rewards != DEFAULT_REWARDS:
            raise UserError(f"--reward-file: the recipe's rewards are '{t.grpo_rewards}', without 'file'; add it with "
                            f"--rewards '{t.grpo_rewards},file:1' (or --rewards file for your reward alone)")
        t.grpo_rewards = "file"  # --reward-file alone: your reward is the reward
        print("note: --reward-file without --rewards: your reward file is the only reward (train.grpo_rewards "
              "'file')", file=sys.stderr)
    if not t.grpo_reward_file:
        return
    if t.objective not in REWARD_OBJECTIVES:
        raise UserError(f"--reward-file is for train.objective 'grpo'; this run's objective is '{t.objective}' "
                        "(add --objective grpo)")
    path = Path(t.grpo_reward_file).expanduser().resolve()
    try:
        digest = rewards.file_sha256(path)
    except rewards.RewardError as e:
        raise UserError(str(e)) from None
    t.grpo_reward_file = str(path)
    if rewards.agreed(path, digest):
        t.grpo_reward_sha256 = digest
        return  # agreed before on this computer, to these exact bytes
    if not getattr(args, "trust_reward_file", False):  # queue add and sweep build their own arguments
        if not sys.stdin.isatty():
            raise UserError(f"{path} is Python code, and it runs in the training worker with your rights. Read it, "
                            f"then pass --trust-reward-file to run it (sha256 {digest})")
        print(f"The reward file {path} is Python code ({path.stat().st_size:,} bytes, sha256 {digest}).\n"
              "It runs inside the training worker with your rights: only run a file you have read or written.",
              file=sys.stderr)
        if input("Run it for this training? [y/N] ").strip().lower() not in ("y", "yes"):
            raise UserError(f"not running {path}: nothing was started")
    rewards.agree(path, digest)
    t.grpo_reward_sha256 = digest


def run(args: argparse.Namespace) -> int:
    recipe = _recipe_from(args)
    problems = recipe.validate()
    if problems:
        raise UserError("the recipe has problems:\n  " + "\n  ".join(str(p) for p in problems))

    why = unsupported(recipe.train)
    if why:
        raise UserError(why)
    if recipe.model.name_or_path == "demo":
        ensure_with_progress()
    run_dir = runs.create(recipe, args.runs_dir, plan=_predict(recipe))
    print(f"run folder: {run_dir}")
    result = follow(run_dir)
    return _report(run_dir, result)


def _predict(recipe: Recipe) -> dict | None:
    """The planner's prediction for exactly this recipe (the charts draw it; a warning if it won't fit)."""
    from studio.launch import gpu_list, processes

    try:
        info = models.resolve(str(recipe.model.name_or_path))
    except ValueError:
        return None  # the worker reports an unusable model with its own error event
    t = recipe.train
    gpus = hardware.detect_gpus()
    n = processes(t)  # the worker trains on the CPU when there is no GPU
    machine = Machine.detect(gpus, processes=n, picked=gpu_list(t.gpus))
    plan = plan_for(info, machine, planner.fixed_from_recipe(recipe), dataset_report=_lengths_report(recipe, info),
                    effective_batch=t.micro_batch * t.grad_accum * n,
                    steps=t.max_steps if t.max_steps > 0 else None)  # the CPU's cached probe, if any
    if n > 1 and t.strategy != "auto" and plan.strategy != t.strategy:
        print(f"note: the planner would use {plan.strategy} on {n} processes; the recipe asks for {t.strategy}",
              file=sys.stderr)
    if not plan.fits and gpus:
        print(f"warning: the planner predicts {plan.predicted['device_total_bytes'] / 2**30:.1f} GiB, over the "
              f"{plan.budget_bytes / 2**30:.1f} GiB budget; {plan.suggestion or 'run lora-studio plan'}",
              file=sys.stderr)
    return plan.to_dict()


def _lengths_report(recipe: Recipe, info) -> object:
    """The dataset's report with its token lengths (the estimate times padded batches of real examples,
    as the Plan page does), or None: the worker reports a dataset it cannot read with its own error."""
    if not info.path or not recipe.data.path:
        return None

    try:
        d = recipe.data
        return inspect(d.path, fmt=d.format, columns=d.columns or None, tokenizer=info.path, seq_len=recipe.train.seq_len,
                       roles=d.roles or None, label_filter=d.label_filter)
    except (ValueError, OSError):
        return None


def follow(run_dir: Path, *worker_args: str) -> dict:
    """Start the worker detached from our terminal and show its events until it ends."""
    from tqdm import tqdm

    bar = None
    result: dict[str, Any] = {"samples": {}}

    def on_event(ev) -> None:
        nonlocal bar
        bar = _show(ev, bar, result, tqdm)


    with open(run_dir / "worker.log", "ab") as log:  # one process, or torchrun and one per GPU (train.nproc)
        code = driver.follow(train_argv(run_dir, *worker_args), log, on_event, driver.TRAIN,
                             "stopping: saving the adapter (Ctrl-C again to end at once)", env=train_env(run_dir),
                             outlive=True)
    if bar:
        bar.close()
    result["returncode"] = code
    return result


def _show(ev, bar, result: dict, tqdm):
    d = ev.data
    if ev.type == PROGRESS and d.get("phase") == "train":
        if bar is None:
            bar = tqdm(total=d.get("total") or None, unit="step", desc="training", dynamic_ncols=True)
        bar.n = d.get("done", 0)
        bar.refresh()
    elif ev.type == PROGRESS:
        eta = f" (about {d['eta_s']:.0f} s left)" if isinstance(d.get("eta_s"), (int, float)) and \
            d.get("done") != d.get("total") else ""
        print(f"{d.get('phase')}: {d.get('done')}/{d.get('total')}{eta}", file=sys.stderr)
    elif ev.type == METRIC:
        if "rewards/margins" in d:  # dpo/orpo: chosen minus rejected reward, step by step
            result.setdefault("margins", []).append((d["step"], d["rewards/margins"], d.get("rewards/accuracies")))
        if "reward" in d:  # grpo: the mean reward of the step's completions
            result.setdefault("rewards", []).append((d["step"], d["reward"]))
        if "loss" in d and bar is not None:
            extra = {"margin": f"{d['rewards/margins']:.3f}"} if "rewards/margins" in d else {}
            if "reward" in d:
                extra = {"reward": f"{d['reward']:.3f}", "kl": f"{d.get('kl', 0):.4f}"}
            bar.set_postfix(loss=f"{d['loss']:.4f}", lr=f"{d.get('learning_rate', 0):.2e}", **extra, refresh=True)
        for when in ("before", "after"):
            if f"heldout_score_{when}" in d:
                result["samples"][when] = (d[f"heldout_score_{when}"], d.get("sample_prompt"), d.get("sample_answer"))
        if "eval_loss" in d:
            result["eval_loss"] = d["eval_loss"]
        if d.get("eval_text"):
            result["eval_text"] = d["eval_text"]
    elif ev.type == WARNING:
        (bar.write if bar else print)(f"warning: {d.get('message')}")
    elif ev.type == ERROR:
        result["error"] = d
    elif ev.type == "done":
        result["done"] = d
    return bar


def _report(run_dir: Path, result: dict) -> int:
    err = result.get("error")
    if err:
        print(f"\ntraining failed ({err.get('kind')}): {err.get('message')}\nwhat to do: {err.get('hint')}",
              file=sys.stderr)
        print(f"worker log: {run_dir / 'worker.log'}", file=sys.stderr)
        return 1
    done = result.get("done")
    if not done:
        print(f"\nthe worker ended without finishing (exit code {result['returncode']}); "
              f"log: {run_dir / 'worker.log'}", file=sys.stderr)
        return 1
    print(f"\n{done['status']} at step {done.get('step')}, last loss {done.get('last_loss')}")
    if "eval_loss" in result:
        print(f"validation loss: {result['eval_loss']:.4f}")
    if result.get("margins"):
        (s0, m0, _), (s1, m1, acc) = result["margins"][0], result["margins"][-1]
        print(f"reward margin (chosen - rejected): {m0:.3f} at step {s0} -> {m1:.3f} at step {s1}"
              + (f", pairs ranked right: {acc:.0%}" if acc is not None else ""))
    if result.get("rewards"):
        first, last = result["rewards"][0], result["rewards"][-1]
        tail = result["rewards"][-5:]
        print(f"mean reward: {first[1]:.3f} at step {first[0]} -> {last[1]:.3f} at step {last[0]} (last "
              f"{len(tail)} steps: {sum(r for _, r in tail) / len(tail):.3f})")
    samples = result["samples"]
    if result.get("eval_text"):
        print(f"\n{result['eval_text']}\nevaluation report: {run_dir / 'eval.json'}\n")
    elif "before" in samples and "after" in samples:
        (b, prompt, ans_b), (a, _, ans_a) = samples["before"], samples["after"]
        print(f"held-out score (answer format): before {b:.0%}, after {a:.0%}")
        print(f"\nprompt: {prompt}\n--- before ---\n{ans_b}\n--- after ---\n{ans_a}\n")
    print(f"adapter: {done.get('adapter')}")
    print(f"run folder: {run_dir}")
    return 0
