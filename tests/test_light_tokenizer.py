"""The torch-free tokenizer renders, tokenises and masks exactly like the transformers tokenizer the
training worker uses, on every fixture; `data inspect --model` never imports torch or transformers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tiny

from studio.data import load_examples
from studio.data.light_tokenizer import LightTokenizer
from studio.data.template import encode_with_offsets, render
from studio.procs import worker_env

FIX = Path(__file__).parent / "fixtures" / "data"
ROOT = Path(__file__).resolve().parent.parent
CHAT_FIXTURES = ("messages.jsonl", "messages_tools.jsonl", "tools_openai.jsonl", "tools_sharegpt.json", "sharegpt.json",
                 "alpaca.jsonl", "alpaca_history.jsonl", "content_parts.jsonl", "question_answer.tsv", "text.txt",
                 "system_question_response.jsonl", "pref_prompt.jsonl")
SEEN_ALL = "{% for m in messages %}{{ m['role'] }}:{{ m['content'] }}{% generation %}!{% endgeneration %}{% endfor %}"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tok")
    tiny.make_tokenizer(out)
    return out


def _pair(folder: Path, template: str | None = None):
    from transformers import AutoTokenizer

    hf, light = AutoTokenizer.from_pretrained(str(folder)), LightTokenizer(folder)
    if template is not None:
        hf.chat_template = light.chat_template = template
    return hf, light


def _examples() -> list[dict]:
    out = []
    for name in CHAT_FIXTURES:
        examples, _ = load_examples(FIX / name)
        out += examples[:6]
    return out


@pytest.mark.parametrize("which", ["tiny", "demo", "tools"])
def test_renders_tokens_offsets_and_masks_like_transformers(which, tok_dir, demo_model):
    from test_data_layouts import TOOLS_TEMPLATE

    folder = demo_model if which == "demo" else tok_dir
    hf, light = _pair(folder, TOOLS_TEMPLATE if which == "tools" else None)
    assert light.chat_template == hf.chat_template and light.eos_token == hf.eos_token
    examples = _examples()
    assert len(examples) > 30 and any("tools" in e or "text" in e for e in examples)
    for ex in examples:
        assert encode_with_offsets(light, ex) == encode_with_offsets(hf, ex), ex
        if "messages" in ex:
            for prompt in (False, True):
                assert render(light, ex["messages"], prompt) == render(hf, ex["messages"], prompt)


def test_template_helpers_behave_like_transformers(tok_dir):
    hf, light = _pair(tok_dir, SEEN_ALL)
    messages = [{"role": "user", "content": "héllo"}, {"role": "assistant", "content": "ok"}]
    assert light.apply_chat_template(messages, tokenize=False) == hf.apply_chat_template(messages, tokenize=False)
    raising = "{{ raise_exception('no system role here') }}"
    for tok in _pair(tok_dir, raising):
        with pytest.raises(Exception, match="no system role here"):
            tok.apply_chat_template(messages, tokenize=False)
    hf, light = _pair(tok_dir, "{{ messages | tojson }}")
    assert light.apply_chat_template(messages, tokenize=False) == hf.apply_chat_template(messages, tokenize=False)


def test_data_inspect_with_a_model_never_imports_torch(tok_dir, tmp_path):
    probe = ("import json, sys\n"
             "from studio.cli import main\n"
             f"code = main(['data', 'inspect', {str(FIX / 'messages.jsonl')!r}, '--model', {str(tok_dir)!r}, '--json'])\n"
             "print(json.dumps({'code': code, 'torch': 'torch' in sys.modules, "
             "'transformers': 'transformers' in sys.modules}), file=sys.stderr)\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=worker_env(),
                         timeout=120)
    facts = json.loads(out.stderr.strip().splitlines()[-1])
    assert facts == {"code": 0, "torch": False, "transformers": False}, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["tokens"]["count"] > 0 and report["mask_view"]
