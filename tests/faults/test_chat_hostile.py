"""chat, compare and eval on hostile inputs (issue 27): damaged adapters, huge prompts, catastrophic
patterns, prompts files that are not files, models that ask to run their own code, a killed CLI."""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio import runs
from studio.events import MAX_LINE_BYTES, EventReader, encode_command
from studio.procs import start_worker, worker_argv, worker_env
from studio.recipe import Recipe

CLI = [sys.executable, "-c", "import sys; from studio.cli import main; sys.exit(main())"]
CATASTROPHIC = r"^([\s\S]|[\s\S])*(?!)"  # 2**n steps on any answer of n characters: never finishes unbounded


def cli(*args, timeout=180, **kw):
    return subprocess.run([*CLI, *map(str, args)], env=worker_env(), capture_output=True, text=True,
                          timeout=timeout, check=False, **kw)


def make_run(model_dir: Path, root: Path) -> Path:
    from test_chat_worker import make_adapter

    recipe = Recipe(name="hostile")
    recipe.model.name_or_path = str(model_dir)
    recipe.quant.mode = "none"
    run_dir = runs.create(recipe, root)
    make_adapter(model_dir, run_dir / runs.ADAPTER, seed=5)
    return run_dir


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    return make_run(tiny_model_dir, tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from studio.inference import ChatEngine
    from workers.chat import _base_recipe

    return ChatEngine(tiny_model_dir, _base_recipe(None, str(tiny_model_dir)), device="cpu", quant="none")


def _damage(adapter: Path, how: str) -> str:
    """Damage a copy of an adapter folder; the words the refusal must contain."""
    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    if how == "peft_type":
        cfg["peft_type"] = "EVIL_TUNING"
        words = "adapter type 'EVIL_TUNING' is not one LoRA Studio loads"
    elif how == "list":
        cfg = [cfg]
        words = "adapter_config.json: not a readable JSON object"
    elif how == "rank":
        cfg["r"] = 2 ** 40
        words = f"r is {2 ** 40}, but the adapter's weights are at most"
    elif how == "pickle":
        (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
        words = "the adapter weights are a pickle file (adapter_model.bin)"
    else:
        cfg["init_lora_weights"] = "pissa"
        words = "init_lora_weights='pissa', which makes peft rewrite the base model's weights"
    cfg_path.write_text(json.dumps(cfg))
    return words


HOW = ("peft_type", "list", "rank", "pickle", "pissa")


@pytest.mark.parametrize("how", HOW)
def test_a_hostile_adapter_is_refused_saying_what_is_wrong(engine, tiny_run, tmp_path, how):
    from studio.inference import AdapterError

    adapter = shutil.copytree(tiny_run / runs.ADAPTER, tmp_path / "adapter")
    words = _damage(adapter, how)
    before = {n: p.detach().clone() for n, p in engine.base.named_parameters()}
    with pytest.raises(AdapterError) as err:
        engine.add_adapter(f"bad-{how}", adapter)
    assert words in str(err.value), str(err.value)
    assert f"bad-{how}" not in engine.adapters
    changed = [n for n, p in engine.base.named_parameters() if not bool((p == before[n]).all())]
    assert not changed, f"attaching a refused adapter changed the shared base: {changed[:3]}"


def test_chat_names_the_damaged_adapter_without_a_traceback(tiny_model_dir, tmp_path):
    run_dir = make_run(tiny_model_dir, tmp_path)
    words = _damage(run_dir / runs.ADAPTER, "peft_type")
    out = cli("chat", run_dir, "--prompt", "hi", "--max-new-tokens", "4")
    assert out.returncode == 2, out.stderr[-2000:]
    assert words in out.stderr and "Traceback" not in out.stderr
    assert "bug in LoRA Studio" not in out.stderr


def test_a_crashed_worker_is_reported_with_a_log_that_exists(tiny_model_dir):
    from studio.chat_client import ChatClient, WorkerFailed

    client = ChatClient(["--model", str(tiny_model_dir)])
    try:
        client.wait_ready()
        os.kill(client.proc.pid, signal.SIGKILL)
        with pytest.raises(WorkerFailed) as err:
            client.generate([{"role": "user", "content": "hi"}], settings={"max_new_tokens": 4})
    finally:
        client.close()
    text = str(err.value)
    assert "(log: " in text, text
    log = Path(text.rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.is_file(), f"the error names {log}, which does not exist"


def _events_until(proc, want, timeout_s: float) -> list:
    """Events from the worker until ``want(event)``; fails after ``timeout_s`` (the bug: no answer at all)."""
    reader, seen, end = EventReader(), [], time.monotonic() + timeout_s
    fd = proc.stdout.fileno()
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        assert chunk, f"the worker ended: {seen[-3:]}"
        for ev in reader.feed(chunk):
            seen.append(ev)
            if want(ev):
                return seen
    pytest.fail(f"no answer within {timeout_s} s; events: {[(e.type, e.data) for e in seen[-5:]]}")


def test_a_command_over_the_line_limit_is_answered_with_its_id(tiny_model_dir, tmp_path):
    proc = start_worker(worker_argv("workers.chat", "--model", tiny_model_dir), stderr=open(tmp_path / "w.log", "wb"))
    try:
        _events_until(proc, lambda ev: ev.type == "hello", 180)
        huge = encode_command("generate", id="big1", variant="base", settings={"max_new_tokens": 2},
                              messages=[{"role": "user", "content": "x" * (MAX_LINE_BYTES + 10)}])
        proc.stdin.write(huge + encode_command("generate", id="after", variant="base",
                                               messages=[{"role": "user", "content": "hi"}],
                                               settings={"max_new_tokens": 2}))
        proc.stdin.flush()
        seen = _events_until(proc, lambda ev: ev.type == "answer" and ev.data.get("id") == "after", 60)
        errors = [ev.data for ev in seen if ev.type == "error"]
        assert any(e.get("id") == "big1" and "MiB" in e.get("message", "") for e in errors), errors
    finally:
        proc.kill()
        proc.wait()


def test_the_client_refuses_a_huge_prompt_and_has_a_deadline(tiny_model_dir):
    from studio.chat_client import ChatClient, WorkerFailed

    client = ChatClient(["--model", str(tiny_model_dir)], deadline_s=5)
    try:
        client.wait_ready()
        t0 = time.monotonic()
        with pytest.raises(WorkerFailed, match="MiB"):
            client.generate([{"role": "user", "content": "y" * (MAX_LINE_BYTES + 1)}])
        os.kill(client.proc.pid, signal.SIGSTOP)  # a worker that never answers
        with pytest.raises(WorkerFailed, match="did not answer within 5 s"):
            client.generate([{"role": "user", "content": "hi"}], settings={"max_new_tokens": 4})
        assert time.monotonic() - t0 < 60
    finally:
        client.close()


def test_a_catastrophic_pattern_times_out_and_is_reported_not_scored():
    from studio import evalreport
    from studio.scoring import PatternTimeout, evaluate, matches

    slow = r"^([\w\s]|[\w\s])*$"
    answer = "word " * 30 + "!"
    t0 = time.monotonic()
    with pytest.raises(PatternTimeout):
        matches(answer, slow)
    rows = [{"messages": [{"role": "user", "content": "q"}], "pattern": p} for p in (slow, r"word")]
    result = evaluate([answer, answer], rows)
    assert result.timed_out == [1] and result.score == 1.0  # row 1 is neither a pass nor a fail
    report = evalreport.build({}, 0, 0, rows, {"base": [answer] * 2, "adapter": [answer] * 2}, "p.jsonl", True)
    h = report["heldout"]
    assert h["items"][0]["base_match"] is None and h["timed_out"] == {"base": [1], "adapter": [1]}
    assert "ran out of time" in evalreport.format_text(report)
    assert time.monotonic() - t0 < 30


def test_compare_reports_a_timed_out_pattern(tiny_run, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"messages": [{"role": "user", "content": "What is two plus two?"}],
                                   "pattern": CATASTROPHIC}) + "\n")
    try:
        out = cli("compare", "base", tiny_run, "--prompts", prompts, "--max-new-tokens", "40", "--json", timeout=150)
    except subprocess.TimeoutExpired:
        pytest.fail("compare spun on the pattern")
    assert out.returncode == 0, out.stderr[-2000:]
    item = json.loads(out.stdout)["items"][0]
    assert item["a"]["pattern_timed_out"] and item["a"]["match"] is None
    assert "ran out of time on row 1 (A)" in out.stderr


def _nested(path: Path) -> Path:
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    return path


@pytest.mark.parametrize("kind", ("nested", "folder", "fifo", "bad-utf8", "not-object", "too-many"))
def test_a_hostile_prompts_file_is_refused_naming_it(tmp_path, kind):
    from studio.scoring import MAX_PROMPTS, PromptFileError, load_prompts

    path = tmp_path / "prompts.jsonl"
    if kind == "nested":
        _nested(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "bad-utf8":
        path.write_bytes(b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}\n')
    elif kind == "not-object":
        path.write_text('[1, 2]\n')
    else:
        row = json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n"
        path.write_text(row * (MAX_PROMPTS + 1))
    t0 = time.monotonic()
    with pytest.raises(PromptFileError) as err:
        load_prompts(path)
    assert str(path) in str(err.value) and time.monotonic() - t0 < 20


@pytest.mark.parametrize("pattern, words", [
    ("(" * 1500 + "a" + ")" * 1500, "cannot be compiled (RecursionError"),
    ("(" * 5000 + "a" + ")" * 5000, "is 10,001 characters long"),
    ("|".join(f"w{i}" for i in range(100_000)), "characters long; a pattern may be at most 4,096"),
    ("(?:a{300}){1000}", "repeats too much"),
    ("a{" + "9" * 4000 + "}", "repeats too much"),
])
def test_a_pattern_that_cannot_be_compiled_in_bounds_is_refused_naming_its_row(tmp_path, pattern, words):
    """Compiling a pattern is not covered by the match timeout: 5,000 nested groups raised a
    RecursionError traceback, a 100,000-way alternation took 6.6 s per row, and counted repeats
    nested in each other are expanded by the regex package (a{1000}{1000}: 274 MiB)."""
    from studio.scoring import PromptFileError, load_prompts

    path = tmp_path / "prompts.jsonl"
    ok = json.dumps({"messages": [{"role": "user", "content": "q"}], "pattern": r"^\d{4}-\d{2}$"})
    path.write_text(ok + "\n" + json.dumps({"messages": [{"role": "user", "content": "q"}], "pattern": pattern}) + "\n")
    t0 = time.monotonic()
    with pytest.raises(PromptFileError, match=r"prompts\.jsonl:2: 'pattern' ") as err:
        load_prompts(path)
    assert words in str(err.value)
    assert time.monotonic() - t0 < 3


def test_compare_refuses_a_fifo_and_a_deeply_nested_file_without_a_traceback(tiny_run, tmp_path):
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)
    for path, words in ((fifo, "not a regular file"), (_nested(tmp_path / "deep.jsonl"), "nested too deep"),
                        (tmp_path, "a folder, not a file")):
        out = cli("compare", "base", tiny_run, "--prompts", path, timeout=60)
        assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr[-1500:]
    out = cli("eval", tiny_run, "--prompts", fifo, timeout=60)
    assert out.returncode == 2 and "not a regular file" in out.stderr and "Traceback" not in out.stderr


def test_chat_with_custom_code_in_the_model_folder_says_so(tiny_model_dir, tmp_path):
    model = shutil.copytree(tiny_model_dir, tmp_path / "custom")
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (model / "config.json").write_text(json.dumps(cfg))
    (model / "modeling_evil.py").write_text("raise SystemExit('custom code ran')\n")
    out = cli("chat", model, "--prompt", "hi", "--max-new-tokens", "2")
    assert out.returncode == 2, out.stderr[-1500:]
    assert "asks to run Python code shipped in its folder (modeling_evil.py)" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_chat_worker_ends_when_the_cli_is_killed_mid_answer(tiny_run):
    import psutil

    proc = subprocess.Popen([*CLI, "chat", str(tiny_run), "--max-new-tokens", "20000"], env=worker_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        end = time.monotonic() + 180
        worker = None
        while time.monotonic() < end and worker is None:
            kids = [p for p in psutil.Process(proc.pid).children(recursive=True) if "workers.chat" in " ".join(p.cmdline())]
            worker = kids[0] if kids else None
            time.sleep(0.5)
        assert worker is not None, "no chat worker started"
        proc.stdin.write(b"tell me a long story\n")
        proc.stdin.flush()
        os.set_blocking(proc.stdout.fileno(), True)
        assert proc.stdout.read(12)  # "you> model> ": the answer has begun
        time.sleep(3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        worker.wait(timeout=60)  # raises psutil.TimeoutExpired if the worker outlives its CLI
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_prompt_that_is_not_utf8_is_refused_as_such(tiny_run):
    out = cli("chat", tiny_run, "--prompt", os.fsdecode(b"hi \xff\xfe"), "--max-new-tokens", "2")
    assert out.returncode == 2 and "not UTF-8 text" in out.stderr and "Traceback" not in out.stderr, out.stderr[-1500:]
