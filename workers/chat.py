"""Chat worker: ``python -m workers.chat (--run RUN_DIR | --model MODEL) [--adapter NAME=DIR ...]``.

Loads the base model once and keeps it warm; answers ``generate`` commands one at a time, streaming
``token`` events and ending each answer with an ``answer`` event (studio/events.py has the keys).
Commands on stdin, one JSON line each:

    {"v":1, "cmd":"generate", "id":"q1", "variant":"base"|ADAPTER, "messages":[...], "settings":{...}}
    {"v":1, "cmd":"adapter", "adapter":"ckpt-20", "path":"RUN/checkpoints/step-20"}
    {"v":1, "cmd":"stop"}        ends the running answer at once (the worker stays up)

A ``generate`` while an answer is running is refused with an ``error`` event naming both ids; a
line that is not a command gets an ``error`` event too, and so does a line over the protocol's
limit (studio.events.MAX_LINE_BYTES), with the id read from its head: every command is answered.
The worker exits (``done`` event) when stdin closes. Events go to stdout only; logs and tracebacks go to stderr.
"""
from __future__ import annotations

from studio import vision
from studio.data.chat_render import TemplateError, TemplateRunaway
from studio.inference import AdapterError, ChatEngine, GenSettings, SettingsError
from studio.recipe import Recipe
from studio.train import loading
from studio.train.recovery import load_recipe
from workers import EXIT_OK, go_offline, on_stop_signal, report_failure, run_worker
from workers.train import classify

go_offline()

import argparse  # noqa: E402
import os  # noqa: E402
import queue  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from studio.events import (  # noqa: E402
    ANSWER,
    DONE,
    ERROR,
    HELLO,
    LOG,
    MAX_LINE_BYTES,
    TOKEN,
    WARNING,
    Emitter,
    decode_command,
    read_commands,
    reserve_stdout,
)


def _base_recipe(run: Path | None, model: str | None):
    """The recipe that says how to load the base: the run's own, or a default one for a bare model."""

    if run is not None:
        recipe, _ = load_recipe(run, [])
        return recipe
    recipe = Recipe(name="chat")
    recipe.model.name_or_path = model
    recipe.quant.mode = "none"  # a bare model: 16-bit unless it does not fit the GPU (choose_quant)
    return recipe


def _id_in(line: bytes) -> str:
    """The ``"id"`` a command line names near its start (``""`` if none): an unreadable command is still
    answered under its id, so the client waiting for it hears back."""
    found = re.search(rb'"id"\s*:\s*"([^"\\]{1,64})"', line[:4096])
    return found.group(1).decode("utf-8", "replace") if found else ""


