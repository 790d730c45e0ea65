"""The registry, compare, sweeps, the queue and the trackers on run folders made by real tiny runs.

One sweep of two ranks (the real ``lora-studio sweep`` command, real training workers on a 2-layer
model) is shared by the tests of this module: it is the sweep test, and its two runs are what the
list, compare, metadata, TensorBoard and MLflow tests read.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train_worker import tiny_recipe

from studio import registry, runqueue, runs, sweep
from studio.cli import main as cli
from studio.procs import worker_env

ROOT = Path(__file__).resolve().parent.parent


def _cli_proc(args: list[str], home: Path, **kw) -> subprocess.Popen:
    env = worker_env({**os.environ, "LORA_STUDIO_HOME": str(home), "MLFLOW_ALLOW_FILE_STORE": "true",
                      "LORA_STUDIO_MLFLOW": "1"})  # conftest turns MLflow off for the other tests
    return subprocess.Popen([sys.executable, "-m", "studio.cli", *args], env=env, cwd=str(ROOT),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.fixture(scope="module")
def swept(tiny_model_dir, chat_jsonl, tmp_path_factory):
    """``lora-studio sweep RECIPE --rank 4,8`` on the tiny model: (runs folder, stdout, the two run folders)."""
    base = tmp_path_factory.mktemp("sweep")
    recipe = tiny_recipe(tiny_model_dir, chat_jsonl, max_steps=3)
    recipe.save(base / "tiny.json")
    root = base / "home" / "runs"  # the studio's own runs folder when LORA_STUDIO_HOME is base/home
    proc = _cli_proc(["sweep", str(base / "tiny.json"), "--rank", "4,8", "--runs-dir", str(root)], base / "home")
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err.decode()[-3000:]
    run_dirs = sorted(p for p in root.iterdir() if (p / runs.RECIPE).is_file())
    return root, out.decode(), run_dirs


def test_sweep_of_two_ranks_makes_two_runs_and_a_ranked_table(swept):
    root, out, run_dirs = swept
    assert len(run_dirs) == 2
    assert sorted(json.loads((d / runs.RECIPE).read_text())["lora"]["rank"] for d in run_dirs) == [4, 8]
    for d in run_dirs:
        assert runs.read_state(d)["status"] == "finished"
    assert "ranked by validation loss" in out
    ids = {d.name for d in run_dirs}
    table = [line for line in out.split("ranked by validation loss", 1)[1].splitlines() if line.split()[:1] and line.split()[0] in ids]
    assert len(table) == 2
    val = [registry.row(runs.summarize(d))["val_loss"] for d in run_dirs]
    best = run_dirs[val.index(min(val))].name
    assert table[0].startswith(best)  # lowest validation loss first
    entries = runqueue.read(root)
    assert [e["status"] for e in entries] == ["finished", "finished"] and entries[0]["sweep"] == entries[1]["sweep"]
    assert [r["id"] for r in sweep.ranked(entries[0]["sweep"], root)] == [table[0].split()[0], table[1].split()[0]]


def test_adapter_metadata_written_and_read_back(swept, tiny_model_dir, chat_jsonl):
    _, _, run_dirs = swept
    run_dir = run_dirs[0]
    meta = json.loads((run_dir / "adapter" / registry.META_FILE).read_text())
    assert meta == registry.read_metadata(run_dir / "adapter")
    state = runs.read_state(run_dir)
    assert meta["base_model"]["folder"] == str(tiny_model_dir.resolve())
    import hashlib

    weights = tiny_model_dir / "model.safetensors"
    assert meta["base_model"]["files"]["model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert meta["dataset"]["path"] == str(chat_jsonl) and meta["dataset"]["fingerprint"] == state["data_fingerprint"]
    assert len(meta["dataset"]["fingerprint"]) == 64
    assert meta["recipe"] == json.loads((run_dir / runs.RECIPE).read_text())
    m = meta["metrics"]
    assert m["final_loss"] == pytest.approx(state["last_loss"]) and m["best_loss"] <= m["final_loss"]
    assert m["final_eval_loss"] > 0 and m["mean_tokens_per_s"] > 0
    assert meta["eval"]["val_loss_adapter"] == pytest.approx(json.loads((run_dir / "eval.json").read_text())["val_loss"]["adapter"], abs=1e-5)
    assert meta["duration_s"] > 0 and meta["studio_version"] and meta["created"] and meta["status"] == "finished"
    # every run a calibration point: the worker's measured peak against the plan's prediction
    assert meta["memory"] == state["memory_peak"] and meta["memory"]["device"] == "cpu"
    assert meta["memory"]["peak_ratio"] == round(meta["memory"]["measured_peak"] / meta["memory"]["predicted_peak"], 3)


def test_runs_show_prints_the_measured_peak_over_the_prediction(swept, capsys):
    root, _, run_dirs = swept
    assert cli(["runs", "show", run_dirs[0].name, "--runs-dir", str(root)]) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    assert memory["measured_peak"] > 0 and memory["peak_ratio"] > 0


def test_runs_list_json_and_labels(swept, capsys):
    root, _, run_dirs = swept
    assert cli(["runs", "list", "--runs-dir", str(root), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["id"] for r in rows} == {d.name for d in run_dirs}
    assert all(isinstance(r["val_loss"], float) and r["rank"] in (4, 8) for r in rows)
    assert all(len(r["dataset_fingerprint"]) == 64 and len(r["base_model_sha256"]) == 64 for r in rows)
    target = run_dirs[1]
    assert cli(["runs", "rename", target.name, "the-best", "--runs-dir", str(root)]) == 0
    assert cli(["runs", "tag", "the-best", "keep", "--runs-dir", str(root)]) == 0
    assert cli(["runs", "note", target.name[:20] + target.name[20:], "rank 8 wins", "--runs-dir", str(root)]) == 0
    labels = registry.read_labels(target)
    assert labels["name"] == "the-best" and "keep" in labels["tags"] and labels["note"] == "rank 8 wins"
    assert registry.read_metadata(target)["labels"] == labels  # the adapter carries them
    capsys.readouterr()
    assert cli(["runs", "list", "--runs-dir", str(root), "--tag", "keep"]) == 0
    out = capsys.readouterr().out
    assert "the-best" in out and run_dirs[0].name not in out


def test_compare_shows_only_the_settings_that_differ(swept, capsys):
    root, _, run_dirs = swept
    a, b = run_dirs
    assert cli(["runs", "compare", a.name, b.name, "--runs-dir", str(root), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    ra = json.loads((a / runs.RECIPE).read_text())
    keys = {d["key"] for d in result["diff"]}
    assert keys == {"lora.rank", "lora.alpha"}  # the name differs too, but is no setting
    rank = next(d for d in result["diff"] if d["key"] == "lora.rank")
    assert rank["a"] == ra["lora"]["rank"] and rank["b"] != rank["a"]
    assert result["a"]["val_loss"] != result["b"]["val_loss"]
    assert cli(["runs", "compare", a.name, b.name, "--runs-dir", str(root)]) == 0
    text = capsys.readouterr().out
    assert "lora.rank" in text and "train.lr" not in text and "validation loss" in text


def test_delete_goes_to_the_trash_and_undo_restores(swept, capsys):
    root, _, run_dirs = swept
    victim = run_dirs[0]
    assert cli(["runs", "delete", victim.name, "--runs-dir", str(root)]) == 0
    assert not victim.exists() and victim.name not in {s.id for s in runs.list_runs(root)}
    assert [t["id"] for t in registry.trashed(root)] == [victim.name]
    assert cli(["runs", "restore", "--runs-dir", str(root)]) == 0
    assert (victim / "adapter" / registry.META_FILE).is_file() and registry.trashed(root) == []
    assert cli(["runs", "delete", "no-such-run", "--runs-dir", str(root)]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err


def test_tensorboard_event_files_read_by_tensorboard(swept):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, _, run_dirs = swept
    for d in run_dirs:
        acc = EventAccumulator(str(d / "tensorboard"))
        acc.Reload()
        tags = acc.Tags()["scalars"]
        assert "train/loss" in tags and "train/learning_rate" in tags, tags
        losses = [e.value for e in acc.Scalars("train/loss")]
        assert len(losses) == 3
        _, ours = registry.metric_series(d, "loss")
        assert losses == pytest.approx(ours, rel=1e-5)  # the same numbers as the run's own events


def test_mlflow_local_file_store(swept):
    mlflow = pytest.importorskip("mlflow")
    root, _, run_dirs = swept
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    assert not (root / "mlruns").exists()  # the runs folder holds runs; the store is in the data folder
    client = mlflow.tracking.MlflowClient(tracking_uri=(root.parent / "mlruns").resolve().as_uri())
    exp = client.get_experiment_by_name("lora-studio")
    found = client.search_runs([exp.experiment_id])
    names = {r.info.run_name for r in found}
    assert {d.name for d in run_dirs} <= names
    r = next(r for r in found if r.info.run_name == run_dirs[0].name)
    assert "loss" in r.data.metrics and r.data.params.get("learning_rate")


def test_metric_series_on_time_axis(swept):
    _, _, run_dirs = swept
    steps, _ = registry.metric_series(run_dirs[0], "loss", "step")
    secs, _ = registry.metric_series(run_dirs[0], "loss", "time")
    assert steps == [1.0, 2.0, 3.0] and secs == sorted(secs) and secs[0] >= 0


def test_sweep_refuses_when_a_variant_does_not_fit(tiny_model_dir, chat_jsonl, tmp_path, capsys):
    recipe = tiny_recipe(tiny_model_dir, chat_jsonl, max_steps=3)
    recipe.save(tmp_path / "r.json")
    code = cli(["sweep", str(tmp_path / "r.json"), "--rank", "4,8", "--budget-gib", "0.0001",
                "--runs-dir", str(tmp_path / "runs")])
    assert code == 2
    assert "none was started" in capsys.readouterr().err
    assert runqueue.read(tmp_path / "runs") == [] and runs.list_runs(tmp_path / "runs") == []


def test_trackers_warn_when_tensorboard_is_missing(tmp_path, monkeypatch):
    import importlib.util

    from studio.train import trackers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX", "mlflow") else real(name, *a))
    said: list[str] = []
    assert trackers.report_to(tmp_path / "run", said.append) == []
    assert len(said) == 1 and "tensorboard is not installed" in said[0]


@pytest.mark.platform
def test_queue_runs_in_order_and_survives_a_killed_runner(tiny_model_dir, chat_jsonl, tmp_path):
    root = tmp_path / "runs"
    for name in ("first", "second"):
        r = tiny_recipe(tiny_model_dir, chat_jsonl, max_steps=3)
        r.name = name
        runqueue.add(r, root)
    runner = _cli_proc(["queue", "run", "--runs-dir", str(root)], tmp_path / "home", start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill the runner while the first run trains
        entry = runqueue.read(root)[0]
        if entry.get("run") and runs.read_state(Path(entry["run"])).get("status") == "running":
            break
        time.sleep(0.2)
    else:
        pytest.fail("the first run never started")
    if os.name == "nt":  # no sessions there: TerminateProcess ends the runner only, as killpg does here
        runner.kill()
    else:
        os.killpg(runner.pid, signal.SIGKILL)
    runner.wait()
    assert [e["status"] for e in runqueue.read(root)] == ["running", "waiting"]
    assert runqueue.runner_pid(root) is None
    # a restart: a new runner adopts the first run (its worker outlived the runner), then runs the second
    again = _cli_proc(["queue", "run", "--runs-dir", str(root)], tmp_path / "home")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err.decode()[-3000:]
    entries = runqueue.read(root)
    assert [e["status"] for e in entries] == ["finished", "finished"]
    first, second = (Path(e["run"]) for e in entries)
    assert runs.read_state(first)["finished"] <= runs.read_state(second)["started"]
    assert json.loads((second / runs.RECIPE).read_text())["name"] == "second"
    assert {s.id for s in runs.list_runs(root)} == {first.name, second.name}  # normal runs


def test_runs_page_overlays_any_metric_diffs_settings_and_sorts(swept, qtbot, monkeypatch):
    from ui.pages.runs import RunsPage
    from ui.session import Session

    root, _, run_dirs = swept
    monkeypatch.setenv("LORA_STUDIO_HOME", str(root.parent))
    page = RunsPage(Session())
    qtbot.addWidget(page)
    page.show()
    page.on_enter()
    assert page.model.rowCount() == 2
    page.chart_view.metric_box.setCurrentIndex(page.chart_view.metric_box.findData("eval_loss"))
    page.table.selectAll()
    assert sorted(s.n for s in page.chart_view.chart.series.values()) == [1, 1]  # the Trainer's validation loss at the end
    page.chart_view.metric_box.setCurrentIndex(page.chart_view.metric_box.findData("learning_rate"))
    page.chart_view.axis_box.setCurrentText("time (s)")
    assert sorted(s.n for s in page.chart_view.chart.series.values()) == [3, 3]
    assert page.chart_view.chart.getPlotItem().getAxis("bottom").labelText == "seconds"
    diff = page.diff.toPlainText()
    assert "lora.rank" in diff and "lora.alpha" in diff and "train.lr" not in diff
    page.actions.sort_box.setCurrentText("validation loss (lowest first)")
    vals = [registry.row(s)["val_loss"] for s in page.summaries]
    assert vals == sorted(vals)
    page.table.selectRow(0)
    first = page.summaries[0].id
    page.actions.delete()
    assert first not in {s.id for s in page.summaries} and page.actions.undo_btn.isEnabled()
    page.actions.undo_delete()
    assert first in {s.id for s in page.summaries}
    assert "waiting" not in page.queue.item(0).text() and page.queue.count() == 2  # the sweep's entries


def test_plan_page_sweep_refuses_before_any_starts(tiny_model_dir, chat_jsonl, qtbot, monkeypatch, tmp_path):
    from studio import paths
    from ui.pages.plan import PlanPage
    from ui.session import Session

    session = Session()
    session.recipe = tiny_recipe(tiny_model_dir, chat_jsonl, max_steps=2)
    session.budget = 1 << 20  # 1 MiB: no variant fits
    page = PlanPage(session)
    qtbot.addWidget(page)
    with qtbot.waitSignal(page._sweep_cmd.sig_finished, timeout=60000):
        page.start_sweep("4,8")
    assert "none was started" in page.footer_fit.text()
    assert runqueue.read(paths.runs_dir()) == []
    page.add_to_queue()
    assert [e["status"] for e in runqueue.read(paths.runs_dir())] == ["waiting"]


def test_eval_rewrites_the_adapter_metadata(swept, tmp_path):
    from studio.procs import worker_argv

    _, _, run_dirs = swept
    run_dir = run_dirs[0]
    meta_file = run_dir / "adapter" / registry.META_FILE
    stale = json.loads(meta_file.read_text())
    stale["eval"] = stale["eval_report"] = None  # as if the run had been stopped before its evaluation
    meta_file.write_text(json.dumps(stale))
    proc = subprocess.run(worker_argv("workers.evaluate", run_dir), capture_output=True, timeout=240,
                          env=worker_env({**os.environ, "LORA_STUDIO_HOME": str(tmp_path)}))
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    meta = registry.read_metadata(run_dir)
    assert meta["eval"]["val_loss_adapter"] == pytest.approx(json.loads((run_dir / "eval.json").read_text())["val_loss"]["adapter"], abs=1e-5)
    assert meta["eval_report"]["heldout"]["total"] >= 1
