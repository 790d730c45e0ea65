"""Several processes under torchrun, on the CPU with the gloo backend (the code path of several GPUs).

Each test starts real process groups (torchrun and two ranks) on the tiny model, so they are
marked slow; together they take about a minute on two cores.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from studio import launch, runs
from studio.events import EventReader, read_events
from studio.recipe import Recipe

# Alone, after the rest (make test): a two-rank run beside another xdist worker on two cores once hung past its
# timeout (test_kill_one_rank_ends_all_and_resume_continues_then_stops); each rank is a whole training process.
pytestmark = [pytest.mark.slow, pytest.mark.solo]


def recipe(model: Path, data: Path, nproc: int, micro_batch: int, **train) -> Recipe:
    """fp32, no dropout, no gradient checkpointing: two ranks and one process compute the same sums."""
    r = Recipe(name=f"n{nproc}")
    r.model.name_or_path, r.data.path = str(model), str(data)
    r.data.val_fraction = 0.0
    r.quant.mode = "none"
    r.lora.rank, r.lora.alpha, r.lora.dropout = 8, 16, 0.0
    t = r.train
    t.micro_batch, t.grad_accum, t.seq_len, t.lr, t.warmup_ratio, t.grad_ckpt = micro_batch, 1, 64, 5e-3, 0.0, False
    t.max_steps, t.nproc = 4, nproc
    for k, v in train.items():
        setattr(t, k, v)
    return r


def run(run_dir: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """torchrun on ``run_dir``; past ``timeout``, every process still alive prints its threads' stacks
    (workers.dump_stacks_on_signal) into the failure, and the tree is killed."""
    argv = launch.train_argv(run_dir, *args)
    proc = subprocess.Popen(argv, env=launch.train_env(run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        alive = [(p.pid, " ".join(p.cmdline()[-3:])) for p in tree if p.is_running()]
        for p in tree[1:]:  # the ranks (torchrun itself would end on the signal, taking them with it)
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGUSR1)
        time.sleep(3)
        for p in tree:
            with contextlib.suppress(psutil.Error):
                p.kill()
        out, err = proc.communicate()
        events = events_of(out) if out else []
        last = f"{events[-1].type} {str(events[-1].data)[:200]}" if events else "none"
        raise AssertionError(f"torchrun did not end in {timeout:.0f} s; alive: {alive}; last event: {last}; "
                             f"stderr (stacks of the live processes at the end):\n{err.decode(errors='replace')[-12000:]}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def events_of(stdout: bytes) -> list:
    reader = EventReader()
    events = reader.feed(stdout) + reader.close()
    assert reader.malformed == 0, f"stdout carried non-events: {reader.last_malformed!r}"
    return events


def losses(events: list) -> list[float]:
    return [e.data["loss"] for e in events if e.type == "metric" and "loss" in e.data]


def gone(pids: list[int], within: float = 20.0) -> bool:
    end = time.time() + within
    while time.time() < end:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
            return True
        time.sleep(0.2)
    return False


def test_ddp_two_processes_match_one_process(tiny_model_dir, chat_jsonl, tmp_path):
    two = runs.create(recipe(tiny_model_dir, chat_jsonl, nproc=2, micro_batch=4, save_steps=2), tmp_path)
    argv = launch.train_argv(two)
    assert argv[1:3] == ["-m", "torch.distributed.run"] and "--nproc-per-node" in argv
    proc = run(two)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    events = events_of(proc.stdout)
    assert [e.type for e in events].count("hello") == 1  # one stream: rank 0's
    hello = events[0].data
    assert hello["world_size"] == 2 and [r["rank"] for r in hello["ranks"]] == [0, 1]
    assert events[-1].type == "done" and events[-1].data["status"] == "finished"
    assert [e.seq for e in read_events(two / "events.jsonl")] == [e.seq for e in events]
    split = next(e.data for e in events if e.type == "log" and "share the effective batch" in e.data["message"])
    assert (split["micro_batch"], split["grad_accum"]) == (2, 1)  # two processes share the batch of 4
    memory = next(e.data for e in events if e.type == "memory")
    assert [g["rank"] for g in memory["gpus"]] == [0, 1] and all(g["allocated"] > 0 for g in memory["gpus"])
    state = runs.read_state(two)
    assert state["status"] == "finished" and state["world_size"] == 2 and state["pid"] is None
    assert (two / "adapter" / "adapter_model.safetensors").is_file()

    one = runs.create(recipe(tiny_model_dir, chat_jsonl, nproc=1, micro_batch=4), tmp_path)  # the same recipe
    assert launch.train_argv(one)[1:3] == ["-m", "workers.train"]
    single = run(one)
    assert single.returncode == 0, single.stderr.decode()[-3000:]
    a, b = losses(events), losses(events_of(single.stdout))
    assert len(a) == len(b) == 4
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4, (a, b)

    # Bit-exact resume with the same two processes: from step 2, steps 3 and 4 repeat exactly.
    import shutil

    shutil.rmtree(two / "checkpoints" / "step-4")
    again = run(two, "--resume")
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    resumed = events_of(again.stdout)
    assert any(e.data.get("resumed_from_step") == 2 for e in resumed)
    assert losses(resumed) == a[2:], (losses(resumed), a)


def _start(run_dir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(launch.train_argv(run_dir, *args), env=launch.train_env(run_dir),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(run_dir / "worker.log", "ab"),
                            start_new_session=True)


def test_kill_one_rank_ends_all_and_resume_continues_then_stops(tiny_model_dir, chat_jsonl, tmp_path):
    run_dir = runs.create(recipe(tiny_model_dir, chat_jsonl, nproc=2, micro_batch=2, max_steps=1000,
                                 save_steps=2), tmp_path)
    proc = _start(run_dir)
    reader, ranks = EventReader(), []
    while chunk := proc.stdout.read1(65536):
        for ev in reader.feed(chunk):
            if ev.type == "hello":
                ranks = [r["pid"] for r in ev.data["ranks"]]
            if ev.type == "checkpoint" and ev.data["step"] == 2:
                os.kill(ranks[1], signal.SIGKILL)  # one rank dies: torchrun must end the other
    assert proc.wait(timeout=60) != 0
    assert gone([proc.pid, *ranks]), "a rank outlived the run"
    assert (run_dir / "checkpoints" / "step-2" / "manifest.json").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints" / "step-2").glob("rng_state_*.pth")) == \
        ["rng_state_0.pth", "rng_state_1.pth"]

    proc = _start(run_dir, "--resume")  # the same two processes continue from step 2
    reader, events, stopped_at = EventReader(), [], None
    while chunk := proc.stdout.read1(65536):
        for ev in reader.feed(chunk):
            events.append(ev)
            if ev.type == "hello":
                ranks = [r["pid"] for r in ev.data["ranks"]]
            if ev.type == "metric" and ev.data.get("step") == 3 and stopped_at is None:
                runs.send_command(run_dir, "stop")  # the inbox: rank 0 reads it, every rank stops
                stopped_at = 3
    assert proc.wait(timeout=60) == 0
    assert gone([proc.pid, *ranks])
    assert any(e.data.get("resumed_from_step") == 2 for e in events), [e.type + str(e.data)[:200] for e in events]
    assert min(e.data["step"] for e in events if e.type == "metric" and "loss" in e.data) == 3
    assert not any(e.type == "warning" for e in events), [e.data for e in events if e.type == "warning"]
    assert events[-1].type == "done" and events[-1].data["status"] == "stopped"
    assert runs.read_state(run_dir)["status"] == "stopped"


def test_sigkill_of_torchrun_leaves_no_rank_behind(tiny_model_dir, chat_jsonl, tmp_path):
    run_dir = runs.create(recipe(tiny_model_dir, chat_jsonl, nproc=2, micro_batch=2, max_steps=1000), tmp_path)
    proc = _start(run_dir)
    reader, ranks = EventReader(), []
    while not ranks and (chunk := proc.stdout.read1(65536)):
        ranks = [r["pid"] for ev in reader.feed(chunk) if ev.type == "hello" for r in ev.data["ranks"]]
    os.kill(proc.pid, signal.SIGKILL)  # only the launcher: its ranks must not keep running
    proc.wait(timeout=30)
    assert gone(ranks), "ranks outlived a killed torchrun"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cluster_export_scripts_check_and_run_locally(tiny_model_dir, chat_jsonl, tmp_path):
    import sys

    from studio import cluster
    from studio.procs import worker_env

    source = runs.create(recipe(tiny_model_dir, chat_jsonl, nproc=1, micro_batch=2, max_steps=2), tmp_path / "runs")
    done = cluster.export(source, tmp_path / "cluster", nodes=3, gpus_per_node=4)
    for script in (done.run_sh, done.sbatch):
        subprocess.run(["bash", "-n", str(script)], check=True)
    assert "#SBATCH --nodes=3" in done.sbatch.read_text() and "--gpus-per-node=4" in done.sbatch.read_text()
    assert "--nnodes 3 --nproc-per-node 4" in done.torchrun
    assert (done.folder / "data" / chat_jsonl.name).read_bytes() == chat_jsonl.read_bytes()  # a copy
    assert Recipe.load(done.run_dir / "recipe.json").data.path == f"data/{chat_jsonl.name}"
    env = {**worker_env(), "LORA_STUDIO_PYTHON": sys.executable, "NNODES": "1", "NPROC_PER_NODE": "2",
           "MASTER_PORT": str(_free_port())}
    proc = subprocess.run([str(done.run_sh)], env=env, capture_output=True, timeout=240)
    assert proc.returncode == 0, (done.run_dir / f"worker-{os.uname().nodename}.log").read_text()[-3000:]
    events = events_of(proc.stdout)
    assert events[0].data["world_size"] == 2 and events[-1].data["status"] == "finished"
    assert runs.read_state(done.run_dir)["status"] == "finished"
    assert (done.run_dir / "adapter" / "adapter_config.json").is_file()


def test_a_run_on_another_host_is_followed_through_its_state(tmp_path):
    from studio import attach

    run_dir = runs.create(Recipe(name="remote"), tmp_path)
    runs.write_state(run_dir, status="running", pid=1, host="gpu-node-07")
    assert attach.worker_pid(run_dir) is None and attach.remote_worker(run_dir) == "gpu-node-07"
    runs.write_state(run_dir, status="finished")
    assert attach.remote_worker(run_dir) is None


@pytest.mark.skipif("not __import__('torch').cuda.device_count() >= 2",
                    reason="FSDP needs two GPUs: accelerate applies its FSDP plugin to accelerator process groups "
                           "only, so on the CPU (gloo) the processes run DDP and the worker says so")
@pytest.mark.parametrize("quant", ["none", "4bit"])
def test_fsdp_two_gpus_shards_and_saves_one_adapter(tiny_model_dir, chat_jsonl, tmp_path, quant):
    r = recipe(tiny_model_dir, chat_jsonl, nproc=2, micro_batch=2, strategy="fsdp", save_steps=2)
    r.quant.mode = quant
    run_dir = runs.create(r, tmp_path)
    proc = run(run_dir)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    events = events_of(proc.stdout)
    assert any(e.data.get("sharded_modules", 0) > 0 for e in events if e.type == "log")
    assert events[-1].data["status"] == "finished" and len(losses(events)) == 4
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run_dir / "adapter" / "training_args.bin").exists()


def test_fsdp_arguments_and_4bit_storage(monkeypatch):
    import torch

    from studio.train.arguments import distributed_arguments
    from studio.train.loading import quantization_config

    assert distributed_arguments("single", "cuda") == {}
    assert distributed_arguments("ddp", "cpu")["ddp_backend"] == "gloo"
    fsdp = distributed_arguments("fsdp", "cuda")
    assert fsdp["fsdp"] is True and fsdp["fsdp_config"]["version"] == 2 and fsdp["ddp_backend"] == "nccl"
    r = Recipe()
    r.quant.mode, r.train.strategy = "4bit", "fsdp"
    assert quantization_config(r, torch.bfloat16).bnb_4bit_quant_storage in ("uint8", torch.uint8)  # one process
    monkeypatch.setenv("WORLD_SIZE", "2")
    storage = quantization_config(r, torch.bfloat16).bnb_4bit_quant_storage
    assert storage in (torch.bfloat16, "bfloat16")  # FSDP shards one dtype: 4-bit blocks stored as bf16


def test_out_of_memory_on_several_processes_steps_all_down_at_the_resume(tiny_model_dir, chat_jsonl, tmp_path):
    from studio.train.recovery import EFFECTIVE_RECIPE

    run_dir = runs.create(recipe(tiny_model_dir, chat_jsonl, nproc=2, micro_batch=4, save_steps=2), tmp_path)
    env = {**launch.train_env(run_dir), "LORA_STUDIO_TEST_FAULT": "oom@step=3"}
    proc = subprocess.run(launch.train_argv(run_dir), env=env, capture_output=True, timeout=240)
    assert proc.returncode != 0
    error = next(e.data for e in events_of(proc.stdout) if e.type == "error")
    assert error["kind"] == "oom" and "every process stopped" in error["message"] and "resume" in error["hint"]
    stepped = Recipe.load(run_dir / EFFECTIVE_RECIPE).train
    # each process had micro-batch 2 of the 4; it steps down to 1 x 2, recorded for all: 2 x 2 of the whole batch
    assert (stepped.micro_batch, stepped.grad_accum, stepped.nproc) == (2, 2, 2)
    assert launch.train_argv(run_dir, "--resume")[1:3] == ["-m", "torch.distributed.run"]
