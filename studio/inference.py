"""Answering prompts with a base model and any number of LoRA adapters (torch side; imports torch lazily).

One ``ChatEngine`` holds one copy of the base weights. Adapters are attached with peft under names
(``PeftModel.from_pretrained`` for the first, ``load_adapter`` for the rest) and chosen per answer
with ``set_adapter``; the bare base is answered inside ``disable_adapter()``. Nothing reloads the
base. ``generate`` streams the answer piece by piece through a transformers streamer and ends at
once when ``should_stop`` turns true (a StoppingCriteria checked after every token).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from studio import vision
from studio.data.template import render
from studio.errors import LoadError
from studio.export.adapter import check_adapter
from studio.export.errors import ExportError
from studio.export.verify import model_bytes
from studio.safety import check_remote_code, check_weights_are_safe
from studio.train import loading, moe4bit

BASE = "base"  # the variant name of the bare base model (adapters disabled)
QUANT_MODES = ("auto", "4bit", "8bit", "none")


class SettingsError(ValueError):
    """A generation setting is out of range; the message names it and the allowed range."""


class AdapterError(SettingsError):
    """An adapter folder that cannot be attached; the message says what is wrong with it and what to do."""


@dataclass
class GenSettings:
    """Generation settings. ``temperature`` 0 means greedy decoding (the default)."""

    system: str = ""
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    repetition_penalty: float = 1.0
    seed: int | None = None

    @classmethod
    def from_dict(cls, raw: Any) -> "GenSettings":
        if raw is None:
            return cls()
        if not isinstance(raw, dict):
            raise SettingsError("settings must be an object")
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(unknown)}; known: "
                                f"{', '.join(cls.__dataclass_fields__)}")
        s = cls()
        try:
            if raw.get("system") is not None:
                if not isinstance(raw["system"], str):
                    raise SettingsError("system must be a string")
                _check_unicode(raw["system"], "the system prompt")
                s.system = raw["system"]
            for name, conv in (("temperature", float), ("top_p", float), ("repetition_penalty", float),
                               ("max_new_tokens", int)):
                if raw.get(name) is not None:
                    if isinstance(raw[name], bool):
                        raise TypeError
                    setattr(s, name, conv(raw[name]))
            if raw.get("seed") is not None:
                s.seed = int(raw["seed"])
        except (TypeError, ValueError) as e:
            if isinstance(e, SettingsError):
                raise
            raise SettingsError(f"a setting has the wrong type: {raw}") from None
        if not 0.0 <= s.temperature <= 5.0:
            raise SettingsError(f"temperature {s.temperature} is outside 0..5 (0 = greedy)")
        if not 0.0 < s.top_p <= 1.0:
            raise SettingsError(f"top_p {s.top_p} is outside (0, 1]")
        if not 1 <= s.max_new_tokens <= 32768:
            raise SettingsError(f"max_new_tokens {s.max_new_tokens} is outside 1..32768")
        if not 0.0 < s.repetition_penalty <= 10.0:
            raise SettingsError(f"repetition_penalty {s.repetition_penalty} is outside (0, 10]")
        return s


def _check_unicode(text: str, where: str) -> None:
    """Text the tokenizer can take: a lone surrogate (bytes that were not UTF-8, e.g. in a terminal's
    argument, kept by Python as U+DC80..U+DCFF) makes the tokenizer raise deep inside."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise SettingsError(f"{where} holds bytes that are not UTF-8 text at character {e.start}; "
                            "send the prompt as UTF-8") from None


def check_messages(messages: Any) -> list[dict]:
    """A conversation that ends with a user turn; raises SettingsError naming what is wrong. A message may carry
    ``images`` (paths), one ``<image>`` marker in its content for each (studio.vision)."""
    if not isinstance(messages, list) or not messages:
        raise SettingsError("messages must be a non-empty list of {role, content} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") \
                or not isinstance(m.get("content"), str):
            raise SettingsError(f"message {i} must have a role (system, user or assistant) and string content")
        _check_unicode(m["content"], f"message {i}")
        images = m.get("images", [])
        if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
            raise SettingsError(f"message {i}: images must be a list of image file paths")
        if m["content"].count(vision.IMAGE) != len(images):
            raise SettingsError(f"message {i} has {m['content'].count(vision.IMAGE)} {vision.IMAGE} marker(s) "
                                f"for {len(images)} image(s)")
    if messages[-1]["role"] != "user":
        raise SettingsError("the conversation must end with a user message")
    return messages


