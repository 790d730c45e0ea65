"""The chat worker (workers/chat.py) and its engine on a tiny random Llama, on the CPU."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from studio.chat_client import ChatClient, WorkerFailed
from studio.events import ANSWER_KEYS, TOKEN_KEYS, EventReader, encode_command
from studio.procs import start_worker, worker_argv, worker_env

PROMPT = [{"role": "user", "content": "What is two plus two?"}]


def make_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) B, so it changes the model's answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False,
                     task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.mul_(4.0)  # big enough that greedy answers change
    peft_model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return make_adapter(tiny_model_dir, root / "a", 1), make_adapter(tiny_model_dir, root / "b", 2)


@pytest.fixture(scope="module")
def no_eos_model(tiny_model_dir, tmp_path_factory):
    """The tiny model with the end-of-text logit pinned to 0, so greedy answers run to max_new_tokens."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("no-eos")
    for f in tiny_model_dir.iterdir():
        shutil.copy(f, out / f.name)
    model = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    eos = model.config.eos_token_id
    with torch.no_grad():
        model.lm_head.weight[eos].zero_()
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def plain_generate(model_dir: Path, adapter: Path | None, messages, max_new_tokens: int) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_streamed_answers_equal_plain_generate_for_base_and_adapters(tiny_model_dir, adapters):
    a, b = adapters
    with ChatClient(["--model", str(tiny_model_dir), "--adapter", f"a={a}"]) as client:
        hello = client.wait_ready()
        assert hello["adapters"] == ["a"] and hello["device"] == "cpu"
        client.add_adapter("b", b)  # hot-attached without reloading the base
        got = {}
        for variant in ("base", "a", "b", "a", "base"):
            pieces: list[str] = []
            answer = client.generate(PROMPT, variant, {"max_new_tokens": 24}, on_text=pieces.append)
            assert "".join(pieces) == answer["text"]
            assert answer["tokens"] > 0 and answer["time_to_first_token_s"] > 0 and answer["tokens_per_s"] > 0
            got.setdefault(variant, answer["text"])
            assert got[variant] == answer["text"]  # switching back gives the same answer
    assert got["base"] == plain_generate(tiny_model_dir, None, PROMPT, 24)
    assert got["a"] == plain_generate(tiny_model_dir, a, PROMPT, 24)
    assert got["b"] == plain_generate(tiny_model_dir, b, PROMPT, 24)
    assert len({got["base"], got["a"], got["b"]}) == 3  # the adapters really change the answers


def test_hot_swapped_adapters_match_each_variant_loaded_alone(tiny_model_dir, adapters):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from studio.inference import ChatEngine
    from studio.recipe import Recipe

    a, b = adapters
    recipe = Recipe(name="t")
    recipe.model.name_or_path = str(tiny_model_dir)
    engine = ChatEngine(tiny_model_dir, recipe, device="cpu", quant="none")
    base_params = engine.base_parameter_count()
    engine.add_adapter("a", a)
    engine.add_adapter("b", b)
    assert engine.base_parameter_count() == base_params  # one copy of the base weights
    ids = torch.tensor([[5, 17, 42, 9, 77, 3, 11]])

    def alone(adapter):
        m = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
        if adapter is not None:
            m = PeftModel.from_pretrained(m, str(adapter))
        with torch.no_grad():
            return m.eval()(input_ids=ids).logits

    for name, adapter in (("a", a), ("base", None), ("b", b), ("a", a), ("base", None)):
        with engine.variant(name), torch.no_grad():
            got = engine.model(input_ids=ids).logits
        torch.testing.assert_close(got, alone(adapter), atol=1e-5, rtol=0)


def _events_until(proc, reader, pending, pred, timeout=60.0):
    import select

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for i, ev in enumerate(pending):
            if pred(ev):
                return pending.pop(i)
        r, _, _ = select.select([proc.stdout], [], [], 0.5)
        if r:
            chunk = proc.stdout.read1(65536)
            if not chunk:
                break
            pending.extend(reader.feed(chunk))
    raise AssertionError(f"no such event; seen: {[(e.type, e.data) for e in pending][-5:]}")


def test_stop_busy_and_garbled_commands(no_eos_model):
    proc = start_worker(worker_argv("workers.chat", "--model", str(no_eos_model)), stderr=None, env=worker_env())
    reader, pending = EventReader(), []
    try:
        _events_until(proc, reader, pending, lambda e: e.type == "hello")
        proc.stdin.write(b"this is not json\n")
        proc.stdin.flush()
        err = _events_until(proc, reader, pending, lambda e: e.type == "error")
        assert "not a command" in err.data["message"]
        long = {"max_new_tokens": 20000}
        proc.stdin.write(encode_command("generate", id="long", variant="base", messages=PROMPT, settings=long))
        proc.stdin.flush()
        first = _events_until(proc, reader, pending, lambda e: e.type == "token")
        assert tuple(first.data) == TOKEN_KEYS and first.data["id"] == "long" and first.data["index"] == 0
        proc.stdin.write(encode_command("generate", id="second", variant="base", messages=PROMPT))
        proc.stdin.flush()
        busy = _events_until(proc, reader, pending, lambda e: e.type == "error")
        assert busy.data["id"] == "second" and "busy" in busy.data["message"]
        t0 = time.monotonic()
        proc.stdin.write(encode_command("stop"))
        proc.stdin.flush()
        answer = _events_until(proc, reader, pending, lambda e: e.type == "answer")
        assert time.monotonic() - t0 < 2.0
        assert tuple(answer.data) == ANSWER_KEYS
        assert answer.data["stopped"] is True and answer.data["finish"] == "stop"
        assert 0 < answer.data["tokens"] < 20000
        # A bad setting is refused with an error naming it; the worker still answers afterwards.
        proc.stdin.write(encode_command("generate", id="bad", variant="base", messages=PROMPT,
                                        settings={"temperature": -1}))
        proc.stdin.flush()
        bad = _events_until(proc, reader, pending, lambda e: e.type == "error" and e.data.get("id") == "bad")
        assert "temperature" in bad.data["message"]
        proc.stdin.write(encode_command("generate", id="after", variant="base", messages=PROMPT,
                                        settings={"max_new_tokens": 5}))
        proc.stdin.flush()
        after = _events_until(proc, reader, pending, lambda e: e.type == "answer")
        assert after.data["id"] == "after" and after.data["tokens"] == 5 and after.data["stopped"] is False
        proc.stdin.close()
        _events_until(proc, reader, pending, lambda e: e.type == "done")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_unknown_adapter_and_missing_model_are_reported(tiny_model_dir, tmp_path):
    with ChatClient(["--model", str(tiny_model_dir)]) as client:
        client.wait_ready()
        with pytest.raises(WorkerFailed, match="no adapter named 'nope'"):
            client.generate(PROMPT, "nope")
        with pytest.raises(WorkerFailed, match="adapter_config.json"):
            client.add_adapter("x", tmp_path)
    client = ChatClient(["--model", str(tmp_path / "missing")])
    with pytest.raises(WorkerFailed, match="missing.*not found"):
        client.wait_ready()
    client.close()
