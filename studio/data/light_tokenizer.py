"""A model's fast tokenizer and chat template without transformers (and so without torch).

``lora-studio data inspect --model`` only needs to render conversations with the model's chat
template and tokenise them with offsets. transformers takes seconds to import (it pulls in torch);
the ``tokenizers`` package reads ``tokenizer.json`` directly and jinja2 renders the template, in a
fraction of that. ``LightTokenizer`` offers the few members the studio's data code calls
(``apply_chat_template``, ``__call__`` with offsets, ``decode``, the special tokens,
``chat_template``), and ``tests/test_light_tokenizer.py`` checks that it renders, tokenises and masks
exactly like the transformers tokenizer the training worker uses, on every fixture.

Templates are rendered by ``studio.data.chat_render``, the one renderer of the studio (a sandboxed
environment as the Hugging Face chat-template documentation describes it, with size limits and a
deadline), with the special tokens as variables.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from studio.data.chat_render import SPECIALS, render_chat
from studio.data.sources import DataError


class LightTokenizer:
    """The fast tokenizer of a model folder, read with ``tokenizers`` and jinja2 only."""

    is_fast = True
    # Set from tokenizer_config.json in __init__ (one per name in chat_render.SPECIALS): the text, or None.
    bos_token: str | None
    eos_token: str | None
    unk_token: str | None
    pad_token: str | None
    sep_token: str | None
    cls_token: str | None
    mask_token: str | None

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.name_or_path = str(folder)
        self.backend_tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config = _read_json(folder / "tokenizer_config.json")
        for name in SPECIALS:
            setattr(self, name, _token_text(config.get(name)))
        self.chat_template = _chat_template(folder, config)

    @classmethod
    def can_read(cls, folder: Path) -> bool:
        """A ``tokenizer.json`` is there (legacy sentencepiece-only folders need transformers)."""
        return (Path(folder) / "tokenizer.json").is_file()

    @property
    def bos_token_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self._id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self._id(self.pad_token)

    def _id(self, text: str | None) -> int | None:
        return self.backend_tokenizer.token_to_id(text) if text else None

    # -- tokenising ---------------------------------------------------------------------------------
    def __call__(self, text: str | list[str], add_special_tokens: bool = True,
                 return_offsets_mapping: bool = False) -> dict:
        batch = [text] if isinstance(text, str) else list(text)
        encs = self.backend_tokenizer.encode_batch(batch, add_special_tokens=add_special_tokens)
        out: dict[str, Any] = {"input_ids": [e.ids for e in encs]}
        if return_offsets_mapping:
            out["offset_mapping"] = [[tuple(o) for o in e.offsets] for e in encs]
        return {k: v[0] for k, v in out.items()} if isinstance(text, str) else out

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.backend_tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # -- chat template ------------------------------------------------------------------------------
    def apply_chat_template(self, conversation: list[dict], tools: list | None = None, documents: list | None = None,
                            chat_template: str | None = None, add_generation_prompt: bool = False,
                            tokenize: bool = True, **kwargs: Any) -> Any:
        text = render_chat(self, conversation, add_generation_prompt=add_generation_prompt, tools=tools,
                           chat_template=chat_template, documents=documents, **kwargs)
        return self(text, add_special_tokens=False)["input_ids"] if tokenize else text


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not readable JSON ({e}); the model folder may be damaged") from None
    return value if isinstance(value, dict) else {}


def _token_text(value: Any) -> str | None:
    """A special token as written in tokenizer_config.json: a string or an AddedToken object."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(folder: Path, config: dict) -> str | None:
    """The default chat template: chat_template.jinja, chat_template.json, or tokenizer_config.json."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    value = _read_json(folder / "chat_template.json").get("chat_template") or config.get("chat_template")
    if isinstance(value, list):  # named templates: the "default" one
        value = next((t.get("template") for t in value if isinstance(t, dict) and t.get("name") == "default"), None)
    return value if isinstance(value, str) else None
