"""`lora-studio runs list|show|compare|rename|tag|note|delete|restore|trash|open|tensorboard`: the registry."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from studio import registry, runs
from studio.commands import runs_root
from studio.errors import UserError
from studio.termtext import json_text, printable
from studio.train import trackers

LIST_COLUMNS = (("id", 30), ("name", 14), ("status", 11), ("rank", 4), ("lr", 8), ("steps", 5), ("loss", 7),
                ("val loss", 8), ("score", 5), ("time", 7), ("tags", 12))
CELL_CHARS = 60  # a longer name, tag list or model id is cut (with an ellipsis) so the table stays a table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list, compare, label and delete runs (the registry)",
                       description="The runs in the runs folder: each finished adapter carries its metadata in "
                                   "adapter/lora_studio.json (base model and weights sha256, dataset fingerprint, "
                                   "recipe, metrics, evaluation, duration, studio version). A RUN is a run folder, "
                                   "its id, a unique start of its id, or its name.")
    p.add_argument("--runs-dir", type=Path, help="the runs folder (default: the studio's data folder)")
    p.set_defaults(func=lambda a: _list(a))
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    def verb(name: str, help_: str, func, *runs_: str) -> argparse.ArgumentParser:
        v = verbs.add_parser(name, help=help_, description=help_)
        v.add_argument("--runs-dir", type=Path, default=argparse.SUPPRESS,
                       help="the runs folder (default: the studio's data folder)")
        for r in runs_:
            v.add_argument(r, metavar=r.upper(), help="a run folder, id, start of an id, or name")
        v.set_defaults(func=func)
        return v

    v = verb("list", "every run, newest first (or sorted), with its metrics and labels", _list)
    v.add_argument("--json", action="store_true", help="print a JSON list")
    v.add_argument("--sort", choices=("date", "val_loss", "score", "loss"), default="date",
                   help="newest first (date), lowest validation or training loss, or highest held-out score first")
    v.add_argument("--tag", help="only runs carrying this tag")
    v = verb("show", "one run's adapter metadata (adapter/lora_studio.json), built fresh if it has none", _show, "run")
    v = verb("compare", "two runs side by side: metrics, evaluation, and only the settings that differ", _compare,
             "a", "b")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    v = verb("rename", "give a run a display name (its folder keeps its id)", _rename, "run")
    v.add_argument("name", help="the new name ('' clears it)")
    v = verb("tag", "add tags to a run (or remove them with --remove)", _tag, "run")
    v.add_argument("tags", nargs="+", metavar="TAG")
    v.add_argument("--remove", action="store_true", help="remove these tags instead")
    v = verb("note", "set a run's note ('' clears it)", _note, "run")
    v.add_argument("text")
    verb("delete", "move a run to the trash of the runs folder ('runs restore' undoes it)", _delete, "run")
    v = verb("restore", "put a deleted run back: the last one deleted, or the one named", _restore)
    v.add_argument("id", nargs="?", metavar="RUN_ID")
    v = verb("trash", "list the deleted runs; --empty deletes them for good", _trash)
    v.add_argument("--empty", action="store_true")
    verb("open", "open a run's folder in the file manager", _open, "run")
    v = verb("tensorboard", "open runs in TensorBoard (the event files in RUN/tensorboard; needs tensorboard)",
             _tensorboard)
    v.add_argument("runs", nargs="*", metavar="RUN", help="runs to show (default: every run)")
    v.add_argument("--port", type=int, default=0, help="port on localhost (default: a free one)")


def _find(args, ref: str) -> Path:
    return registry.find_run(ref, runs_root(args))


def _list(args) -> int:
    skipped: list = []
    rows = registry.rows(runs_root(args), skipped)
    say_skipped(skipped)
    if getattr(args, "tag", None):
        rows = [r for r in rows if args.tag in r["tags"]]
    sort = getattr(args, "sort", "date")
    if sort != "date":
        rows.sort(key=lambda r: registry.rank_key(r, {"loss": "final_loss"}.get(sort, sort)))
    if getattr(args, "json", False):
        print(json_text(rows))
        return 0
    if not rows:
        print(f"no runs in {printable(runs_root(args))}")
        return 0
    print(table(rows))
    return 0


def say_skipped(skipped: list) -> None:
    """One line on stderr for each run left out of a listing because a file of it is damaged."""
    for e in skipped:
        print(f"skipped a run with a damaged file: {e}; fix or delete that file, or 'lora-studio runs delete' "
              "the run", file=sys.stderr)


def table(rows: list[dict]) -> str:
    """The runs as a text table with the list's columns."""
    def cell(r: dict, col: str) -> str:
        v = {"steps": r["step"], "loss": r["final_loss"], "val loss": r["val_loss"], "time": r["duration_s"],
             "tags": ",".join(r["tags"])}.get(col, r.get(col))
        if col == "score":
            return f"{v:.0%}" if isinstance(v, (int, float)) else ""
        if col == "time":
            return _duration(v)
        if col == "lr":
            return f"{v:.0e}" if isinstance(v, (int, float)) else ""
        if isinstance(v, float):
            return f"{v:.4f}"
        return "" if v is None else printable(v, limit=CELL_CHARS)  # from disk: no escape codes, one line

    cells = [[cell(r, c) for c, _ in LIST_COLUMNS] for r in rows]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, (c, _) in enumerate(LIST_COLUMNS)]
    lines = ["  ".join(c.ljust(w) for (c, _), w in zip(LIST_COLUMNS, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in cells]
    return "\n".join(lines)


def _duration(s) -> str:
    if not isinstance(s, (int, float)):
        return ""
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _show(args) -> int:
    run_dir = _find(args, args.run)
    meta = registry.read_metadata(run_dir) or registry.build_metadata(run_dir)
    print(json_text(meta))
    return 0


def _compare(args) -> int:
    a, b = _find(args, args.a), _find(args, args.b)
    if a == b:
        raise UserError(f"A and B are the same run ({printable(a.name)})")
    result = registry.compare(a, b)
    if args.json:
        print(json_text(result))
        return 0
    print(compare_text(result))
    return 0


def compare_text(result: dict) -> str:
    ra, rb = result["a"], result["b"]
    rows = [("run", ra["id"], rb["id"]), ("name", ra["name"], rb["name"]), ("status", ra["status"], rb["status"]),
            ("steps", ra["step"], rb["step"]), ("final training loss", ra["final_loss"], rb["final_loss"]),
            ("best training loss", ra["best_loss"], rb["best_loss"]),
            ("validation loss (adapter)", ra["val_loss"], rb["val_loss"]),
            ("validation loss (base)", ra["val_loss_base"], rb["val_loss_base"]),
            ("held-out score", _pct(ra["score"]), _pct(rb["score"])),
            ("training time", _duration(ra["duration_s"]), _duration(rb["duration_s"]))]
    width = max(len(k) for k, *_ in rows)

    def fmt(v) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else printable(v, limit=200))

    out = [f"{'':{width}}  A: {fmt(ra['id'])}\n{'':{width}}  B: {fmt(rb['id'])}", ""]
    out += [f"{k:{width}}  {fmt(va):<28}  {fmt(vb)}" for k, va, vb in rows[1:]]
    better = _better(ra, rb)
    if better:
        out.append(f"\nlower validation loss: {better}")
    out.append("\nsettings that differ:" if result["diff"] else "\nthe recipes are the same (apart from the name)")
    kw = max((len(d["key"]) for d in result["diff"]), default=0)
    out += [f"  {printable(d['key']):{kw}}  {printable(json.dumps(d['a']), limit=200)}  ->  "
            f"{printable(json.dumps(d['b']), limit=200)}" for d in result["diff"]]
    return "\n".join(out)


def _pct(v) -> str:
    return f"{v:.0%}" if isinstance(v, (int, float)) else ""


def _better(ra: dict, rb: dict) -> str:
    va, vb = ra.get("val_loss"), rb.get("val_loss")
    if not isinstance(va, (int, float)) or not isinstance(vb, (int, float)) or va == vb:
        return ""
    return f"A ({printable(ra['id'])})" if va < vb else f"B ({printable(rb['id'])})"


def _rename(args) -> int:
    run_dir = _find(args, args.run)
    registry.set_labels(run_dir, name=args.name)
    print(f"{printable(run_dir.name)}: name {printable(repr(args.name))}")
    return 0


def _tag(args) -> int:
    run_dir = _find(args, args.run)
    labels = (registry.set_labels(run_dir, remove_tags=args.tags) if args.remove
              else registry.set_labels(run_dir, add_tags=args.tags))
    print(f"{printable(run_dir.name)}: tags {printable(', '.join(labels['tags'])) or '(none)'}")
    return 0


def _note(args) -> int:
    run_dir = _find(args, args.run)
    registry.set_labels(run_dir, note=args.text)
    print(f"{printable(run_dir.name)}: note saved")
    return 0


def _delete(args) -> int:
    run_dir = _find(args, args.run)
    target = registry.trash(run_dir)
    print(f"{printable(run_dir.name)} moved to the trash ({printable(target)}); 'lora-studio runs restore' puts it back")
    return 0


def _restore(args) -> int:
    target = registry.restore(args.id, runs_root(args))
    print(f"restored {printable(target)}")
    return 0


def _trash(args) -> int:
    if args.empty:
        print(f"deleted {registry.empty_trash(runs_root(args))} run(s) for good")
        return 0
    items = registry.trashed(runs_root(args))
    for i in items:
        print(f"{printable(i['id'])}  deleted {printable(i['when']) or '(date unknown)'}"
              + (f"  ({i['problem']})" if i["problem"] else ""))
    if not items:
        print("the trash is empty")
    return 0


def _open(args) -> int:
    run_dir = _find(args, args.run)
    opener = {"darwin": ["open"], "win32": ["explorer"]}.get(sys.platform, ["xdg-open"])
    try:
        subprocess.Popen([*opener, str(run_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError as e:
        raise UserError(f"cannot open a file manager ({e}); the folder is {printable(run_dir)}") from None
    print(printable(run_dir))
    return 0


def _tensorboard(args) -> int:
    if not trackers.tensorboard_available():
        raise UserError("tensorboard is not installed: 'pip install tensorboard' (it is part of the ml extra)")
    root = runs_root(args)
    skipped: list = []
    picked = [_find(args, r) for r in args.runs] if args.runs else [s.path for s in runs.list_runs(root, skipped)]
    say_skipped(skipped)
    logdirs = [p for p in picked if (p / trackers.TB_DIR).is_dir()]
    if not logdirs:
        raise UserError("none of these runs has TensorBoard event files (RUN/tensorboard): runs trained "
                        "with tensorboard installed have them")
    spec = ",".join(f"{p.name}:{p / trackers.TB_DIR}" for p in logdirs)
    argv = [sys.executable, "-m", "tensorboard.main", "--logdir_spec", spec, "--host", "localhost",
            "--port", str(args.port)]
    print(f"starting TensorBoard on localhost for {len(logdirs)} run(s); Ctrl-C ends it", file=sys.stderr)
    return subprocess.call(argv)
