"""`lora-studio models search` on a recorded Hub answer (tests/fixtures/hub), served like the Hub."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from hubserver import HubServer, Repo

from studio import procs

ROOT = Path(__file__).resolve().parent.parent
RECORDED = json.loads((ROOT / "tests" / "fixtures" / "hub" / "search-llama.json").read_text())
SMALL = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
         "num_attention_heads": 32, "num_key_value_heads": 8, "num_hidden_layers": 16, "vocab_size": 128256,
         "max_position_embeddings": 131072, "tie_word_embeddings": True}
HUGE = {**SMALL, "hidden_size": 16384, "intermediate_size": 53248, "num_attention_heads": 128,
        "num_hidden_layers": 126, "tie_word_embeddings": False}


@pytest.fixture
def server(tmp_path):
    s = HubServer(repos={"someone/llama-3-tiny-chat": Repo({"config.json": json.dumps(SMALL).encode()}),
                         "someone/llama-huge-405b": Repo({"config.json": json.dumps(HUGE).encode()})},
                  search_answer=RECORDED)
    url = s.start()
    yield s, url
    s.stop()


def _search(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = procs.worker_env()  # offline like every command the window runs: search lifts it, explicitly
    env.update(HF_ENDPOINT=url, HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hub"))
    return subprocess.run([sys.executable, "-m", "studio.cli", "models", "search", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)


def test_search_shows_size_licence_gated_and_fit(server, tmp_path):
    s, url = server
    out = _search(url, tmp_path, "llama", "--json", "--vram-gb", "24")
    assert out.returncode == 0, out.stderr
    hits = {h["repo_id"]: h for h in json.loads(out.stdout)["hits"]}
    assert list(hits) == [h["id"] for h in RECORDED]  # the Hub's order: most downloaded first
    llama = hits["meta-llama/Llama-3.1-8B-Instruct"]
    assert (llama["catalog_id"], llama["gated"], llama["license"], llama["params"]) == \
        ("llama-3.1-8b-instruct", True, "llama3.1", 8030261248)
    assert llama["fits"] is True and 0 < llama["peak_bytes"] < 24 << 30
    assert hits["someone/llama-3-tiny-chat"]["fits"] is True
    assert hits["someone/llama-3-tiny-chat"]["license"] == "apache-2.0"
    huge = hits["someone/llama-huge-405b"]
    assert huge["fits"] is False and huge["peak_bytes"] > 24 << 30 and huge["license"] == "other"
    assert hits["someone/llama-no-config"]["fits"] is None  # no config.json: no verdict, not a guess
    query = parse_qs(urlparse(next(p for m, p in s.requests if urlparse(p).path == "/api/models")).query)
    assert query["search"] == ["llama"] and query["sort"] == ["downloads"]
    assert "text-generation" in str(query) and "safetensors" in str(query)
    # reading a config for the verdict never puts a half model in the cache
    assert not (tmp_path / "hub").exists() or not list((tmp_path / "hub").glob("models--*"))


def test_search_table(server, tmp_path):
    _, url = server
    out = _search(url, tmp_path, "llama", "--vram-gb", "24")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("someone/llama-huge-405b"))
    assert "405.9B" in row and " no " in row
