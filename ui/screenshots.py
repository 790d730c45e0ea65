"""Render every page of the studio, after a real short demo run, into PNG files (``make screenshots``).

    xvfb-run -a -s "-screen 0 1440x900x24" python -m ui.screenshots --out docs/screenshots [--steps 20]

Nothing is staged: the demo model and dataset are chosen as ``make run`` does, the planner
plans, and the Train page shows a real run of ``--steps`` optimizer steps of the worker.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from studio import runs
from ui.app import apply_choices, build_app, parse_args


def wait_until(app, predicate, timeout_s: float) -> bool:
    """Process events until ``predicate()`` is true (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        app.processEvents()
        time.sleep(0.02)
    return True


def settle(app, seconds: float = 0.4) -> None:
    wait_until(app, lambda: False, seconds)


def shoot(app, window, name: str, out: Path) -> None:
    settle(app)
    for chart in getattr(window.train_page, "charts", {}).values():
        chart.refresh()
    settle(app, 0.3)
    path = out / f"{name}.png"
    window.grab().save(str(path))
    print(f"wrote {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    ap.add_argument("--steps", type=int, default=20, help="optimizer steps of the real demo run shown on Train")
    ap.add_argument("--home", type=Path, help="studio data folder (default: a fresh temporary one)")
    ap.add_argument("--reuse", action="store_true",
                    help="show the newest finished run of --home on the Train page instead of training again")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["LORA_STUDIO_HOME"] = str(args.home or tempfile.mkdtemp(prefix="lora-studio-shots-"))
    os.environ.setdefault("LORA_STUDIO_THEME", "light")
    from ui.main_window import MainWindow

    app = build_app()
    window = MainWindow()
    window.resize(1360, 860)
    window.show()
    window.finish_startup()
    apply_choices(window, parse_args(["--demo"]))
    data = window.data_page
    if not wait_until(app, lambda: data.report is not None, 60):
        print("the demo dataset was not read in time", file=sys.stderr)
        return 1
    wait_until(app, lambda: not window.model_page.converting, 300)
    wait_until(app, lambda: not data.tokens.running, 180)
    if "examples" not in data.token_status.text():  # asked before the demo model was ready
        data.request_tokens()
        wait_until(app, lambda: not data.tokens.running, 180)

    window.show_page(window.model_page)
    shoot(app, window, "model", args.out)
    window.show_page(data)
    data.tabs.setCurrentIndex(0)
    shoot(app, window, "data", args.out)
    data.tabs.setCurrentIndex(2)
    shoot(app, window, "data-tokens", args.out)
    window.show_page(window.plan_page)
    shoot(app, window, "plan", args.out)

    # A short run: small steps so a CPU-only machine renders the Train page in a few minutes; the
    # held-out answers before and after training fill the Evaluation card (the "before" ones are cached).
    for key, value in (("train.max_steps", args.steps), ("train.eval_steps", max(1, args.steps // 4)),
                       ("train.save_steps", args.steps), ("train.micro_batch", 4), ("train.grad_accum", 1),
                       ("train.lr", 1e-3)):
        window.session.pin(key, value)
    train = window.train_page
    window.show_page(train)

    finished = [r for r in runs.list_runs() if r.status == "finished"]
    if args.reuse and finished:
        train.show_run(finished[0].path)  # its real events, replayed from events.jsonl
    else:
        train.start()
        if not wait_until(app, lambda: train.training, 10) or not wait_until(app, lambda: not train.training, 1800):
            print(f"the demo run did not finish: {train.status}", file=sys.stderr)
    shoot(app, window, "train", args.out)

    window.show_page(window.runs_page)
    window.runs_page.table.selectAll()
    shoot(app, window, "runs", args.out)
    if train.run_dir is not None and train.status == "finished":
        play = window.playground_page
        window.show_page(play)
        play.select_run(train.run_dir)
        play.max_new.setValue(60)
        answers: list = []
        play.controller.sig_answer.connect(answers.append)
        if play.send("Why is the sky blue?"):
            wait_until(app, lambda: len(answers) >= 2, 300)
        shoot(app, window, "playground", args.out)
        play.shutdown()
    export = window.export_page
    window.show_page(export)
    if train.run_dir is not None and train.status == "finished":
        export.select_run(train.run_dir)
        export.export("ollama", "q4_k_m")  # a real export: the page then shows the files and the next command
        wait_until(app, lambda: export.controller.running, 10)
        wait_until(app, lambda: not export.controller.running, 600)
    shoot(app, window, "export", args.out)
    window.close()
    return 0 if train.status == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
