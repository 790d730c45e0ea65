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


# Chat templates that render content parts ({"type": "image"} / {"type": "text", "text": ...}) as the families'
# own do, in small: an image part becomes the family's placeholder, which the processor expands to its tokens.
_PARTS = ("{% if message['content'] is string %}{{ message['content'] }}{% else %}"
          "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ IMAGE }}"
          "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}")
VLM_TEMPLATES = {
    "qwen2_vl": ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
                 + _PARTS.replace("{{ IMAGE }}", "<|vision_start|><|image_pad|><|vision_end|>")
                 + "{{ '<|im_end|>\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
    "gemma3": ("{{ bos_token }}{% for message in messages %}"
               "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\n' }}"
               + _PARTS.replace("{{ IMAGE }}", "<start_of_image>")
               + "{{ '<end_of_turn>\n' }}{% endfor %}"
               "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"),
    "llava": ("{% for message in messages %}{{ ('USER: ' if message['role'] == 'user' else 'ASSISTANT: ') }}"
              + _PARTS.replace("{{ IMAGE }}", "<image>\n") + "{{ '<|im_end|>\n' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ 'ASSISTANT: ' }}{% endif %}"),
}
VLM_TOKENS = {
    "qwen2_vl": {"vision_start": "<|vision_start|>", "vision_end": "<|vision_end|>", "image": "<|image_pad|>",
                 "video": "<|video_pad|>"},
    "gemma3": {"boi": "<start_of_image>", "eoi": "<end_of_image>", "image": "<image_soft_token>",
               "turn_start": "<start_of_turn>", "turn_end": "<end_of_turn>"},
    "llava": {"image": "<image>"},  # LLaVA's placeholder is the studio's own marker, expanded by its processor
}


def make_vlm(out_dir: Path, family: str = "qwen2_vl", seed: int = 0, layers: int = 2, max_pixels: int = 56 * 56,
             image_size: int = 32, mm_tokens: int = 4) -> Path:
    """A tiny randomly initialised vision-language checkpoint with its processor (tokenizer with the family's
    image tokens, image processor, a chat template that renders content parts), saved as transformers saves one.

    ``qwen2_vl``: patches of 14 merged 2x2, so a 56x56 image (``max_pixels``) is a 4x4 grid, 4 image tokens;
    ``gemma3``: a SigLIP tower on ``image_size`` pixels, pooled to ``mm_tokens`` image tokens;
    ``llava``: a CLIP tower on ``image_size``-pixel crops in patches of 14 (32 -> a 2x2 grid, 4 image tokens once
    the CLS token is dropped) and a Llama language model."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    tokens = VLM_TOKENS[family]
    base = make_tokenizer(out_dir)
    extra = {f"{k}_token": v for k, v in tokens.items() if k in ("boi", "eoi", "image")} if family == "gemma3" else {}
    tok = PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer, bos_token=base.bos_token,
                                  eos_token=base.eos_token, pad_token=base.pad_token, unk_token=base.unk_token,
                                  extra_special_tokens=extra)
    tok.add_special_tokens({"additional_special_tokens": list(tokens.values())})
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in tokens.items()}
    template = VLM_TEMPLATES[family]
    tok.chat_template = template
    text = dict(hidden_size=64, num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128, vocab_size=len(tok), head_dim=16, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, max_position_embeddings=512)
    if family == "qwen2_vl":
        from transformers import Qwen2VLImageProcessorPil, Qwen2VLProcessor

        config = AutoConfig.for_model(
            "qwen2_vl", text_config=dict(text, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                                "mrope_section": [2, 3, 3]}),
            vision_config=dict(depth=1, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2),
            image_token_id=ids["image"], video_token_id=ids["video"], vision_start_token_id=ids["vision_start"],
            vision_end_token_id=ids["vision_end"], tie_word_embeddings=False)
        from studio.vision import _images_only

        with _images_only():  # its video processor needs torchvision, which the studio does not install
            processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessorPil(min_pixels=28 * 28,
                                                                                 max_pixels=max_pixels),
                                         tokenizer=tok, video_processor=None, chat_template=template)
    elif family == "gemma3":
        from transformers import Gemma3ImageProcessorPil, Gemma3Processor

        config = AutoConfig.for_model(
            "gemma3", text_config=dict(text, sliding_window=16),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=image_size, patch_size=8),
            mm_tokens_per_image=mm_tokens, boi_token_index=ids["boi"], eoi_token_index=ids["eoi"],
            image_token_index=ids["image"], tie_word_embeddings=True)
        processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": image_size,
                                                                                 "width": image_size}),
                                    tokenizer=tok, chat_template=template, image_seq_length=mm_tokens)
    elif family == "llava":
        from transformers import CLIPImageProcessorPil, LlavaProcessor

        config = AutoConfig.for_model(
            "llava", text_config=dict(text, model_type="llama"),
            vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2, image_size=image_size, patch_size=14,
                               projection_dim=32),
            image_token_index=ids["image"], vision_feature_select_strategy="default", vision_feature_layer=-2,
            tie_word_embeddings=False)
        side = {"height": image_size, "width": image_size}
        processor = LlavaProcessor(image_processor=CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                                                         crop_size=side),
                                   tokenizer=tok, chat_template=template, patch_size=14,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
    else:
        raise ValueError(f"make_vlm: no tiny {family}")
    torch.manual_seed(seed)
    AutoModelForImageTextToText.from_config(config).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    processor.image_processor.save_pretrained(out_dir)
    (out_dir / "chat_template.jinja").write_text(template, encoding="utf-8")
    (out_dir / "processor_config.json").write_text(json.dumps(
        {"processor_class": type(processor).__name__,
         **({"image_seq_length": mm_tokens} if family == "gemma3" else {}),
         **({"patch_size": 14, "vision_feature_select_strategy": "default", "num_additional_image_tokens": 1}
            if family == "llava" else {})}), encoding="utf-8")
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id).save_pretrained(out_dir)
    return out_dir


def write_image(path: Path, size: tuple[int, int] = (40, 30), color: tuple[int, int, int] = (200, 30, 30)) -> Path:
    """A small solid-colour PNG with a darker square in one corner (PIL only)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, color)
    img.paste(tuple(c // 3 for c in color), (0, 0, size[0] // 3, size[1] // 3))
    img.save(path)
    return path