def choose_quant(requested: str, device: str, recipe_mode: str | None, weights_16bit_bytes: int,
                 free_bytes: int | None) -> str:
    """The quantisation to load the base with.

    An explicit choice wins. ``auto``: on the CPU what training used (the run's recipe), 16-bit
    weights for a bare model; on a GPU 4-bit NF4 when the 16-bit weights plus a working margin
    (KV cache and activations for a chat: 20% and 512 MiB) do not fit in the free memory.
    """
    if requested != "auto":
        return requested
    if device != "cuda":
        return recipe_mode if recipe_mode in ("4bit", "8bit") else "none"
    if free_bytes is not None and weights_16bit_bytes * 1.2 + (512 << 20) > free_bytes:
        return "4bit"
    return "none"


def weights_16bit_bytes(folder: Path) -> int:
    """Bytes of the base weights in 16 bits (from the safetensors headers: no tensor is read)."""

    return model_bytes(folder, bytes_per_param=2)


class _Streamer:
    """A transformers streamer: decodes the generated ids so far and hands on the new text.

    The first ``put`` is the prompt (skipped). Text that ends inside a multi-byte character
    (U+FFFD) waits for the next token; ``end`` hands on whatever is left, so the pieces always
    add up to the decoded answer.
    """

    def __init__(self, tokenizer: Any, on_text: Callable[[str, int], None]) -> None:
        self.tok = tokenizer
        self.on_text = on_text
        self.ids: list[int] = []
        self.sent = ""
        self.prompt_seen = False
        self.first_token_t: float | None = None
        self.pieces = 0

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        if self.first_token_t is None:
            self.first_token_t = time.perf_counter()
        self.ids.extend(int(x) for x in value.reshape(-1).tolist())
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return
        self._send(text)

    def _send(self, text: str) -> None:
        if text.startswith(self.sent) and len(text) > len(self.sent):
            piece, self.sent = text[len(self.sent):], text
            self.on_text(piece, self.pieces)
            self.pieces += 1

    def end(self) -> None:
        self._send(self.tok.decode(self.ids, skip_special_tokens=True))


PROMPT_KINDS = ("PREFIX_TUNING", "PROMPT_TUNING", "P_TUNING")  # wrap the base; change no layer
KIND_LABELS = {"LORA": "LoRA/rsLoRA/DoRA", "ADALORA": "AdaLoRA", "PREFIX_TUNING": "prefix tuning",
               "PROMPT_TUNING": "prompt tuning"}


def adapter_kind(path: Path) -> str:
    """The peft_type of an adapter folder (``LORA`` when the config does not say)."""
    import json

    try:
        cfg = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SettingsError(f"{path}: adapter_config.json cannot be read ({e})") from None
    return str(cfg.get("peft_type") or "LORA").upper() if isinstance(cfg, dict) else "LORA"


