"""Evaluation worker: ``python -m workers.evaluate RUN_DIR [--prompts FILE.jsonl]`` writes RUN_DIR/eval.json.

Loads the run's base model once (as ``workers.chat`` does) with the run's adapter attached, then
measures the validation loss of the adapter and of the base (adapter disabled) on the run's own
validation split, and answers the held-out prompts (``--prompts``, else the recipe's
``data.heldout``, else a few validation conversations) with both. Progress events per prompt;
``stop`` on stdin (or the polite signal) ends the answers at the next token (the report then says it
was stopped).
"""
from __future__ import annotations

from studio import evalreport, registry, vision
from studio.inference import AdapterError, ChatEngine
from studio.scoring import PromptFileError, load_prompts, row_images
from studio.train import dataset, loading
from studio.train.recovery import load_recipe
from workers import EXIT_OK, go_offline, on_stop_signal, report_failure, run_worker
from workers.train import classify

go_offline()

import argparse  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

from studio import runs  # noqa: E402
from studio.events import DONE, HELLO, PROGRESS, Emitter, reserve_stdout  # noqa: E402


def evaluate_run(run_dir: Path, prompts: Path | None, em: Emitter, should_stop, quant: str = "auto") -> Path:
    adapter = run_dir / runs.ADAPTER
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{run_dir}: no adapter yet (adapter/adapter_config.json); "
                                "finish or stop the run first")
    recipe, _ = load_recipe(run_dir, [])
    em.emit(PROGRESS, phase="load", done=0, total=2)
    base = loading.resolve_base(recipe)
    if prompts is not None:
        rows, source = load_prompts(prompts), str(prompts)
    elif recipe.data.heldout:
        rows, source = load_prompts(Path(recipe.data.heldout)), str(recipe.data.heldout)
    else:
        rows, source = [], "validation examples"
    # an adapter trained on image rows, or prompts with images: the whole vision-language model and its processor
    whole = vision.adapter_on_whole_vlm(adapter) or any(row_images(r) for r in rows)
    engine = ChatEngine(base, recipe, quant=quant, vision_model=whole)
    engine.add_adapter("adapter", adapter)
    em.emit(HELLO, pid=os.getpid(), device=engine.device, base=str(base), quant=engine.quant, run_dir=str(run_dir))
    processor = engine.processor
    data = dataset.build(engine.tokenizer, recipe, lambda: processor, str(base))  # the same split as training
    em.emit(PROGRESS, phase="load", done=2, total=2)
    tok = engine.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if data.vision:  # rows with images: the loss with their pixels (studio.vision)
        collator = vision.VisionCollator(processor, recipe.data.max_pixels)
        val_rows = data.val or vision.VisionDataset([])
        n_val = len(val_rows)

        def loss() -> tuple[float | None, int]:
            return vision.validation_loss(engine.model, val_rows, collator, recipe.train.micro_batch)
    else:
        val = data.lm_rows()  # DPO/ORPO runs: the chosen conversations of the validation split
        n_val = len(val)

        def loss() -> tuple[float | None, int]:
            return evalreport.validation_loss(engine.model, val, pad, recipe.train.micro_batch)
    losses, tokens = {}, 0
    for i, who in enumerate(("adapter", "base")):
        em.emit(PROGRESS, phase="eval-loss", done=i, total=2)
        with engine.variant(who):
            losses[who], tokens = loss()
    em.emit(PROGRESS, phase="eval-loss", done=2, total=2)
    if prompts is None and not recipe.data.heldout:
        rows = evalreport.fallback_rows(data.val_examples or [])
        if processor is not None and rows:  # prompts whose images do not fit the run's sequence length: not answered
            rows, _ = evalreport.within_length(tok, rows, recipe.train.seq_len, processor)
    answers = {}

    def progress(**kw) -> None:
        em.emit(PROGRESS, **kw)

    for who in ("base", "adapter"):
        with engine.variant(who):
            answers[who] = evalreport.answer_rows(engine.model, tok, rows, f"eval-{who}", progress, should_stop,
                                                  batch_size=min(len(rows), 20) or 1, processor=processor)
    report = evalreport.build(losses, tokens if n_val else 0, n_val, rows, answers, source,
                              scored=any(r.get("pattern") for r in rows), stopped=bool(should_stop()),
                              adapter=str(adapter), base_model=str(base))
    path = evalreport.write(run_dir, report)
    runs.write_state(run_dir, eval=evalreport.summary(report))

    registry.write_metadata(run_dir)  # the adapter's metadata carries the new evaluation
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--prompts", type=Path, help="held-out prompts (JSONL with messages and optional pattern)")
    parser.add_argument("--quant", default="auto", choices=("auto", "4bit", "8bit", "none"))
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    em = Emitter(run=run_dir.name, stream=reserve_stdout())
    from studio.train.callbacks import Control

    control = Control()
    control.listen()
    on_stop_signal(lambda *_: control.stop.set())  # the polite signal is the same stop as the command
    try:
        path = evaluate_run(run_dir, args.prompts, em, control.stop.is_set, args.quant)
    except Exception as e:  # noqa: BLE001 - the worker reports every failure as an event

        kind, hint = classify(e)
        if isinstance(e, PromptFileError):
            kind, hint = "data", "fix the prompts file (one JSON object with 'messages' per line)"
        elif isinstance(e, AdapterError):
            kind, hint = "config", "the run's adapter named above cannot be used: train or resume the run again"
        return report_failure(em, e, kind, hint)
    em.emit(DONE, status="stopped" if control.stop.is_set() else "finished", path=str(path))
    return EXIT_OK


if __name__ == "__main__":
    run_worker(main)
