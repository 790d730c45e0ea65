"""`lora-studio train RECIPE.json` and `lora-studio train --demo`: run the training worker headless."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from studio import runs
from studio.demo import demo_recipe
from studio.events import ERROR, METRIC, PROGRESS, WARNING
from studio.procs import follow_worker, worker_argv
from studio.errors import UserError
from studio.recipe import Recipe, RecipeError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fine-tune a model (headless): a recipe file, or --demo",
                       description="Start a training run in a worker process and follow it. Ctrl-C stops "
                                   "the run cleanly (the adapter is saved); a second Ctrl-C ends it at once.")
    p.add_argument("recipe", nargs="?", type=Path, help="a recipe JSON file (see docs/ARCHITECTURE.md)")
    p.add_argument("--demo", action="store_true",
                   help="fine-tune the embedded demo model (SmolLM2-135M-Instruct) on the demo dataset")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps (overrides the recipe)")
    p.add_argument("--runs-dir", type=Path, help="where run folders go (default: the studio's data folder)")
    p.set_defaults(func=run)


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
    return recipe


def run(args: argparse.Namespace) -> int:
    recipe = _recipe_from(args)
    problems = recipe.validate()
    if problems:
        raise UserError("the recipe has problems:\n  " + "\n  ".join(str(p) for p in problems))
    if recipe.model.name_or_path == "demo":
        from studio.commands.demo_model import ensure_with_progress

        ensure_with_progress()
    run_dir = runs.create(recipe, args.runs_dir, plan=_predict(recipe))
    print(f"run folder: {run_dir}")
    result = follow(run_dir)
    return _report(run_dir, result)


def _predict(recipe: Recipe) -> dict | None:
    """The planner's prediction for exactly this recipe (the charts draw it; a warning if it won't fit)."""
    from studio import hardware, models, planner

    try:
        info = models.resolve(str(recipe.model.name_or_path))
    except ValueError:
        return None  # the worker reports an unusable model with its own error event
    t = recipe.train
    gpus = hardware.detect_gpus()
    device = hardware.training_device(gpus)  # the worker trains on the CPU when there is no GPU
    budget = gpus[0].total_bytes if gpus else hardware.cpu_budget_bytes()
    plan = planner.fit(info, budget, fixed=planner.fixed_from_recipe(recipe),
                       effective_batch=t.micro_batch * t.grad_accum, device=device)
    planner.add_time_estimate(plan, info, gpu_name=gpus[0].name if gpus else "",
                              steps=t.max_steps if t.max_steps > 0 else None,  # the CPU's cached probe, if any
                              dataset_report=_lengths_report(recipe, info))
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
    from studio.data import inspect

    try:
        d = recipe.data
        return inspect(d.path, fmt=d.format, columns=d.columns or None, tokenizer=info.path, seq_len=recipe.train.seq_len,
                       roles=d.roles or None, label_filter=d.label_filter)
    except (ValueError, OSError):
        return None


def follow(run_dir: Path, *worker_args: str) -> dict:
    """Start the worker detached from our terminal and show its events until it ends."""
    from tqdm import tqdm

    bar, result = None, {"samples": {}}

    def on_event(ev) -> None:
        nonlocal bar
        bar = _show(ev, bar, result, tqdm)

    with open(run_dir / "worker.log", "ab") as log:
        code = follow_worker(worker_argv("workers.train", run_dir, *worker_args), log, on_event,
                             "stopping: saving the adapter (Ctrl-C again to end at once)")
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
        if "loss" in d and bar is not None:
            bar.set_postfix(loss=f"{d['loss']:.4f}", lr=f"{d.get('learning_rate', 0):.2e}", refresh=True)
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
