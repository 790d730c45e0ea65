"""The Model page's Hub: search, a search result's card, Download with progress, Cancel.

Against tests/hubserver.py (HF_ENDPOINT), serving the tiny test model; every step is a real
subprocess of 'lora-studio models ... --events'.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hubserver import HubServer, Repo  # noqa: E402

from studio.hub import cached_models  # noqa: E402
from studio.modelview import HUB_PREFIX  # noqa: E402

pytestmark = pytest.mark.timeout(120)
REPO = "someone/tiny-chat"


@pytest.fixture
def hub(tmp_path, monkeypatch, tiny_model_dir):
    files = {p.name: p.read_bytes() for p in Path(tiny_model_dir).iterdir() if p.is_file()}
    hit = {"id": REPO, "downloads": 10, "likes": 1, "gated": False, "tags": ["license:mit"],
           "safetensors": {"parameters": {"F32": 1}, "total": 123456}}
    s = HubServer(repos={REPO: Repo(files)}, search_answer=[hit])
    monkeypatch.setenv("HF_ENDPOINT", s.start())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    yield s
    s.stop()


def test_search_then_download_opens_the_model_from_the_cache(window, qtbot, hub, tmp_path):
    page = window.model_page
    window.finish_startup()
    dl = page.download
    page.hub.search_box.setText("tiny")
    page.hub.search()
    qtbot.waitUntil(lambda: bool(page.listing.hits), timeout=60000)
    items = [page.list.item(i) for i in range(page.list.count())]
    hit = next(i for i in items if i.data(0x0100) == HUB_PREFIX + REPO)
    assert "fits" in hit.text()
    page.list.itemClicked.emit(hit)
    assert dl.download_btn.isVisible() and REPO in dl.download_btn.text()
    assert "mit licence" in page.fields["path"].text()
    assert page.fields["fit"].text().startswith("yes")
    seen = []
    dl.downloader.sig_progress.connect(lambda _p, done, total: seen.append((done, total)))
    dl.download_btn.click()
    assert dl.cancel_btn.isVisible() and dl.progress.isVisible()
    qtbot.waitUntil(lambda: not dl.downloader.running, timeout=60000)
    assert seen and seen[-1][0] == seen[-1][1] > 0
    assert "Downloaded" in dl.progress_text.text()
    assert REPO in dict(cached_models())
    qtbot.waitUntil(lambda: window.session.model_info is not None and
                    window.session.model_info.source == "hf-cache", timeout=60000)
    assert not dl.download_btn.isVisible()


def test_cancel_keeps_nothing_that_looks_like_a_model(window, qtbot, hub):
    page = window.model_page
    dl = page.download
    hub.delay_s = 0.2
    hub.repos[REPO].files["model.safetensors"] = b"x" * (2 << 20)
    page.listing.hits = {REPO: {"repo_id": REPO, "params": 1, "license": "mit", "gated": False, "fits": None}}
    page.choose(HUB_PREFIX + REPO)
    dl.download_btn.click()
    qtbot.waitUntil(lambda: dl.progress.value() > 0, timeout=30000)
    assert "/s" in dl.progress_text.text()  # speed and time left
    dl.cancel_btn.click()
    qtbot.waitUntil(lambda: not dl.downloader.running, timeout=30000)
    assert "cancelled" in dl.progress_text.text() and "continues" in dl.progress_text.text()
    assert REPO not in dict(cached_models())
    assert dl.download_btn.isVisible() and dl.download_btn.isEnabled()