class ChatEngine:
    """A base model kept warm, with named adapters switched per answer."""

    def __init__(self, base: Path, recipe: Any, device: str | None = None, quant: str = "auto",
                 vision_model: bool = False) -> None:
        """``vision_model``: load the whole vision-language model and its processor, so prompts can carry images
        (and adapters trained on image rows attach); else a multimodal checkpoint's language model alone."""
        import torch


        self.base_path = Path(base)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # the same refusal (and, when trusted, the same notice) as training: never a silent auto_map
        self.notices: list[str] = check_remote_code(self.base_path, recipe.model.trust_remote_code)
        check_weights_are_safe(self.base_path, recipe.model.allow_pickle)
        free = torch.cuda.mem_get_info()[0] if self.device == "cuda" else None
        self.quant = choose_quant(quant, self.device, recipe.quant.mode, weights_16bit_bytes(self.base_path), free)
        self.tokenizer = loading.load_tokenizer(self.base_path, recipe)
        dtype = loading.compute_dtype(recipe)
        kwargs: dict[str, Any] = dict(dtype=dtype, trust_remote_code=recipe.model.trust_remote_code,
                                      use_safetensors=not recipe.model.allow_pickle or None)
        if self.quant in ("4bit", "8bit"):
            recipe.quant.mode = self.quant
            kwargs["quantization_config"] = loading.quantization_config(recipe, dtype)
            kwargs["device_map"] = {"": 0} if self.device == "cuda" else {"": "cpu"}
        self.processor: Any = None
        if vision_model:
            if not vision.is_vlm(self.base_path):
                raise LoadError(f"{self.base_path}: this model takes text only, so it cannot read images",
                                f"chat with images (--image) on a vision model (e.g. {vision.VISION_MODELS}) or a run "
                                "trained on one; without --image this model answers text")
            self.processor = vision.load_processor(self.base_path, recipe.model.trust_remote_code,
                                                   getattr(recipe.data, "max_pixels", vision.DEFAULT_MAX_PIXELS))
            self.tokenizer = self.processor.tokenizer
            model = vision.load_vlm(self.base_path, kwargs)
        else:
            model = loading.from_pretrained(self.base_path, kwargs)
        if "quantization_config" not in kwargs:
            model.to(self.device)
        model.eval()
        model.config.use_cache = True
        self.base: Any = model  # the bare model; every PeftModel below wraps this one copy
        # One PeftModel per adapter kind (peft_type): peft keeps one kind per model. LoRA-kind adapters
        # (LoRA, rsLoRA, DoRA) share one; AdaLoRA has its own and cannot sit beside them (both are
        # injected into the same layers); prefix and prompt tuning wrap the base without touching it.
        self.groups: dict[str, Any] = {}
        self.kinds: dict[str, str] = {}  # adapter name -> peft_type
        self._active: Any = None
        self.adapters: dict[str, Path] = {}

    @property
    def model(self) -> Any:
        """The model that answers now: the one ``variant()`` chose, else the weight-adapter model, else the base."""
        if self._active is not None:
            return self._active
        return self._injected() or next(iter(self.groups.values()), self.base)

    def _injected(self) -> Any:
        """The PeftModel whose adapters live inside the base's layers (LoRA kinds, AdaLoRA), if any."""
        return next((m for kind, m in self.groups.items() if kind not in PROMPT_KINDS), None)

    # -- adapters -------------------------------------------------------------------------------
    def add_adapter(self, name: str, path: Path) -> None:
        """Attach the adapter in ``path`` as ``name`` (the base weights are shared, never copied)."""
        from peft import PeftModel

        path = Path(path)
        if not name or name == BASE:
            raise SettingsError(f"an adapter cannot be named {name!r}")
        if name in self.adapters:
            raise SettingsError(f"an adapter named {name!r} is already attached ({self.adapters[name]})")
        if not (path / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{path}: no adapter_config.json here; give a run's adapter/ folder or "
                                    "one of its checkpoints")
        self._check_adapter(path)
        self._check_experts(path)
        kind = adapter_kind(path)
        injected = self._injected()
        if kind not in PROMPT_KINDS and injected is not None and kind not in self.groups:
            have = next(k for k in self.groups if k not in PROMPT_KINDS)
            raise SettingsError(f"{path}: a {KIND_LABELS.get(kind, kind)} adapter cannot be attached beside the "
                                f"{KIND_LABELS.get(have, have)} adapters already here: peft puts both into the same "
                                "layers. Compare it in a separate Playground session, or export it merged")
        group = self.groups.get(kind)
        try:
            if group is not None:
                group.load_adapter(str(path), adapter_name=name, is_trainable=False)
            else:
                group = PeftModel.from_pretrained(self.base, str(path), adapter_name=name, is_trainable=False)
                self.groups[kind] = group
        except (ValueError, KeyError, TypeError, RuntimeError) as e:  # peft's words for a mismatched adapter
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise AdapterError(f"{path}: peft cannot attach this adapter to {self.base_path.name} ({first}); it was "
                               "probably trained on another base model") from e
        group.eval()
        self.kinds[name] = kind
        self.adapters[name] = path

    @staticmethod
    def _check_adapter(path: Path) -> None:
        """Export's adapter check (studio.export.adapter.check_adapter), in the chat's words."""

        try:
            check_adapter(path)
        except ExportError as e:
            raise AdapterError(f"{e.message}; {e.hint}" if e.hint else e.message) from None

    def _check_experts(self, path: Path) -> None:
        """An adapter of the fused experts cannot sit on experts held in 4-bit (studio.train.moe4bit)."""
        import json


        try:
            config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # peft reports an unreadable config itself
        if config.get("target_parameters") and moe4bit.quantized_experts(self.base):
            raise SettingsError(f"{path}: this adapter adapts the mixture-of-experts weights themselves (trained in "
                                "16 or 8 bit), which are 4-bit here; load the base in 16-bit (quantisation 'none') "
                                "or '8bit' to use it")

    @contextlib.contextmanager
    def variant(self, name: str | None) -> Iterator[Any]:
        """A context in which ``self.model`` (also yielded) answers as ``name`` (an adapter) or as the bare base."""
        name = name or BASE
        if name != BASE and name not in self.adapters:
            raise SettingsError(f"no adapter named {name!r}; attached: {', '.join(self.adapters) or 'none'}")
        injected = self._injected()
        kind = None if name == BASE else self.kinds[name]  # attached (checked above), so it has a kind
        model = self.base if kind is None else self.groups[kind]
        if name != BASE:
            model.set_adapter(name)
        # the base, and prefix/prompt adapters, answer with the weight adapters in the layers switched off
        off = injected is not None and (name == BASE or kind in PROMPT_KINDS)
        with injected.disable_adapter() if off else contextlib.nullcontext():
            self._active = model
            try:
                yield model
            finally:
                self._active = None

    def base_parameter_count(self) -> int:
        """Parameters that are not adapter weights: one copy of the base however many adapters are attached."""
        return sum(p.numel() for n, p in self.base.named_parameters() if "lora_" not in n)

    # -- answers --------------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict], settings: GenSettings) -> Any:
        return self.prompt_inputs(messages, settings)["input_ids"]

    def prompt_inputs(self, messages: list[dict], settings: GenSettings) -> dict:
        """The model's inputs for the conversation: ``input_ids``, and with a vision model the images' tensors
        (each message's ``images`` at its ``<image>`` markers, through the processor)."""
        msgs = list(messages)
        if settings.system and msgs[0]["role"] != "system":
            msgs = [{"role": "system", "content": settings.system}] + msgs
        if self.processor is not None:
            return vision.prompt_inputs(self.processor, msgs)
        if any(m.get("images") for m in msgs):
            raise SettingsError(f"{self.base_path.name} was loaded for text: images need a vision-language model "
                                "loaded with its processor (lora-studio chat ... --image)")
        text = render(self.tokenizer, msgs, add_generation_prompt=True)  # studio.data.chat_render: sandbox + deadline
        return {"input_ids": self.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]}

    def generate(self, messages: list[dict], variant: str | None = None, settings: GenSettings | None = None,
                 on_text: Callable[[str, int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> dict:
        """Answer the conversation; ``on_text(piece, index)`` gets the answer as it is generated."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        settings = settings or GenSettings()
        check_messages(messages)
        stop = should_stop or (lambda: False)

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return torch.full((input_ids.shape[0],), bool(stop()), dtype=torch.bool, device=input_ids.device)

        device = self._input_device()
        inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in self.prompt_inputs(messages, settings).items()}
        input_ids = inputs.pop("input_ids")
        streamer = _Streamer(self.tokenizer, on_text or (lambda *_: None))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        kwargs: dict[str, Any] = dict(max_new_tokens=settings.max_new_tokens, pad_token_id=pad,
                                      eos_token_id=self.tokenizer.eos_token_id, use_cache=True,
                                      repetition_penalty=settings.repetition_penalty, streamer=streamer,
                                      stopping_criteria=StoppingCriteriaList([_Stop()]))
        if settings.temperature > 0:
            kwargs.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        t0 = time.perf_counter()
        with self.variant(variant) as model, torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **inputs, **kwargs)
        t1 = time.perf_counter()
        new = out[0, input_ids.shape[1]:].tolist()
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        n = len(new)
        ttft = (streamer.first_token_t - t0) if streamer.first_token_t is not None else None
        stopped = bool(stop())
        finish = "stop" if stopped else ("eos" if new and new[-1] == self.tokenizer.eos_token_id else "length")
        return {"text": text, "tokens": n, "time_to_first_token_s": round(ttft, 4) if ttft is not None else None,
                "tokens_per_s": round(n / (t1 - t0), 2) if n and t1 > t0 else None, "stopped": stopped,
                "finish": finish, "streamed": streamer.sent}

    def _input_device(self) -> Any:
        return next(self.model.parameters()).device
