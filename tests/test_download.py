"""The download worker against a local server that answers like the Hub (tests/hubserver.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hubserver import HubServer, Repo

from studio import events, hub, procs

ROOT = Path(__file__).resolve().parent.parent
REPO = "tiny-org/tiny-llama"
CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
          "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 256}
WEIGHTS = os.urandom(3 << 20)


def _files() -> dict[str, bytes]:
    return {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": WEIGHTS,
            "tokenizer.json": b'{"version": "1.0"}', "tokenizer_config.json": b'{"chat_template": "x"}',
            "generation_config.json": b"{}", "model.gguf": b"g" * 1000, "onnx/model.onnx": b"o" * 1000,
            "original/consolidated.00.pth": b"p" * 1000, "README.md": b"# tiny"}


@pytest.fixture
def server(tmp_path, monkeypatch):
    s = HubServer(repos={REPO: Repo(_files()), "gated-org/locked": Repo(_files(), gated=True)})
    url = s.start()
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield s
    s.stop()


def _start(*args: str, pre: str = "pass") -> subprocess.Popen:
    env = procs.worker_env()  # offline, like every worker: the download worker lifts it itself
    env["HF_HUB_DISABLE_XET"] = "1"
    code = f"import sys; {pre}; from workers.download import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=ROOT, start_new_session=True)


def _read_until(proc: subprocess.Popen, stop, timeout: float = 60) -> list[events.Event]:
    """Events until ``stop(events)`` is true or the process ends."""
    reader, got = events.EventReader(), []
    end = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while (left := end - time.monotonic()) > 0:
        # one read at a time on a helper thread: select() takes no pipes on Windows, and no read is left
        # pending when this returns (the caller's communicate() reads the rest)
        box: list[bytes] = []
        t = threading.Thread(target=lambda into=box: into.append(os.read(fd, 65536)), daemon=True)
        t.start()
        t.join(left)
        if not box or not box[0]:
            break
        got += reader.feed(box[0])
        if stop(got):
            return got
    return got + reader.close()


def _finish(proc: subprocess.Popen) -> tuple[int, list[events.Event], str]:
    out, err = proc.communicate(timeout=60)
    reader = events.EventReader()
    return proc.returncode, reader.feed(out) + reader.close(), err.decode()


def _resolved() -> str:
    """What studio.models finds in the cache for REPO, asked in a fresh process (the hub reads its env once)."""
    code = "from studio import models; print(models._hf_cache_folder('%s'))" % REPO
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=procs.worker_env(),
                          cwd=ROOT, check=True).stdout.strip()


def _snapshot(tmp_path: Path) -> Path:
    return tmp_path / "hub" / "models--tiny-org--tiny-llama" / "snapshots" / Repo({}).sha


def test_download_reports_progress_and_takes_only_what_training_needs(server, tmp_path):
    code, evs, err = _finish(_start(REPO))
    assert code == 0, err
    done = [e for e in evs if e.type == events.DONE][-1].data
    assert done["status"] == "downloaded"
    snap = _snapshot(tmp_path)
    assert Path(done["path"]) == snap
    assert sorted(p.name for p in snap.iterdir()) == ["config.json", "generation_config.json", "model.safetensors",
                                                      "tokenizer.json", "tokenizer_config.json"]
    assert (snap / "model.safetensors").read_bytes() == WEIGHTS
    prog = [e.data for e in evs if e.type == events.PROGRESS]
    assert prog and prog[-1]["done"] == prog[-1]["total"] == sum(len(b) for n, b in _files().items()
                                                                  if n in done["files"])
    assert all({"speed_bps", "eta_s", "file"} <= set(p) for p in prog)
    assert [d for d in (p["done"] for p in prog)] == sorted(p["done"] for p in prog)
    assert not any(n in ("model.gguf", "onnx/model.onnx", "original/consolidated.00.pth", "README.md")
                   for n, _, _ in server.served)
    assert any("/tree/" in p for _, p in server.requests)  # the file list comes as snapshot_download reads it
    # studio.models finds it in the standard cache, as other tools do
    assert _resolved() == str(snap)


@pytest.mark.platform
def test_resume_after_kill_fetches_no_byte_twice(server, tmp_path):
    server.delay_s = 0.05  # 64 KiB per 50 ms: the 3 MiB file takes ~2.4 s
    proc = _start(REPO)
    # progress counts a piece (512 KiB) as it arrives, before it is written: wait for the second one
    _read_until(proc, lambda evs: any(e.type == events.PROGRESS and e.data["done"] > 1_100_000 for e in evs))
    if os.name == "nt":  # TerminateProcess: the worker has no children to reach
        proc.kill()
    else:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    partial = list((tmp_path / "hub" / "models--tiny-org--tiny-llama" / "blobs").glob("*.incomplete"))
    assert len(partial) == 1
    kept = partial[0].stat().st_size
    assert 0 < kept < len(WEIGHTS)
    assert _resolved() == "None"  # nothing half-written is a model
    assert not (_snapshot(tmp_path) / "config.json").exists()

    server.delay_s = 0.0
    before = len(server.served)
    code, evs, err = _finish(_start(REPO))
    assert code == 0, err
    again = [(start, sent) for name, start, sent in server.served[before:] if name == "model.safetensors"]
    assert again == [(kept, len(WEIGHTS) - kept)]  # one Range request from the partial file's end
    assert (_snapshot(tmp_path) / "model.safetensors").read_bytes() == WEIGHTS
    assert any(e.type == events.LOG and "continuing" in e.data["message"] for e in evs)


@pytest.mark.platform
def test_stop_command_cancels_cleanly(server, tmp_path):
    server.delay_s = 0.05
    proc = _start(REPO)
    _read_until(proc, lambda evs: any(e.type == events.PROGRESS and e.data["done"] > 200_000 for e in evs))
    proc.stdin.write(events.encode_command("stop"))
    proc.stdin.flush()
    code, evs, _ = _finish(proc)
    assert code == 3
    done = [e for e in evs if e.type == events.DONE][-1].data
    assert done["status"] == "cancelled" and "continues from there" in done["message"]
    assert _resolved() == "None"
    assert not (_snapshot(tmp_path) / "config.json").exists()


def test_gated_model_says_which_page_to_open(server):
    code, evs, _ = _finish(_start("gated-org/locked"))
    assert code == 1
    err = [e for e in evs if e.type == events.ERROR][-1].data
    assert err["kind"] == "config"
    assert f"{os.environ['HF_ENDPOINT']}/gated-org/locked" in err["message"] and "licence" in err["message"]
    assert "token" in err["hint"]


def test_full_disk_fails_before_the_first_byte(server, tmp_path):
    code, evs, _ = _finish(_start(REPO, pre="import studio.hub as h; h.free_bytes = lambda p: 1 << 20"))
    assert code == 1
    err = [e for e in evs if e.type == events.ERROR][-1].data
    assert "Not enough free disk space" in err["message"] and "3.0 MiB more" in err["message"]
    assert "1.0 MiB is free" in err["message"]
    assert not [s for s in server.served]  # no byte sent
    assert not (tmp_path / "hub" / "models--tiny-org--tiny-llama" / "snapshots").exists()


def test_pickle_only_repo_needs_allow_pickle():
    files = [hub.RemoteFile("config.json", 10), hub.RemoteFile("pytorch_model.bin", 100),
             hub.RemoteFile("tokenizer.json", 5)]
    with pytest.raises(hub.HubError, match="pickle"):
        hub.select_files("a/b", files)
    picked = [f.name for f in hub.select_files("a/b", files, allow_pickle=True)]
    assert picked == ["pytorch_model.bin", "tokenizer.json", "config.json"]
    both = files + [hub.RemoteFile("model.safetensors", 100), hub.RemoteFile("consolidated.safetensors", 100)]
    assert [f.name for f in hub.select_files("a/b", both, allow_pickle=True)] == \
        ["model.safetensors", "tokenizer.json", "config.json"]
