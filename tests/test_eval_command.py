"""`lora-studio eval`'s own handling of what its worker leaves behind (the worker itself: test_eval_report.py)."""
from __future__ import annotations

import argparse
import json

from studio import driver, evalreport, runs
from studio.commands import eval as eval_command
from studio.events import DONE, Event


def test_a_report_gone_after_the_worker_finished_is_an_error_not_a_crash(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / runs.RECIPE).write_text(json.dumps({"model": {"name_or_path": "m"}}), encoding="utf-8")

    def worker_done_then_run_deleted(argv, log, on_event, deadlines, stopping, **kw):
        # the worker wrote eval.json and said so; the run's report is deleted before the command reads it
        on_event(Event(DONE, {"status": "finished", "path": str(run_dir / evalreport.EVAL_FILE)}))
        return 0

    monkeypatch.setattr(driver, "follow", worker_done_then_run_deleted)
    for as_json in (False, True):
        code = eval_command.run(argparse.Namespace(run_dir=run_dir, prompts=None, json=as_json))
        err = capsys.readouterr().err
        assert code == 1 and "eval.json cannot be read" in err, err
