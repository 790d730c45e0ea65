"""`lora-studio resume RUN_DIR`: continue a stopped, failed or killed run from its last good checkpoint."""
from __future__ import annotations

import argparse
from pathlib import Path

from studio import runs
from studio.attach import worker_pid
from studio.checkpoint import list_checkpoints
from studio.commands.train import _report, follow
from studio.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("resume", help="continue a run from its last good checkpoint",
                       description="Continue a run that was stopped, failed or killed from the newest checkpoint "
                                   "that passes its manifest, with the same data order and the settings that last "
                                   "worked. Damaged checkpoints are skipped with a warning.")
    p.add_argument("run_dir", type=Path, help="the run folder (see 'lora-studio runs')")
    p.set_defaults(func=run)


def check_resumable(run_dir: Path) -> Path:
    """The resolved run folder, or a UserError saying why it cannot be resumed."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not (run_dir / runs.RECIPE).is_file():
        raise UserError(f"{run_dir}: not a run folder (no {runs.RECIPE}); give a folder listed by 'lora-studio runs'")
    pid = worker_pid(run_dir)
    if pid is not None:
        raise UserError(f"{run_dir}: still training (worker pid {pid}); follow it with 'lora-studio attach {run_dir}'")
    status = runs.read_state(run_dir).get("status")
    if status == "finished":
        raise UserError(f"{run_dir}: this run already finished; its adapter is in {run_dir / runs.ADAPTER}")
    return run_dir


def run(args: argparse.Namespace) -> int:
    run_dir = check_resumable(args.run_dir)
    found = list_checkpoints(run_dir)
    print(f"resuming {run_dir} (newest checkpoint: {found[0].path.name if found else 'none'})")
    return _report(run_dir, follow(run_dir, "--resume"))
