"""`lora-studio chat RUN_OR_MODEL`: talk to a fine-tuned run (or a model) in the terminal."""
from __future__ import annotations

import argparse
import json
import sys

from studio import chat_client
from studio.commands.demo_model import ensure_with_progress
from studio.errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("chat", help="chat with a run's adapter, a checkpoint, or a base model",
                       description="Answer one prompt (--prompt) or chat interactively with a run's fine-tuned "
                                   "adapter (default), one of its checkpoints (--checkpoint N), its base model "
                                   "(--base), or a model on its own. The model loads once in a worker process. "
                                   "Interactive commands: /reset starts a new conversation, /quit leaves; "
                                   "Ctrl-C stops an answer.")
    p.add_argument("target", metavar="RUN_OR_MODEL", help="a run folder or run id, or a model (folder, catalog id, demo)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", type=int, metavar="N", help="use the run's checkpoint at step N")
    which.add_argument("--base", action="store_true", help="use the run's base model without the adapter")
    p.add_argument("--prompt", help="answer this one prompt and exit")
    p.add_argument("--image", action="append", default=[], metavar="PATH",
                   help="with --prompt: an image the prompt is about (repeatable); needs a vision-language model "
                        "(e.g. Qwen2.5-VL, Gemma 3 4B+, a LLaVA model) or a run trained on one")
    p.add_argument("--system", default="", help="a system prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int)
    p.add_argument("--json", action="store_true",
                   help="with --prompt: print one JSON object (text, tokens, time_to_first_token_s, tokens_per_s)")
    p.set_defaults(func=run)


def target_variant(args: argparse.Namespace) -> chat_client.Variant:
    spec = args.target + (f"@{args.checkpoint}" if args.checkpoint is not None else "")
    try:
        v = chat_client.resolve(spec)
        if args.base:
            if v.run_dir is None:
                raise UserError(f"{args.target}: --base needs a run; a model on its own is already the base")
            v = chat_client.resolve("base", base_of=v)
    except chat_client.VariantError as e:
        raise UserError(str(e)) from None
    return v


def settings_of(args: argparse.Namespace) -> dict:
    return {"system": args.system, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
            "top_p": args.top_p, "repetition_penalty": args.repetition_penalty, "seed": args.seed}


def start(variants: list[chat_client.Variant], vision: bool = False) -> chat_client.ChatClient:
    if any(v.model == "demo" for v in variants):
        ensure_with_progress()
    client = chat_client.ChatClient(chat_client.worker_args(variants, vision=vision))
    try:
        client.wait_ready()
    except chat_client.WorkerFailed as e:
        client.close()
        raise UserError(str(e)) from None
    for warning in client.warnings:  # e.g. trusted remote code: which files run, as training says
        print(f"warning: {warning}", file=sys.stderr)
    return client


def run(args: argparse.Namespace) -> int:
    if args.json and args.prompt is None:
        raise UserError("--json answers one prompt: add --prompt TEXT")
    if args.image and args.prompt is None:
        raise UserError("--image goes with one prompt: add --prompt TEXT")
    images = checked_images(args.image)
    variant = target_variant(args)
    settings = settings_of(args)
    if not args.json:
        print(f"loading {variant.model} ({'adapter ' + variant.label if variant.adapter else 'base model'})…",
              file=sys.stderr)
    client = start([variant], vision=bool(images))
    try:
        if args.prompt is not None:
            return _one(client, variant, args.prompt, settings, args.json, images)
        return _interactive(client, variant, settings)
    finally:
        client.close()


def _stream(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


checked_images = chat_client.checked_images  # the --image files, each read here before any model loads
image_message = chat_client.image_message


def _one(client: chat_client.ChatClient, variant: chat_client.Variant, prompt: str, settings: dict, as_json: bool,
         images: list[str] | None = None) -> int:
    try:
        answer = client.generate([image_message(prompt, images or [])], variant.name, settings,
                                 on_text=None if as_json else _stream)
    except chat_client.WorkerFailed as e:
        raise UserError(str(e)) from None
    if as_json:
        print(json.dumps({k: answer.get(k) for k in ("text", "tokens", "time_to_first_token_s", "tokens_per_s",
                                                      "finish")}, ensure_ascii=False))
    else:
        print()
        print(f"[{answer['tokens']} tokens, first after {answer['time_to_first_token_s']} s, "
              f"{answer['tokens_per_s']} tokens/s]", file=sys.stderr)
    return 0


def _interactive(client: chat_client.ChatClient, variant: chat_client.Variant, settings: dict) -> int:
    print(f"chatting with {variant.label} on {client.hello.get('device')} ({client.hello.get('quant')}); "
          "/reset for a new conversation, /quit or Ctrl-D to leave", file=sys.stderr)
    history: list[dict] = []
    while True:
        try:
            line = input("you> ")
        except EOFError:
            print()
            return 0
        except KeyboardInterrupt:
            print()
            return 0
        if not line.strip():
            continue
        if line.strip() in ("/quit", "/exit"):
            return 0
        if line.strip() == "/reset":
            history = []
            print("(new conversation)", file=sys.stderr)
            continue
        history.append({"role": "user", "content": line})
        sys.stdout.write("model> ")
        try:
            answer = client.generate(history, variant.name, settings, on_text=_stream, stop_on_interrupt=True)
        except chat_client.WorkerFailed as e:
            print(f"\nerror: {e}", file=sys.stderr)
            history.pop()
            continue
        print()
        history.append({"role": "assistant", "content": answer["text"]})
