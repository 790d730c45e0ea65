"""Attack class: damaged or hostile run folders, queue.json, trash, sweep and cluster arguments.

Each test drives the real ``lora-studio`` command (``studio.cli.main`` in this process, or a
subprocess where a second process or a traceback on stderr is the point) on files damaged the way
a crash, a hand edit or an attacker leaves them. No training happens: the run folders are made by
``runs.create`` and the "workers" are processes whose command line is a worker's.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio import attach, registry, runqueue, runs
from studio.cli import main as cli
from studio.procs import worker_env
from studio.recipe import Recipe

ROOT = Path(__file__).resolve().parents[2]


def _run(root: Path, name: str) -> Path:
    r = Recipe(name=name)
    r.model.name_or_path, r.data.path = "/models/tiny", "/data/chat.jsonl"
    return runs.create(r, root)


def _edit(path: Path, change) -> None:
    raw = json.loads(path.read_text()) if path.exists() else {}
    change(raw)
    path.write_text(json.dumps(raw))


def _cli_proc(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "studio.cli", *args], cwd=str(ROOT), env=worker_env(),
                          capture_output=True, text=True, timeout=timeout)


def _sleeper(*argv: str) -> subprocess.Popen:
    """A live process whose command line ends with ``argv`` (what the liveness checks read)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", *argv])


