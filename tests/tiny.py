"""Tiny models and a tokenizer made locally, so tests never download anything.

``make_tokenizer`` trains a small byte-level BPE on a fixed corpus and gives it a ChatML chat
template (the same shape as SmolLM2's); ``make_model`` saves a 2-layer Llama (or another
architecture) beside it as a normal safetensors model folder.
"""
from __future__ import annotations

import json
from pathlib import Path

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "ANSWER: Paris. WHY: It is the capital of France.",
    "user assistant system What is two plus two? Four.",
    "Fine-tuning adapts a pretrained model to new data with low-rank adapters.",
    "Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000, punctuation: ; - ( ) [ ] { } ' \" ?",
    "Hello world, hello studio. Bonjour, ça va? Grüße, naïve café.",
]


def make_tokenizer(out_dir: Path, vocab_size: int = 384):
    """Train and save a byte-level BPE tokenizer with a ChatML template; returns the tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.chat_template = CHATML
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def make_model(out_dir: Path, arch: str = "llama", hidden: int = 64, layers: int = 2, seed: int = 0,
               tie: bool = False, dtype: str = "float32", **config: object) -> Path:
    """Save a tiny randomly initialised model and its tokenizer into ``out_dir`` (``config``: more of the family's
    config fields, such as the experts of a mixture-of-experts family)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    out_dir = Path(out_dir)
    tok = make_tokenizer(out_dir)
    kw = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
              tie_word_embeddings=tie, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id)
    config = AutoConfig.for_model(arch, **{**kw, **config})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(out_dir, safe_serialization=True)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id).save_pretrained(out_dir)
    return out_dir


def _sums(n: int):
    """The fixture's questions: ``(a, b, the answer in the ANSWER/WHY format)`` for row 0..n-1."""
    for i in range(n):
        a, b = i % 10, (i * 3) % 10
        yield a, b, f"ANSWER: {a + b}. WHY: {a} plus {b} is {a + b}."


def _write_jsonl(path: Path, rows) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return path


def write_chat_jsonl(path: Path, n: int = 48) -> Path:
    """A small messages-format dataset with a learnable pattern (answers follow a fixed format)."""
    return _write_jsonl(path, ({"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                                             {"role": "assistant", "content": answer}]}
                               for a, b, answer in _sums(n)))


def write_preference_jsonl(path: Path, n: int = 32) -> Path:
    """Prompt/chosen/rejected rows: the chosen answer follows the ANSWER/WHY format, the rejected one does not."""
    return _write_jsonl(path, ({"prompt": f"What is {a} plus {b}?", "chosen": answer,
                                "rejected": f"hello world {a + b}"} for a, b, answer in _sums(n)))


def make_multimodal(out_dir: Path, model_type: str = "qwen3_5", seed: int = 0) -> Path:
    """A tiny random image-text checkpoint (``*ForConditionalGeneration``: qwen3_5, gemma3 or gemma4) with the
    tokenizer above: a 4-layer language model beside a one-layer vision tower, saved as transformers saves it."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    out_dir = Path(out_dir)
    tok = make_tokenizer(out_dir)
    text = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                vocab_size=len(tok), head_dim=16, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    kw: dict = {
        "qwen3_5": dict(text_config=dict(text, linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                                         linear_value_head_dim=16),
                        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64)),
        "gemma3": dict(text_config=text, vision_config=dict(vision, image_size=32, patch_size=8), mm_tokens_per_image=4),
        # E2B-shaped (per-layer embeddings, the last two layers reading the KV of the two before), small: the
        # defaults would give a 262144-row per-layer table and 512-wide global heads
        "gemma4": dict(text_config=dict(text, hidden_size_per_layer_input=8, vocab_size_per_layer_input=len(tok),
                                        global_head_dim=32, num_kv_shared_layers=2, sliding_window=4,
                                        layer_types=["sliding_attention", "full_attention"] * 2),
                       vision_config=vision),
    }[model_type]
    config = AutoConfig.for_model(model_type, **kw)
    torch.manual_seed(seed)
    AutoModelForImageTextToText.from_config(config).save_pretrained(out_dir)
    return out_dir


def write_grpo_jsonl(path: Path, n: int = 32) -> Path:
    """Prompts with what grpo's rewards read: the row's ``answer`` and the ANSWER/WHY ``pattern``."""
    return _write_jsonl(path, ({"prompt": f"What is {a} plus {b}?", "answer": str(a + b),
                                "pattern": r"\AANSWER: \d+\. WHY: [^\n]+\Z"} for a, b, _ in _sums(n)))