class ChatWorker:
    def __init__(self, emitter: Emitter, engine) -> None:
        self.em = emitter
        self.engine = engine
        self.stop = threading.Event()
        self.jobs: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.running_id: str | None = None

    # -- commands (reader thread) ------------------------------------------------------------------
    def listen(self, fd: int) -> None:
        read_commands(lambda line: line.strip() and self.handle(line), on_close=self._closed, fd=fd,
                      on_too_long=self._too_long)

    def _too_long(self, head: bytes, size: int) -> None:
        """A line over the limit was dropped unread: answer it, with its id when its head names one."""
        self.em.emit(ERROR, kind="config", id=_id_in(head),
                     message=f"a command of {size / (1 << 20):.1f} MiB was refused: a command line may be at most "
                             f"{MAX_LINE_BYTES >> 20} MiB", hint="shorten the prompt or the conversation")

    def _closed(self) -> None:
        """stdin closed: finish and exit."""
        self.stop.set()
        self.jobs.put(None)

    def handle(self, line: bytes) -> None:
        cmd = decode_command(line)
        if cmd is None:
            shown = line[:120].decode("utf-8", "replace")
            self.em.emit(ERROR, kind="config", message=f"not a command: {shown!r}", id=_id_in(line),
                         hint='send one JSON object per line, e.g. {"v":1,"cmd":"generate",...}')
            return
        name = cmd["cmd"]
        if name == "stop":
            self.stop.set()
        elif name == "generate":
            with self.lock:
                busy = self.running_id
                if busy is None:
                    self.running_id = str(cmd.get("id", ""))
                    self.stop.clear()
            if busy is not None:
                self.em.emit(ERROR, kind="config", id=str(cmd.get("id", "")),
                             message=f"busy: answer {busy!r} is still being generated",
                             hint="wait for its answer event, or send stop first")
                return
            self.jobs.put(cmd)
        elif name == "adapter":
            self.jobs.put(cmd)
        else:  # pause/resume belong to the training worker
            self.em.emit(ERROR, kind="config", message=f"the chat worker does not take {name!r}",
                         hint="commands here: generate, adapter, stop")

    # -- work (main thread) ------------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            cmd = self.jobs.get()
            if cmd is None:
                return
            if cmd["cmd"] == "adapter":
                self._adapter(cmd)
            else:
                self._generate(cmd)

    def _finish(self, type: str, **data) -> None:
        """The last event of an answer; the next generate is welcome from the moment it is sent."""
        with self.lock:
            self.running_id = None
        self.em.emit(type, **data)

    def _adapter(self, cmd: dict) -> None:
        name, path = cmd.get("adapter"), cmd.get("path")
        try:
            if not isinstance(name, str) or not isinstance(path, str):
                raise ValueError("adapter needs a string 'adapter' (its name) and 'path'")
            self.engine.add_adapter(name, Path(path))
        except Exception as e:  # noqa: BLE001 - a bad adapter is reported, the worker stays up
            self.em.emit(ERROR, kind="config", adapter=str(name), message=f"adapter {name!r}: {e}",
                         hint="give a run's adapter/ folder or a checkpoint trained on this base model")
            return
        self.em.emit(LOG, message=f"adapter {name!r} attached from {path}", adapter=name,
                     adapters=list(self.engine.adapters))

    def _generate(self, cmd: dict) -> None:
        gid, variant = str(cmd.get("id", "")), cmd.get("variant") or "base"
        try:
            settings = GenSettings.from_dict(cmd.get("settings"))
            result = self.engine.generate(
                cmd.get("messages"), variant, settings,
                on_text=lambda text, i: self.em.emit(TOKEN, id=gid, variant=variant, index=i, text=text),
                should_stop=self.stop.is_set)
        except (SettingsError, vision.VisionError) as e:
            self._finish(ERROR, kind="config", id=gid, message=str(e), hint="fix the generate command")
            return
        except (TemplateError, TemplateRunaway) as e:  # the model's chat template: its file is named
            self._finish(ERROR, kind="config", id=gid, message=str(e),
                         hint="fix the model's chat template, or change the conversation it refuses")
            return
        except Exception as e:  # noqa: BLE001
            kind = "oom" if "out of memory" in str(e).lower() else "internal"
            traceback.print_exc(file=sys.stderr)
            self._finish(ERROR, kind=kind, id=gid, message=str(e) or type(e).__name__,
                         hint="lower max new tokens" if kind == "oom" else "the traceback is in the log (stderr)")
            return
        result.pop("streamed", None)
        self._finish(ANSWER, id=gid, variant=variant, **result)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.chat", description=__doc__.splitlines()[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="a run folder: its base model, loaded as its training did")
    src.add_argument("--model", help="a model folder, catalog id or 'demo' (the bare base)")
    parser.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR",
                        help="attach an adapter folder under NAME (repeatable)")
    parser.add_argument("--quant", default="auto", choices=("auto", "4bit", "8bit", "none"))
    parser.add_argument("--vision", action="store_true",
                        help="load the whole vision-language model and its processor: prompts may carry images")
    args = parser.parse_args(argv)
    stream = reserve_stdout()
    label = args.run.name if args.run else str(args.model)
    em = Emitter(run=label, stream=stream)
    on_stop_signal(lambda *_: os._exit(0))  # nothing to save: an answer is disposable
    try:
        import torch


        recipe = _base_recipe(args.run.resolve() if args.run else None, args.model)
        base = loading.resolve_base(recipe)
        adapters = [Path(spec.partition("=")[2]) for spec in args.adapter]
        wants_vlm = args.vision or any(vision.adapter_on_whole_vlm(a) for a in adapters)
        engine = ChatEngine(base, recipe, quant=args.quant, vision_model=wants_vlm)
        for spec in args.adapter:
            name, sep, path = spec.partition("=")
            if not sep:
                raise ValueError(f"--adapter {spec!r}: write NAME=DIR")
            engine.add_adapter(name, Path(path))
    except Exception as e:  # noqa: BLE001 - the worker reports every failure as an event

        kind, hint = classify(e)
        if isinstance(e, ValueError) and kind == "internal":
            kind, hint = "config", ("fix or replace the adapter named above" if isinstance(e, AdapterError) else
                                    "pick a run folder with recipe.json, a local model folder, or 'demo'")
        return report_failure(em, e, kind, hint)
    for notice in engine.notices:  # trusted remote code: the files that run, as training says
        em.emit(WARNING, message=notice)
    em.emit(HELLO, pid=os.getpid(), device=engine.device, base=str(base), quant=engine.quant,
            adapters=list(engine.adapters), torch=torch.__version__,
            chat_template=bool(getattr(engine.tokenizer, "chat_template", None)))
    worker = ChatWorker(em, engine)
    worker.listen(sys.stdin.fileno())
    worker.serve()
    em.emit(DONE, status="finished")
    return EXIT_OK


if __name__ == "__main__":
    run_worker(main)
