"""`lora-studio compare A B --prompts FILE.jsonl`: the same prompts answered by two variants."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from studio import chat_client
from studio.commands.chat import start
from studio.errors import UserError
from studio.scoring import TIMEOUT_HINT, PromptFileError, load_prompts, match_or_timeout, row_images


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="answer the same prompts with two variants (runs, checkpoints, base)",
                       description="Answer every prompt of FILE.jsonl with A and with B, greedily, and score the "
                                   "answers where a row carries a 'pattern' (a regular expression). A and B are "
                                   "each a run (its adapter), RUN@N (its checkpoint at step N), or 'base' (the "
                                   "base model of the other one). Both must share one base model: it is loaded "
                                   "once.")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--prompts", type=Path, required=True,
                   help="JSONL: one {\"messages\": [...], \"pattern\": optional regex} per line; a row may carry "
                        "images as a dataset row does ({\"type\": \"image\", \"image\": PATH} content parts, or an "
                        "'images' column beside <image> markers; paths relative to the file), answered by a "
                        "vision-language model with its images")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def resolve_pair(a: str, b: str) -> tuple[chat_client.Variant, chat_client.Variant]:
    try:
        if a == chat_client.BASE and b == chat_client.BASE:
            raise UserError("A and B are both 'base': name a run for at least one of them")
        if a != chat_client.BASE:
            va = chat_client.resolve(a)
            vb = chat_client.resolve(b, base_of=va)
        else:  # B names a run (both 'base' was refused above): A is its base model
            vb = chat_client.resolve(b)
            va = chat_client.resolve(a, base_of=vb)
    except chat_client.VariantError as e:
        raise UserError(str(e)) from None
    if not chat_client.same_base(va, vb):
        raise UserError(f"{va.label} and {vb.label} have different base models ({va.model} and {vb.model}); "
                        "compare variants of one base model")
    if va.name == vb.name and va.adapter == vb.adapter:
        raise UserError(f"A and B are the same ({va.label})")
    return va, vb


def run(args: argparse.Namespace) -> int:
    try:
        rows = load_prompts(args.prompts)
    except PromptFileError as e:
        raise UserError(str(e)) from None
    va, vb = resolve_pair(args.a, args.b)
    if va.adapter is not None and vb.adapter is not None and va.name == vb.name:
        vb = chat_client.Variant(vb.label + " (B)", vb.run_dir, vb.model, vb.adapter)
    with_images = any(row_images(r) for r in rows)  # the whole vision-language model reads them
    client = start([va, vb], vision=with_images)
    settings = {"max_new_tokens": args.max_new_tokens}
    scored = any(r.get("pattern") for r in rows)
    items, timed_out = [], []
    try:
        for i, row in enumerate(rows, start=1):
            item = {"prompt": row["messages"][-1]["content"], "pattern": row.get("pattern")}
            if row_images(row):
                item["images"] = row_images(row)
            for key, v in (("a", va), ("b", vb)):
                ans = client.generate(row["messages"], v.name, settings, stop_on_interrupt=False)
                row_scored = bool(row.get("pattern"))  # a row without one is answered, not scored
                found = match_or_timeout(ans["text"], row["pattern"]) if row_scored else None
                item[key] = {"text": ans["text"], "tokens": ans["tokens"],
                             "time_to_first_token_s": ans["time_to_first_token_s"],
                             "tokens_per_s": ans["tokens_per_s"], "match": found,
                             "pattern_timed_out": row_scored and found is None}
                if row_scored and found is None:
                    timed_out.append(f"row {i} ({key.upper()})")
            items.append(item)
            if not args.json:
                pictures = "".join(f" [{Path(p).name}]" for p in item.get("images", []))
                print(f"[{i}/{len(rows)}] {item['prompt']}{pictures}\n--- A: {va.label}"
                      f"{_mark(item['a'])} ---\n{item['a']['text'].strip()}\n--- B: {vb.label}"
                      f"{_mark(item['b'])} ---\n{item['b']['text'].strip()}\n")
            else:
                print(f"{i}/{len(rows)}", file=sys.stderr)
    except chat_client.WorkerFailed as e:
        raise UserError(str(e)) from None
    finally:
        client.close()
    score = ({**{k: sum(bool(it[k]["match"]) for it in items) for k in ("a", "b")},
              "total": sum(1 for it in items if it["pattern"]), "unscored": sum(1 for it in items if not it["pattern"]),
              **{f"timed_out_{k}": sum(it[k]["pattern_timed_out"] for it in items) for k in ("a", "b")}}
             if scored else None)
    if timed_out:
        print(f"{args.prompts}: the pattern ran out of time on {', '.join(timed_out)}: reported as timed out, not "
              f"scored; {TIMEOUT_HINT}", file=sys.stderr)
    if args.json:
        print(json.dumps({"a": va.label, "b": vb.label, "prompts": str(args.prompts), "score": score,
                          "items": items}, ensure_ascii=False, indent=1))
    elif score:
        print(f"score (rows matching their pattern): A {va.label} {score['a']}/{score['total'] - score['timed_out_a']}, "
              f"B {vb.label} {score['b']}/{score['total'] - score['timed_out_b']}"
              + (" (rows whose pattern timed out are not counted)" if timed_out else "")
              + (f"; {score['unscored']} row(s) without a pattern answered, not scored" if score["unscored"] else ""))
    return 0


def _mark(result: dict) -> str:
    if result.get("pattern_timed_out"):
        return " ? pattern timed out"
    match = result.get("match")
    return "" if match is None else (" \u2713 matches" if match else " \u2717 no match")