# -- 11: one damaged run does not hide the others ----------------------------------------------------
DAMAGE = {
    "state.json step is a string": (runs.STATE, lambda s: s.update(step="abc"), "'step' is a string"),
    "state.json is a list": (runs.STATE, lambda s: None, "holds a list"),
    "state.json pid is a list": (runs.STATE, lambda s: s.update(status="running", pid=[1]), "'pid' is a list"),
    "recipe.json lora is a list": (runs.RECIPE, lambda r: r.update(lora=[1]), "'lora' is a list"),
    "recipe.json lr is a string": (runs.RECIPE, lambda r: r["train"].update(lr="fast"), "'train.lr' is a string"),
    "lora_studio.json metrics is a list": ("adapter/lora_studio.json", lambda m: m.update(metrics=[1]),
                                           "'metrics' is a list"),
    "lora_studio.json duration is a string": ("adapter/lora_studio.json", lambda m: m.update(duration_s="1h"),
                                              "'duration_s' is a string"),
    "labels.json tags is a string": (registry.LABELS, lambda lab: lab.update(tags="keep"), "'tags' is a string"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_run_with_a_mistyped_field_is_skipped_by_name_and_the_others_list(tmp_path, capsys, case):
    name, change, said = DAMAGE[case]
    root = tmp_path / "runs"
    good, other, bad = _run(root, "good"), _run(root, "other"), _run(root, "bad")
    path = bad / name
    path.parent.mkdir(exist_ok=True)
    if case == "state.json is a list":
        path.write_text("[1, 2]")
    else:
        _edit(path, change)
    assert cli(["runs", "list", "--runs-dir", str(root)]) == 0
    out, err = capsys.readouterr()
    assert good.name in out and other.name in out and bad.name not in out
    assert f"skipped a run with a damaged file: {path}: {said}" in err
    assert cli(["runs", "list", "--runs-dir", str(root), "--json"]) == 0
    assert {r["id"] for r in json.loads(capsys.readouterr().out)} == {good.name, other.name}
    assert cli(["runs", "compare", good.name, other.name, "--runs-dir", str(root)]) == 0
    capsys.readouterr()
    assert cli(["runs", "compare", good.name[:-2], bad.name, "--runs-dir", str(root)]) == 2  # named, not crashed
    assert said in capsys.readouterr().err


BIG = "9" * 5000  # past Python's int parsing limit (4,300 digits): json.loads raises a plain ValueError


def test_a_5000_digit_number_in_state_json_or_queue_json_is_damage_not_a_crash(tmp_path, capsys):
    root = tmp_path / "runs"
    good, bad = _run(root, "good"), _run(root, "bad")
    (bad / runs.STATE).write_text('{"status": "done", "step": ' + BIG + "}")
    assert cli(["runs", "list", "--runs-dir", str(root)]) == 0
    out, err = capsys.readouterr()
    assert good.name in out and bad.name not in out
    assert f"skipped a run with a damaged file: {bad / runs.STATE}: holds a value the studio never writes" in err
    (root / runqueue.QUEUE_FILE).write_text('{"version": 1, "entries": [], "n": ' + BIG + "}")
    proc = _cli_proc("queue", "list", "--runs-dir", str(root))
    assert proc.returncode == 0 and "is damaged" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_events_with_huge_numbers_are_bad_lines_and_the_metrics_still_read(tmp_path):
    from studio import events as ev

    run = _run(tmp_path / "runs", "r")
    good = [json.dumps({"v": 1, "type": "metric", "seq": i, "ts": 100.0 + i, "data": {"step": i, "loss": 2.0}})
            for i in (1, 2)]
    hostile = ['{"v": 1, "type": "metric", "seq": 3, "ts": 1, "data": {"step": ' + BIG + ', "loss": 1}}',
               '{"v": 1, "type": "metric", "seq": 4, "ts": 1, "data": {"step": ' + "9" * 400 + ', "loss": 1}}',
               '{"v": 1, "type": "metric", "seq": [5], "ts": 1, "data": {}}',
               '{"v": 1, "type": "metric", "seq": Infinity, "ts": 1, "data": {}}',
               '{"v": 1, "type": "metric", "seq": 6, "ts": ' + "9" * 400 + ', "data": {}}',
               '{"v": 1, "type": "metric", "seq": ' + "9" * 400 + ', "ts": 1, "data": {}}']
    (run / runs.EVENTS).write_text("\n".join(good[:1] + hostile + good[1:]) + "\n")
    for line in hostile:
        if "seq\": 4," not in line:
            with pytest.raises(ValueError):
                ev.decode(line)
    assert attach.last_seq(run / runs.EVENTS) == 4  # a resumed worker does not continue at 10**400
    assert registry.metric_series(run, "loss") == ([1.0, 2.0], [2.0, 2.0])  # the 400-digit step is left out


# -- 12: a damaged queue.json is reported, kept aside, and its readable entries kept -------------------
def _entry(i: int, **kw) -> dict:
    return {"id": f"q-{i}", "label": f"entry {i}", "recipe": Recipe(name=f"r{i}").to_dict(), "plan": None,
            "status": "waiting", "run": None, "sweep": None, "added": "", "started": None, "ended": None, **kw}


def test_a_mistyped_queue_entry_is_named_and_the_others_still_work(tmp_path, capsys):
    root = tmp_path / "runs"
    root.mkdir()
    queue = root / runqueue.QUEUE_FILE
    text = json.dumps({"version": 1, "entries": [_entry(1), _entry(2, status=["running"]), "junk", _entry(3)]})
    queue.write_text(text)
    assert cli(["queue", "list", "--runs-dir", str(root)]) == 0
    out, err = capsys.readouterr()
    assert "q-1" in out and "q-3" in out and "q-2" not in out
    assert "entry 2: 'status' is a list" in err and "entry 3: is str, expected an object" in err
    assert queue.read_text() == text  # listing never changes the file
    assert cli(["queue", "cancel", "q-3", "--runs-dir", str(root)]) == 0
    out, err = capsys.readouterr()
    aside = sorted(root.glob("queue.json.damaged-*"))
    assert len(aside) == 1 and aside[0].read_text() == text  # every entry is still on disk
    assert f"It is kept as {aside[0]}" in err
    assert [(e["id"], e["status"]) for e in runqueue.read(root)] == [("q-1", "waiting"), ("q-3", "cancelled")]
    assert cli(["queue", "clear", "--runs-dir", str(root)]) == 0
    assert [e["id"] for e in runqueue.read(root)] == ["q-1"]


@pytest.mark.parametrize("damage", ["cut short", "a folder", "a FIFO"])
def test_an_unreadable_queue_json_is_moved_aside_not_overwritten(tmp_path, capsys, damage):
    root = tmp_path / "runs"
    root.mkdir()
    queue = root / runqueue.QUEUE_FILE
    full = json.dumps({"version": 1, "entries": [_entry(1), _entry(2)]})
    if damage == "cut short":
        queue.write_text(full[: len(full) // 2])
    elif damage == "a folder":
        queue.mkdir()
    else:
        os.mkfifo(queue)  # a reader that opened it would wait for a writer forever
    r = Recipe(name="new")
    r.model.name_or_path, r.data.path = "/models/tiny", "/data/chat.jsonl"
    r.save(tmp_path / "new.json")
    proc = _cli_proc("queue", "list", "--runs-dir", str(root))
    assert proc.returncode == 0 and "is damaged" in proc.stderr and "(empty)" in proc.stdout
    proc = _cli_proc("queue", "add", str(tmp_path / "new.json"), "--runs-dir", str(root))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    aside = sorted(root.glob("queue.json.damaged-*"))
    assert len(aside) == 1 and f"It is kept as {aside[0]}" in proc.stderr
    if damage == "cut short":
        assert aside[0].read_text() == full[: len(full) // 2]  # the user's bytes, untouched
    assert [e["label"] for e in runqueue.read(root)] == ["new"]


def test_two_processes_adding_at_once_lose_no_entry(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    code = ("import sys; from studio import runqueue; from studio.recipe import Recipe\n"
            "for i in range(15):\n"
            "    r = Recipe(name=f'{sys.argv[2]}{i}'); r.model.name_or_path, r.data.path = '/m', '/d.jsonl'\n"
            "    runqueue.add(r, sys.argv[1])\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root), tag], cwd=str(ROOT), env=worker_env())
             for tag in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert sorted(e["label"] for e in runqueue.read(root)) == sorted(f"{t}{i}" for t in "ab" for i in range(15))


# -- 13: deleting .queue-runner.lock does not let a second runner in -------------------------------------
def test_deleting_the_runner_lock_file_does_not_start_a_second_runner(tmp_path):
    root = tmp_path / "runs"
    busy = _run(root, "busy")
    worker = _sleeper("workers.train", str(busy))  # the first entry's worker, still training
    runner = None
    try:
        runs.write_state(busy, status="running", pid=worker.pid)
        (root / runqueue.QUEUE_FILE).write_text(json.dumps(
            {"version": 1, "entries": [_entry(1, status="running", run=str(busy)), _entry(2)]}))
        runner = subprocess.Popen([sys.executable, "-m", "studio.cli", "queue", "run", "--runs-dir", str(root)],
                                  cwd=str(ROOT), env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while runqueue.runner_pid(root) != runner.pid:  # it waits for the first entry's worker
            assert time.time() < deadline and runner.poll() is None, runner.communicate()
            time.sleep(0.1)
        for p in root.glob(".queue*lock"):
            p.unlink()
        second = _cli_proc("queue", "run", "--runs-dir", str(root), timeout=60)
        assert second.returncode == 2 and "already works this queue" in second.stderr, second.stderr
        assert [e["status"] for e in runqueue.read(root)] == ["running", "waiting"]  # nothing claimed twice
        assert worker.poll() is None
    finally:
        worker.kill()
        worker.wait()
        if runner is not None:
            runner.kill()
            runner.wait()


# -- 14: a queue entry never trains outside the runs folder --------------------------------------------------
@pytest.mark.parametrize("how", ["dotdot", "symlink", "absolute"])
def test_a_queue_entry_whose_run_is_outside_the_runs_folder_is_refused(tmp_path, how):
    root = tmp_path / "runs"
    root.mkdir()
    outside = _run(tmp_path / "elsewhere", "victim")
    before = sorted(p.name for p in outside.iterdir())
    if how == "dotdot":
        run = f"{root}/../elsewhere/{outside.name}"
    elif how == "symlink":
        (root / "link").symlink_to(outside)
        run = str(root / "link")
    else:
        run = str(outside)
    (root / runqueue.QUEUE_FILE).write_text(json.dumps({"version": 1, "entries": [_entry(1, run=run)]}))
    proc = _cli_proc("queue", "run", "--runs-dir", str(root), timeout=120)
    assert "Traceback" not in proc.stderr and "not a folder of the runs folder" in proc.stderr, proc.stderr
    entry = runqueue.read(root)[0]
    assert entry["status"] == "failed" and "not a folder of the runs folder" in entry["error"]
    assert sorted(p.name for p in outside.iterdir()) == before  # no worker.log, no events: nothing ran there


# -- 15: a damaged .trashed.json -------------------------------------------------------------------------
@pytest.mark.parametrize("content", ['["a list"]', '{"when": 5}', "{cut", "a folder"])
def test_a_damaged_trash_record_does_not_break_trash_or_restore(tmp_path, capsys, content):
    root = tmp_path / "runs"
    run = _run(root, "deleted")
    assert cli(["runs", "delete", run.name, "--runs-dir", str(root)]) == 0
    marker = root / registry.TRASH / run.name / registry.TRASHED
    marker.unlink()
    if content == "a folder":
        marker.mkdir()
    else:
        marker.write_text(content)
    capsys.readouterr()
    assert cli(["runs", "trash", "--runs-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert run.name in out and "date unknown" in out
    assert cli(["runs", "restore", "--runs-dir", str(root)]) == 0
    assert (root / run.name / runs.RECIPE).is_file()


# -- 16: sweep --budget-gib ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e309", "0"])
def test_sweep_budget_is_checked_by_argparse(capsys, value):
    assert cli(["sweep", "--demo", "--rank", "8", f"--budget-gib={value}"]) == 2
    assert f"--budget-gib: '{value}': give a size in GiB greater than 0" in capsys.readouterr().err


# -- 17: cluster export -------------------------------------------------------------------------------------
def _recipe_file(tmp_path: Path, data: Path) -> Path:
    r = Recipe(name="c")
    r.model.name_or_path, r.data.path = "/models/tiny", str(data)
    r.save(tmp_path / "c.json")
    return tmp_path / "c.json"


def test_cluster_export_into_its_own_data_folder_is_refused_before_copying(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "chat.jsonl").write_text('{"text": "hello"}\n')
    recipe = _recipe_file(tmp_path, data)
    for out in (data / "out", data / "sub" / "deeper"):
        args = ["cluster", "export", str(recipe), "--nodes", "1", "--gpus-per-node", "1", "--out", str(out)]
        assert cli(args) == 2
        assert "is inside data.path" in capsys.readouterr().err
        assert sorted(p.name for p in data.iterdir()) == ["chat.jsonl"]  # nothing copied, nothing left
    bad = Recipe.load(recipe)
    bad.train.lr = -1.0
    bad.save(recipe)
    assert cli(["cluster", "export", str(recipe), "--nodes", "1", "--gpus-per-node", "1", "--out",
                str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()  # refused on the recipe: the retry is not refused for a leftover


def test_cluster_export_prints_commands_a_shell_reads_back(tmp_path, capsys):
    data = tmp_path / "my data"
    data.mkdir()
    (data / "chat.jsonl").write_text('{"text": "hello"}\n')
    out = tmp_path / "it's a \"cluster\" folder"
    assert cli(["cluster", "export", str(_recipe_file(tmp_path, data)), "--nodes", "1", "--gpus-per-node", "1",
                "--out", str(out)]) == 0
    lines = dict(line.split(":", 1) for line in capsys.readouterr().out.splitlines())
    assert shlex.split(lines["SLURM"])[:2] == ["cd", str(out)]
    assert shlex.split(lines["one node here"])[2] == str(out / "run.sh")
    run_dir = next((out / "runs").iterdir())
    assert shlex.split(lines["follow it"]) == ["lora-studio", "attach", str(run_dir)]


# -- 20: terminal escape sequences in run-folder text ----------------------------------------------------
def test_runs_list_prints_no_escape_sequences_from_disk(tmp_path, capsys):
    root = tmp_path / "runs"
    run = _run(root, "ok")
    hostile = root / "evil\nrow\x1b]0;title\x07"
    run.rename(hostile)
    (hostile / registry.LABELS).write_text(json.dumps(
        {"name": "\x1b[2J\x1b[31mred", "tags": ["t\u202eag"], "note": "\x9b31m"}))
    _edit(hostile / runs.RECIPE, lambda r: r["model"].update(name_or_path="m\x1b[5m"))
    for args in (["runs", "list"], ["runs", "list", "--json"], ["runs", "show", str(hostile)],
                 ["runs", "compare", str(hostile), str(_run(root, "b")), "--json"]):
        assert cli([*args, "--runs-dir", str(root)]) == 0
        out = capsys.readouterr().out
        assert not any(ch in out for ch in "\x1b\x07\x9b\u202e"), args
    assert cli(["runs", "list", "--runs-dir", str(root)]) == 0
    out = capsys.readouterr().out
    assert "evil\\nrow\\x1b]0;title\\x07" in out and "\\x1b[2J\\x1b[31mred" in out
    assert len(out.splitlines()) == 3  # the header and two runs: a newline in a name forges no row
    assert cli(["runs", "list", "--runs-dir", str(root), "--json"]) == 0
    names = {r["name"] for r in json.loads(capsys.readouterr().out)}
    assert "\x1b[2J\x1b[31mred" in names  # --json keeps the value; only its spelling is escaped


# -- 21: attach --stop signals only this run's own worker ------------------------------------------------
def test_attach_stop_does_not_signal_another_runs_worker(tmp_path):
    root = tmp_path / "runs"
    mine = _run(root, "run")
    theirs = root / (mine.name + "-2")  # the other run's folder name contains this one's
    theirs.mkdir()
    other = _sleeper("workers.train", str(theirs))
    try:
        runs.write_state(mine, status="running", pid=other.pid)  # a stale pid, reused by the other run's worker
        proc = _cli_proc("attach", str(mine), "--stop")
        assert proc.returncode == 2 and "no worker is training it" in proc.stderr, proc.stderr
        time.sleep(0.5)
        assert other.poll() is None  # not signalled
    finally:
        other.kill()
        other.wait()


def test_a_reused_pid_with_the_same_command_line_is_not_the_worker(tmp_path):
    run = _run(tmp_path / "runs", "run")
    proc = _sleeper("workers.train", str(run))
    try:
        runs.write_state(run, status="running", pid=proc.pid)
        assert attach.worker_pid(run) == proc.pid  # the start time recorded with the pid matches
        state = runs.read_state(run)
        assert state["pid_created"] == pytest.approx(attach.psutil.Process(proc.pid).create_time())
        runs.write_state(run, pid_created=state["pid_created"] - 3600)  # the worker that wrote it started earlier
        assert attach.worker_pid(run) is None and attach.request_stop(run) is False
        del_state = runs.read_state(run)
        del del_state["pid_created"]
        (run / runs.STATE).write_text(json.dumps(del_state))  # a run from before pid_created: still attachable
        assert attach.worker_pid(run) == proc.pid
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_renaming_a_run_with_damaged_labels_writes_sound_ones(tmp_path, capsys):
    root = tmp_path / "runs"
    run = _run(root, "run")
    (run / registry.LABELS).write_text(json.dumps({"name": "kept", "tags": "not-a-list", "note": 5}))
    assert registry.read_labels(run) == {"name": "kept", "tags": [], "note": ""}  # the window still reads it
    assert cli(["runs", "list", "--runs-dir", str(root)]) == 0
    assert "'tags' is a string" in capsys.readouterr().err
    assert cli(["runs", "tag", run.name, "fixed", "--runs-dir", str(root)]) == 0
    assert registry.read_labels(run, strict=True) == {"name": "kept", "tags": ["fixed"], "note": ""}
    assert cli(["runs", "list", "--runs-dir", str(root)]) == 0
    assert run.name in capsys.readouterr().out


def test_the_runs_page_names_damaged_runs_and_shows_the_rest(tmp_path, qtbot, monkeypatch):
    """The window drops nothing in silence either: a damaged run is counted and named in the tooltip, and a
    lora_studio.json with odd types below the checked fields does not break the page."""
    from studio import paths
    from ui.pages.runs import RunsPage
    from ui.session import Session

    root = paths.runs_dir()
    good, odd, bad = _run(root, "good"), _run(root, "odd"), _run(root, "bad")
    (bad / runs.STATE).write_text("[1, 2]")
    meta = odd / "adapter" / "lora_studio.json"
    meta.parent.mkdir(exist_ok=True)
    meta.write_text(json.dumps({"recipe": [1], "duration_s": 61}))
    page = RunsPage(Session())
    qtbot.addWidget(page)
    page.show()
    page.on_enter()
    assert {s.id for s in page.summaries} == {good.name, odd.name}
    assert "1 damaged run(s) not shown" in page.count_label.text()
    assert str(bad / runs.STATE) in page.count_label.toolTip()
