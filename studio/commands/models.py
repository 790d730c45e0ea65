"""`lora-studio models`: the model catalog (public config facts, exact parameter counts)."""
from __future__ import annotations

import argparse
import json

from studio import events
from studio.commands import add_events_flag
from studio.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("models", help="List the model catalog, or show one model's facts.",
                              description="List the catalog of popular models, or show what the studio reads "
                                          "from a model ('demo', a folder, a Hugging Face cache id, a catalog id).")
    p.add_argument("model", nargs="?", help="show this model's facts instead of the list")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_events_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from studio import models

    if args.model:
        try:
            info = models.resolve(args.model)
        except models.ModelError as e:
            raise UserError(str(e)) from None
        if args.emitter:  # the window: counting on the meta device needs torch, which it never imports
            args.emitter.emit(events.DONE, model=info.to_dict())
        elif args.json:
            print(json.dumps(info.to_dict(), indent=2))
        else:
            print(info.summary())
            for group, n in info.params.items():
                print(f"  {group:<12}{n:>16,}")
        return 0
    entries = models.catalog()
    if args.json:
        print(json.dumps([{"id": e.id, "name": e.name, "hf_id": e.hf_id, "params": e.total_params} for e in entries],
                         indent=2))
        return 0
    for e in entries:
        print(f"{e.id:<28}{e.total_params / 1e9:7.2f}B  {e.hf_id}")
    return 0
