"""eval.json: written at the end of a training run and by `lora-studio eval`, equal to a direct computation."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from test_train_worker import tiny_recipe

from studio import evalreport, runs
from studio.events import EventReader
from studio.procs import worker_argv, worker_env

# `python -m studio.cli` would make studio.cli.UserError a second class (__main__'s); call main() as the script does.
CLI = [sys.executable, "-c", "import sys; from studio.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    path = tmp_path_factory.mktemp("heldout") / "heldout.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"What is {a} plus {b}?"}], "pattern": r"^ANSWER: \d+"}
            for a, b in ((1, 2), (3, 4), (5, 1))]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained_run(tiny_model_dir, chat_jsonl, heldout, tmp_path_factory):
    recipe = tiny_recipe(tiny_model_dir, chat_jsonl, max_steps=8)
    recipe.quant.mode = "none"  # 16-bit (fp32 on the CPU): the direct computation below loads it the same way
    recipe.data.heldout = str(heldout)
    run_dir = runs.create(recipe, tmp_path_factory.mktemp("runs"))
    proc = subprocess.run(worker_argv("workers.train", run_dir), env=worker_env(), capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    reader = EventReader()
    events = reader.feed(proc.stdout) + reader.close()
    return run_dir, recipe, events


def direct_loss(model_dir, adapter, recipe) -> tuple[float, int]:
    """Token-weighted mean loss of the validation split, straight from transformers' own loss."""
    import torch
    from transformers import AutoModelForCausalLM

    from studio.train import dataset, loading

    tok = loading.load_tokenizer(model_dir, recipe)
    data = dataset.build(tok, recipe)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    total, count = 0.0, 0
    for row in data.val:
        ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
        n = int((labels[:, 1:] != -100).sum())
        with torch.no_grad():
            total += float(model(input_ids=ids, labels=labels).loss) * n
        count += n
    return total / count, count


def test_training_writes_eval_json_that_matches_transformers(trained_run, tiny_model_dir):
    run_dir, recipe, events = trained_run
    report = evalreport.read(run_dir)
    assert report is not None, "no eval.json after a finished run"
    base, n = direct_loss(tiny_model_dir, None, recipe)
    adapter, _ = direct_loss(tiny_model_dir, run_dir / runs.ADAPTER, recipe)
    assert report["val_tokens"] == n
    assert report["val_loss"]["base"] == pytest.approx(base, rel=1e-4)
    assert report["val_loss"]["adapter"] == pytest.approx(adapter, rel=1e-4)
    assert report["perplexity"]["adapter"] == pytest.approx(math.exp(adapter), rel=1e-3)
    assert report["val_loss"]["adapter"] < report["val_loss"]["base"]  # it learned the format
    h = report["heldout"]
    assert h["scored"] and h["total"] == 3 and len(h["items"]) == 3
    assert all(isinstance(it["base"], str) and isinstance(it["adapter"], str) for it in h["items"])
    assert h["matched"]["adapter"] == sum(it["adapter_match"] for it in h["items"])
    # The worker told the window: per-prompt progress (not just 0 then all) and the summary at the end.
    sample = [e.data for e in events if e.type == "progress" and e.data.get("phase") == "sample-after"]
    assert sample[0]["done"] == 0 and sample[-1]["done"] == 3
    assert all("eta_s" in d for d in sample)
    metric = next(e.data for e in events if e.type == "metric" and "eval_report" in e.data)
    assert metric["val_loss_adapter"] == report["val_loss"]["adapter"]
    assert "held-out format score" in metric["eval_text"]
    done = events[-1]
    assert done.type == "done" and done.data["eval"]["score_total"] == 3


def test_eval_command_recomputes_the_same_numbers(trained_run, heldout, tmp_path):
    run_dir, _recipe, _ = trained_run
    before = evalreport.read(run_dir)
    (run_dir / evalreport.EVAL_FILE).unlink()
    proc = subprocess.run([*CLI, "eval", str(run_dir), "--prompts", str(heldout),
                           "--json"], env=worker_env(), capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = json.loads(proc.stdout)
    assert set(out["val_loss"]) == {"base", "adapter"} and set(out["perplexity"]) == {"base", "adapter"}
    assert out["val_loss"]["base"] == pytest.approx(before["val_loss"]["base"], rel=1e-4)
    assert out["val_loss"]["adapter"] == pytest.approx(before["val_loss"]["adapter"], rel=1e-4)
    assert [it["adapter"] for it in out["heldout"]["items"]] == [it["adapter"] for it in before["heldout"]["items"]]
    assert evalreport.read(run_dir) == out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": "hi"}\n')
    proc = subprocess.run([*CLI, "eval", str(run_dir), "--prompts", str(bad)],
                          env=worker_env(), capture_output=True, timeout=60, check=False)
    assert proc.returncode == 2 and b"bad.jsonl:1" in proc.stderr and b"Traceback" not in proc.stderr


def test_a_stop_during_training_skips_the_heldout_answers(tiny_model_dir, chat_jsonl, heldout, tmp_path):
    import time

    from studio.events import encode_command
    from studio.procs import start_worker

    recipe = tiny_recipe(tiny_model_dir, chat_jsonl, max_steps=500)
    recipe.data.heldout = str(heldout)
    run_dir = runs.create(recipe, tmp_path)
    proc = start_worker(worker_argv("workers.train", run_dir), stderr=subprocess.DEVNULL, env=worker_env())
    reader, events = EventReader(), []
    try:
        while not any(e.type == "progress" and e.data.get("phase") == "train" and e.data.get("done", 0) >= 2
                      for e in events):
            chunk = proc.stdout.read1(65536)
            assert chunk, "the worker ended before training"
            events += reader.feed(chunk)
        t0 = time.monotonic()
        proc.stdin.write(encode_command("stop"))
        proc.stdin.flush()
        events += reader.feed(proc.stdout.read()) + reader.close()
        assert proc.wait(timeout=60) == 0
        assert time.monotonic() - t0 < 30
    finally:
        if proc.poll() is None:
            proc.kill()
    assert events[-1].type == "done" and events[-1].data["status"] == "stopped"
    assert not any(e.type == "progress" and e.data.get("phase") == "sample-after" for e in events)
    assert (run_dir / runs.ADAPTER / "adapter_config.json").is_file()
    assert evalreport.read(run_dir) is None  # 'lora-studio eval RUN' writes it when asked
    assert any("lora-studio eval" in str(e.data.get("message", "")) for e in events if e.type == "log")


def test_validation_prompts_longer_than_the_runs_length_are_not_answered(tmp_path):
    """The fallback answers (no held-out file) prefill validation conversations in one batch: one longer than the
    run's seq_len would take the worker past the memory the planner fitted (issue 36, at 512 tokens: 1.25x)."""
    import tiny

    from studio.scoring import prompt_length

    tok = tiny.make_tokenizer(tmp_path / "tok")
    short = {"messages": [{"role": "user", "content": "hi"}], "pattern": None, "reference": None}
    long = {"messages": [{"role": "user", "content": "word " * 400}], "pattern": None, "reference": None}
    limit = prompt_length(tok, short["messages"]) + 5
    assert prompt_length(tok, long["messages"]) > limit
    kept, longer = evalreport.within_length(tok, [long, short, long], limit)
    assert kept == [short] and longer == 2
    assert evalreport.within_length(tok, [short], limit) == ([short], 0)
