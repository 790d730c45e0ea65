"""`lora-studio data inspect`: the JSON contract, the readable report and the exit codes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tiny

from studio.cli import main

FIX = Path(__file__).parent / "fixtures" / "data"


def _json(capsys, *argv: str) -> tuple[int, dict, str]:
    code = main(["data", "inspect", *argv, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else {}, err


def test_json_contract(capsys):
    code, d, _ = _json(capsys, str(FIX / "broken.jsonl"))
    assert code == 0
    for key in ("format", "confidence", "rows", "usable", "skipped", "problems", "columns", "fingerprint"):
        assert key in d
    assert (d["format"], d["rows"], d["usable"], d["skipped"]) == ("messages", 10, 3, 7)
    assert d["problems"][0] == {"row": 2, "line": 2, "field": None, "message": d["problems"][0]["message"],
                                "hint": d["problems"][0]["hint"], "severity": "error", "code": "json"}
    assert all({"row", "line", "field", "message"} <= set(p) for p in d["problems"])
    assert d["tokens"] is None


def test_json_rows_without_lines_for_parquet(capsys):
    code, d, _ = _json(capsys, str(FIX / "prompt_completion.parquet"))
    assert code == 0 and d["format"] == "prompt_completion" and d["columns"] == ["prompt", "completion"]


def test_model_adds_tokens(capsys, tmp_path):
    tiny.make_tokenizer(tmp_path / "tok")
    code, d, _ = _json(capsys, str(FIX / "messages.jsonl"), "--model", str(tmp_path / "tok"), "--seq-len", "60")
    assert code == 0
    assert {"min", "p50", "p95", "max", "truncated"} <= set(d["tokens"])
    assert d["tokens"]["seq_len"] == 60 and 0 < d["tokens"]["truncated"] <= 4
    assert any(trained for _, trained in d["mask_view"])


def test_format_and_columns_override(capsys, tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("ask,reply\nHi?,Hello.\n", encoding="utf-8")
    code, d, _ = _json(capsys, str(path), "--format", "question_answer", "--columns", "question=ask,answer=reply")
    assert (code, d["format"], d["usable"]) == (0, "question_answer", 1)
    code, d, _ = _json(capsys, str(path), "--columns", '{"prompt": "ask", "completion": "reply"}')
    assert (code, d["format"]) == (0, "prompt_completion")


def test_no_usable_rows_exits_2_with_the_report(capsys, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "q"}]}\n{"messages": ', encoding="utf-8")
    code, d, err = _json(capsys, str(path))
    assert code == 2 and (d["usable"], d["skipped"]) == (0, 2)
    assert len(err.strip().splitlines()) == 1 and "no usable rows" in err


@pytest.mark.parametrize("argv", [["missing.jsonl"], ["x", "--format", "alpaca"], ["x", "--columns", "oops"]])
def test_unreadable_input_exits_2_with_one_line(capsys, tmp_path, argv):
    (tmp_path / "x").write_text('{"text": "a"}\n', encoding="utf-8")
    argv = [str(tmp_path / argv[0]), *argv[1:]]
    code = main(["data", "inspect", *argv])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_readable_report(capsys):
    assert main(["data", "inspect", str(FIX / "broken.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "10: 3 usable, 7 skipped" in out
    assert f"{FIX / 'broken.jsonl'}:line 6: messages[1].role: error: unknown role 'narrator'" in out
    assert "fix: " in out and "Preview:" in out


def test_console_script_end_to_end(tmp_path):
    """The real command in a subprocess: exit code and JSON on stdout only."""
    exe = Path(sys.executable).with_name("lora-studio")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "studio.cli"]
    out = subprocess.run([*cmd, "data", "inspect", str(FIX / "sharegpt.json"), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and json.loads(out.stdout)["format"] == "sharegpt"


def test_format_names_people_use(capsys):
    code, d, _ = _json(capsys, str(FIX / "prompt_completion.csv"), "--format", "prompt-completion")
    assert (code, d["format"]) == (0, "prompt_completion")
    code, d, _ = _json(capsys, str(FIX / "messages.jsonl"), "--format", "OpenAI")
    assert (code, d["format"]) == (0, "messages")
