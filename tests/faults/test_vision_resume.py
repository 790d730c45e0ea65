"""An image run (a vision-language model on rows with images) is killed and resumed like a text run: the same
losses and adapter, bit for bit; an out-of-memory step steps down the same ladder. Gradient checkpointing is on,
as the planner usually chooses it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from faultkit import (
    MAX_STEPS,
    adapter_tensors,
    cli,
    kill_at_step,
    losses,
    max_diff,
    of_type,
    read_json,
    run_worker,
    start_worker,
    tiny_recipe,
)
from tiny import make_vlm, write_image

from studio import runs
from studio.events import EventReader
from studio.train import recovery

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (230, 220, 40)}


@pytest.fixture(scope="module")
def image_rows(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny Qwen2-VL and a JSONL of 16 rows asking about one of four coloured images (relative paths)."""
    root = tmp_path_factory.mktemp("vision-resume")
    model = make_vlm(root / "vlm", "qwen2_vl")
    rows = []
    for i in range(16):
        name = list(COLOURS)[i % 4]
        write_image(root / "data" / "img" / f"{name}.png", (56, 56), COLOURS[name])
        rows.append({"messages": [{"role": "user", "content": [{"type": "image", "image": f"img/{name}.png"},
                                                              {"type": "text", "text": "What colour is it?"}]},
                                  {"role": "assistant", "content": f"It is {name}."}]})
    data = root / "data" / "colours.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model, data


def _run(root: Path, model: Path, data: Path, **train: object) -> Path:
    recipe = tiny_recipe(model, data, seq_len=96, grad_ckpt=True, lr=5e-3, **train)
    recipe.data.max_pixels = 56 * 56
    return runs.create(recipe, root)


@pytest.fixture(scope="module")
def vision_reference(tmp_path_factory, image_rows) -> Path:
    run_dir = _run(tmp_path_factory.mktemp("vision-ref"), *image_rows)
    rc, events = run_worker(run_dir)
    assert rc == 0, (run_dir / "worker.log").read_text()[-3000:]
    logs = " ".join(e.data.get("message", "") for e in events if e.type == "log")
    assert "the whole model loads, the language model in 4-bit NF4" in logs  # an image run, not a text one
    return run_dir


def test_a_killed_image_run_resumes_bit_exactly(tmp_path, image_rows, vision_reference):
    run_dir = _run(tmp_path, *image_rows)
    assert kill_at_step(run_dir, 5) < MAX_STEPS
    result = cli("resume", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    got, want = losses(run_dir), losses(vision_reference)
    assert sorted(got) == list(range(1, MAX_STEPS + 1)) and got == want
    assert max_diff(adapter_tensors(run_dir), adapter_tensors(vision_reference)) <= 1e-6


def test_out_of_memory_in_an_image_run_steps_down_the_ladder_and_finishes(tmp_path, image_rows):
    run_dir = _run(tmp_path, *image_rows, max_steps=4)
    proc = start_worker(run_dir, fault="oom@step=3")
    reader, seen = EventReader(), []
    while (chunk := proc.stdout.read1(65536)):
        seen += reader.feed(chunk)
    assert proc.wait(timeout=120) == 0, (run_dir / "worker.log").read_text()[-3000:]
    warnings = [e.data["message"] for e in of_type(seen, "warning") if e.data.get("kind") == "oom_recovery"]
    assert warnings == ["out of memory during step at step 3: changed micro-batch 2 -> 1 and gradient accumulation "
                        "2 -> 4 (the effective batch stays 4); continuing from checkpoint step 2"]
    effective = read_json(run_dir / recovery.EFFECTIVE_RECIPE)["train"]
    assert (effective["micro_batch"], effective["grad_accum"]) == (1, 4)
    assert runs.read_state(run_dir)["status"] == "finished"
    assert not [p for p in os.listdir(run_dir / runs.CHECKPOINTS) if p.startswith(".staging")]
