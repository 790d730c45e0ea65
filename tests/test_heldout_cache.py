"""The base model's held-out answers are computed once per base, prompts and settings, then reused."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "faults"))

from faultkit import run_worker, tiny_recipe  # noqa: E402

from studio import heldout_cache, runs  # noqa: E402

LOAD = {"quant": "4bit", "dtype": "torch.float32", "device": "cpu"}
GEN = {"max_new_tokens": 8, "batch": 2}


def _prompts(path: Path, *questions: str) -> Path:
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}]}) + "\n" for q in questions))
    return path


def test_the_key_follows_everything_the_answers_depend_on(tmp_path, tiny_model_dir):
    prompts = _prompts(tmp_path / "p.jsonl", "What is 1 plus 1?", "Name a colour.")
    base = heldout_cache.key(tiny_model_dir, prompts, LOAD, GEN, "{{ messages }}")
    assert base == heldout_cache.key(tiny_model_dir, prompts, LOAD, GEN, "{{ messages }}")
    other = _prompts(tmp_path / "q.jsonl", "What is 1 plus 2?", "Name a colour.")
    changed = [heldout_cache.key(tiny_model_dir, other, LOAD, GEN, "{{ messages }}"),
               heldout_cache.key(tiny_model_dir, prompts, {**LOAD, "quant": "none"}, GEN, "{{ messages }}"),
               heldout_cache.key(tiny_model_dir, prompts, LOAD, {**GEN, "max_new_tokens": 9}, "{{ messages }}"),
               heldout_cache.key(tiny_model_dir, prompts, LOAD, GEN, "{{ other }}")]
    copy = tmp_path / "model"
    copy.mkdir()
    for f in tiny_model_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one byte of the last tensor differs
    weights.write_bytes(bytes(data))
    changed.append(heldout_cache.key(copy, prompts, LOAD, GEN, "{{ messages }}"))
    assert base not in changed and len(set(changed)) == len(changed)


def test_round_trip_and_a_damaged_entry_is_a_miss(tmp_path):
    heldout_cache.save("k1", ["a", "b"], 3.2, "run-1")
    assert heldout_cache.load("k1", 2)["answers"] == ["a", "b"] and heldout_cache.load("k1", 3) is None
    (heldout_cache.cache_dir() / "k2.json").write_text("{not json")
    assert heldout_cache.load("k2", 2) is None


def test_a_second_run_on_the_same_base_takes_the_answers_before_training_from_the_cache(
        tmp_path, tiny_model_dir, chat_jsonl):
    prompts = _prompts(tmp_path / "heldout.jsonl", "What is 2 plus 2?", "Say hello.")

    def one_run(name: str):
        recipe = tiny_recipe(tiny_model_dir, chat_jsonl, max_steps=2)
        recipe.data.heldout = str(prompts)
        run_dir = runs.create(recipe, tmp_path / name)
        rc, events = run_worker(run_dir)
        assert rc == 0, (run_dir / "worker.log").read_text()[-2000:]
        before = [e for e in events if e.type == "progress" and e.data.get("phase") == "sample-before"]
        logs = [e.data["message"] for e in events if e.type == "log"]
        return run_dir, before, logs

    first, before1, logs1 = one_run("a")
    second, before2, logs2 = one_run("b")
    assert not any("from the cache" in m for m in logs1) and not before1[-1].data.get("cached")
    assert any("from the cache" in m and first.name in m for m in logs2) and before2 == before2[-1:]
    assert before2[-1].data["cached"] is True
    assert any("each ending at" in m and "new tokens" in m for m in logs1)
    one, two = (json.loads((d / "eval.json").read_text()) for d in (first, second))
    answers = [[item["base"] for item in e["heldout"]["items"]] for e in (one, two)]
    assert answers[0] == answers[1] and len(answers[0]) == 2


def test_the_weights_are_keyed_by_every_byte_and_hashed_once_per_file(tmp_path, monkeypatch):
    """A merged copy whose changed tensor sits mid-file (same size, same first and last MiB) is another model; the
    hash of an unchanged file is remembered by its path, size and mtime, so no weight is read twice."""
    import os

    from studio import weights_hash

    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    weights = folder / "model.safetensors"
    data = bytearray(os.urandom(3 << 20))
    weights.write_bytes(bytes(data))
    first = heldout_cache.weights_fingerprint(folder)
    with monkeypatch.context() as m:
        m.setattr(weights_hash, "sha256_files", lambda *p: (_ for _ in ()).throw(AssertionError("read again")))
        assert heldout_cache.weights_fingerprint(folder) == first  # remembered
    data[(3 << 20) // 2] ^= 0xFF  # one byte in the middle
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(1, 1))
    assert heldout_cache.weights_fingerprint(folder) != first
