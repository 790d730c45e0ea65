"""The training worker as a real subprocess on a tiny random Llama, 4-bit QLoRA on the CPU."""
import json
import subprocess
from pathlib import Path

import pytest

from studio import runs
from studio.events import EventReader, encode_command, read_events
from studio.procs import worker_argv, worker_env
from studio.recipe import Recipe


def tiny_recipe(model: Path, data: Path, **train) -> Recipe:
    r = Recipe(name="tiny")
    r.model.name_or_path, r.data.path = str(model), str(data)
    r.data.val_fraction = 0.1
    r.lora.rank, r.lora.alpha = 8, 16
    r.train.micro_batch, r.train.grad_accum, r.train.seq_len, r.train.lr = 4, 1, 64, 5e-3
    r.train.warmup_ratio = 0.0
    for k, v in train.items():
        setattr(r.train, k, v)
    return r


def run_worker(run_dir: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(worker_argv("workers.train", run_dir), env=worker_env(), capture_output=True,
                          timeout=timeout)


def stdout_events(proc) -> list:
    reader = EventReader()
    events = reader.feed(proc.stdout) + reader.close()
    assert reader.malformed == 0, f"stdout carried non-events: {reader.last_malformed!r}"
    return events


def logits(model_dir: Path, adapter: Path | None):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    ids = torch.tensor([[5, 17, 42, 9, 77, 3]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_qlora_run_learns_saves_and_reloads(tiny_model_dir, chat_jsonl, tmp_path):
    import time

    from studio import speed
    from studio.fsutil import atomic_write_json

    probe = {"flops_per_s": 3e10, "seconds_per_layer_pass": 0.01, "seconds_per_element": 1e-8,
             "seconds_per_micro_batch": 0.002, "probe_version": speed.PROBE_VERSION, "measured_at": time.time()}
    speed._cache_file().parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(speed._cache_file(), probe)  # a probed CPU: the run records its speed against it
    run_dir = runs.create(tiny_recipe(tiny_model_dir, chat_jsonl, max_steps=12), tmp_path)
    proc = run_worker(run_dir)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    events = stdout_events(proc)
    types = [e.type for e in events]
    assert types[0] == "hello" and types[-1] == "done"
    assert events[0].data["versions"]["bitsandbytes"]
    losses = [e.data["loss"] for e in events if e.type == "metric" and "loss" in e.data]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses
    metric = next(e.data for e in events if e.type == "metric" and "loss" in e.data)
    assert {"step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_per_s"} <= set(metric)
    memory = [e.data for e in events if e.type == "memory"]
    assert memory and all(m["measured_peak"] >= m["allocated"] > 0 for m in memory)  # CPU: VmHWM over RSS
    last = memory[-1]
    assert last["peak_ratio"] == (round(last["measured_peak"] / last["predicted_peak"], 3) if last["predicted_peak"] else None)
    assert runs.read_state(run_dir)["memory_peak"] == {k: last[k] for k in ("device", "predicted_peak", "measured_peak",
                                                                             "peak_ratio")}
    # the record equals the stream
    assert [e.seq for e in read_events(run_dir / "events.jsonl")] == [e.seq for e in events]
    state = runs.read_state(run_dir)
    assert state["status"] == "finished" and state["step"] == 12
    assert json.loads((run_dir / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        str(tiny_model_dir.resolve())
    # the quantised model trained with 4-bit, but the adapter applies to the full-precision base too
    base, tuned = logits(tiny_model_dir, None), logits(tiny_model_dir, run_dir / "adapter")
    assert (base - tuned).abs().max() > 1e-3
    cal = speed.calibration("cpu", rates=speed.cpu_rates())  # the measured step time, for the next estimate
    assert cal is not None and cal["runs"] == 1 and cal["factor"] > 0


def test_stop_mid_run_leaves_a_loadable_adapter(tiny_model_dir, chat_jsonl, tmp_path):
    run_dir = runs.create(tiny_recipe(tiny_model_dir, chat_jsonl, max_steps=100000), tmp_path)
    proc = subprocess.Popen(worker_argv("workers.train", run_dir), env=worker_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    reader, events = EventReader(), []
    while chunk := proc.stdout.read1(65536):
        for ev in reader.feed(chunk):
            events.append(ev)
            if ev.type == "metric" and ev.data.get("step") == 3:
                proc.stdin.write(encode_command("stop"))
                proc.stdin.flush()
    assert proc.wait(timeout=120) == 0
    assert events[-1].type == "done" and events[-1].data["status"] == "stopped"
    assert 3 <= events[-1].data["step"] < 100
    assert runs.read_state(run_dir)["status"] == "stopped"
    logits(tiny_model_dir, run_dir / "adapter")  # loads


@pytest.mark.parametrize("breakage, kind, words", [
    ("missing-model", "config", "no-such-model"),
    ("bad-data", "data", "no usable rows"),
    ("bad-field", "config", "train.micro_batch"),
])
def test_bad_recipe_ends_with_an_error_event(tiny_model_dir, chat_jsonl, tmp_path, breakage, kind, words):
    r = tiny_recipe(tiny_model_dir, chat_jsonl, max_steps=2)
    if breakage == "missing-model":
        r.model.name_or_path = str(tmp_path / "no-such-model")
    elif breakage == "bad-data":
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"text": 1}\nnot json\n')
        r.data.path = str(bad)
    else:
        r.train.micro_batch = 0
    run_dir = runs.create(r, tmp_path)
    proc = run_worker(run_dir)
    assert proc.returncode == 1
    events = stdout_events(proc)
    err = events[-1]
    assert err.type == "error" and err.data["kind"] == kind, err
    assert words in err.data["message"] and err.data["hint"]
    assert b"Traceback" not in proc.stderr  # a user mistake is not a crash
    assert runs.read_state(run_dir)["status"] == "failed"
