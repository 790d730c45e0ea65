"""`lora-studio chat` and `lora-studio compare` on a tiny run, through the real chat worker."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from studio import runs
from studio.procs import worker_env
from studio.recipe import Recipe

CLI = [sys.executable, "-c", "import sys; from studio.cli import main; sys.exit(main())"]


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, tmp_path_factory):
    from test_chat_worker import make_adapter

    recipe = Recipe(name="tiny")
    recipe.model.name_or_path = str(tiny_model_dir)
    recipe.quant.mode = "none"
    run_dir = runs.create(recipe, tmp_path_factory.mktemp("runs"))
    make_adapter(tiny_model_dir, run_dir / runs.ADAPTER, seed=5)
    return run_dir


def cli(*args, timeout=120):
    return subprocess.run([*CLI, *map(str, args)], env=worker_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_chat_json_answers_with_the_adapter_or_the_base(tiny_run):
    from test_chat_worker import plain_generate

    ft = cli("chat", tiny_run, "--prompt", "What is two plus two?", "--max-new-tokens", "10", "--json")
    assert ft.returncode == 0, ft.stderr[-2000:]
    got = json.loads(ft.stdout)
    assert set(got) >= {"text", "tokens", "time_to_first_token_s", "tokens_per_s"} and got["tokens"] == 10
    base = cli("chat", tiny_run, "--base", "--prompt", "What is two plus two?", "--max-new-tokens", "10", "--json")
    assert base.returncode == 0, base.stderr[-2000:]
    prompt = [{"role": "user", "content": "What is two plus two?"}]
    model = Path(json.loads((tiny_run / runs.RECIPE).read_text())["model"]["name_or_path"])
    assert json.loads(base.stdout)["text"] == plain_generate(model, None, prompt, 10)
    assert got["text"] == plain_generate(model, tiny_run / runs.ADAPTER, prompt, 10)


def test_compare_scores_both_variants(tiny_run, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}], "pattern": r"\S"}) + "\n"
                               for q in ("What is two plus two?", "Hello world"))
                       + json.dumps({"messages": [{"role": "user", "content": "Name a colour."}]}) + "\n")
    out = cli("compare", "base", tiny_run, "--prompts", prompts, "--max-new-tokens", "6", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert doc["a"] == "base" and doc["b"] == tiny_run.name
    # the row without a pattern is answered, not scored (not against the demo's answer card)
    assert (doc["score"]["total"], doc["score"]["unscored"]) == (2, 1) and doc["score"]["a"] == doc["score"]["b"] == 2
    assert doc["items"][2]["a"]["match"] is None and doc["items"][2]["b"]["match"] is None
    assert doc["items"][2]["a"]["text"]
    assert all(it["a"]["text"] != it["b"]["text"] for it in doc["items"])
    bad = cli("compare", "base", "base", "--prompts", prompts)
    assert bad.returncode == 2 and "both 'base'" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli("compare", f"{tiny_run}@7", "base", "--prompts", prompts)
    assert missing.returncode == 2 and "no checkpoint at step 7" in missing.stderr
