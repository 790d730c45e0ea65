"""Text training of a multimodal checkpoint: its language model alone, under the names a text model has.

Qwen3.5, Gemma 3 (4B and up), Gemma 4 and Mistral Small 3.x are published as ``*ForConditionalGeneration``
checkpoints: a language model beside a vision (and for Gemma 4 E2B/E4B an audio) tower. On text data the
studio loads the language model only, as its own ``*ForCausalLM`` class from ``text_config``: the towers are
never read, so they cost no memory on the card, the planner has nothing to count for them, and LoRA's
``all-linear`` cannot reach into them. The adapter then names the text model's weights (``model.layers.N...``);
the merge and the exports map those names back onto the checkpoint's (``to_checkpoint``), so the merged model
is the whole multimodal checkpoint again, towers untouched, and the GGUF takes its language model
(``to_text``).

Two layouts exist on disk (transformers 5 reads both): ``model.language_model.*`` + ``lm_head.*`` (Qwen3.5,
Gemma 4, checkpoints saved by transformers 5) and ``language_model.model.*`` + ``language_model.lm_head.*``
(Gemma 3, Mistral 3 as released).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from studio.errors import LoadError

# (the language model's body, its output layer) as a multimodal checkpoint names them
LAYOUTS: tuple[tuple[str, str], ...] = (
    ("model.language_model.", "lm_head."),
    ("language_model.model.", "language_model.lm_head."),
)
_TOWER_WORDS = ("vision", "visual", "audio", "multi_modal", "mm_")


def is_multimodal(config: dict) -> bool:
    """A checkpoint whose language model sits in ``text_config`` beside other towers."""
    return isinstance(config.get("text_config"), dict) and any(
        str(a).endswith("ForConditionalGeneration") for a in config.get("architectures") or ())


def folder_config(folder: Path | str) -> dict:
    """``folder``'s config.json, or {} when it is missing or damaged (transformers then reports it with its file)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def training_note(folder: Path) -> str:
    """What a run on ``folder`` trains, when it is a multimodal checkpoint (else "")."""
    config = folder_config(folder)
    if not is_multimodal(config):
        return ""
    towers = [k.removesuffix("_config") for k in config if k.endswith("_config") and k != "text_config"
              and isinstance(config[k], dict)]
    return (f"{(config.get('architectures') or ['this'])[0]}: the language model trains on its own; the "
            f"{' and '.join(towers) or 'other'} tower{'s are' if len(towers) != 1 else ' is'} not loaded (text data). "
            "The merge and the exports put the adapter back on the whole checkpoint")


def layout(names: Iterable[str]) -> tuple[str, str] | None:
    """The layout a checkpoint's tensor names use, or None for a text model."""
    names = list(names)
    for body, head in LAYOUTS:
        if any(n.startswith(body) for n in names):
            return body, head
    return None


def to_text(name: str) -> str | None:
    """A checkpoint name as the text model has it; a text model's own name unchanged; None for a tower's."""
    for body, head in LAYOUTS:
        if name.startswith(body):
            return "model." + name[len(body):]
        if name.startswith(head):
            return "lm_head." + name[len(head):]
    first_two = name.split(".")[:2]
    if any(word in part for part in first_two for word in _TOWER_WORDS):
        return None
    return name


def to_checkpoint(name: str, where: tuple[str, str] | None) -> str:
    """A text model's name as the checkpoint of layout ``where`` has it (unchanged for a text checkpoint)."""
    if where is None:
        return name
    body, head = where
    if name.startswith("model."):
        return body + name[len("model."):]
    if name.startswith("lm_head."):
        return head + name[len("lm_head."):]
    return name


def language_model_class(config: Any) -> tuple[Any, Any]:
    """(the ``*ForCausalLM`` class or None, its config) for a transformers multimodal config; the output layer
    is tied as the outer config says (transformers ties ``lm_head`` to the language model's embeddings there)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    text = config.get_text_config()
    # Qwen2-VL's text config has no tie_word_embeddings of its own (transformers 5 raises on reading it): the outer
    # config's, else the text config's, else untied
    text.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", getattr(text, "tie_word_embeddings", False)))
    return MODEL_FOR_CAUSAL_LM_MAPPING.get(type(text), None), text


def language_part(config: Any) -> Any:
    """The language model of a multimodal ``config`` on the meta device, under a causal LM's names (``model.*``,
    ``lm_head.*``), for counting: built from the whole model where transformers has no ``*ForCausalLM`` class for
    its text config (Qwen2-VL, Qwen2.5-VL, Qwen3-VL). None when transformers cannot build the whole model."""
    import torch
    from torch import nn
    from transformers import AutoModelForImageTextToText

    try:
        with torch.device("meta"):
            whole = AutoModelForImageTextToText.from_config(config, trust_remote_code=False)
    except ValueError:
        return None

    class LanguagePart(nn.Module):
        _supports_sdpa = bool(getattr(type(whole), "_supports_sdpa", True))

        def __init__(self) -> None:
            super().__init__()
            self.model, self.lm_head, self.config = whole.get_decoder(), whole.get_output_embeddings(), \
                config.get_text_config()

        def get_input_embeddings(self) -> Any:
            return self.model.get_input_embeddings()

        def get_output_embeddings(self) -> Any:
            return self.lm_head

    return LanguagePart()


def on_checkpoint(name: str, names: set[str], where: tuple[str, str] | None) -> str:
    """The checkpoint's name (one of ``names``, layout ``where``; None: the flat layout) for a weight an adapter
    names: as the text model has it (trained here), as transformers 5 loads the whole multimodal model
    (``model.language_model.X``, ``model.vision_tower.X``: trained on image rows, ``studio.vision``), or already
    the checkpoint's. Unchanged
    when none of these is in the checkpoint (the merge then says which weight has no base)."""
    text = to_text(name)
    candidates = [name, to_checkpoint(text, where) if text is not None else name, name.removeprefix("model."),
                  flat_name(name)]
    return next((c for c in candidates if c in names), name)


def flat_name(name: str) -> str:
    """A name of the whole model as transformers 5 loads it, in the flat layout Qwen2-VL and Qwen2.5-VL
    checkpoints keep on disk (the language model at ``model.layers``, ``lm_head``, the tower at ``visual``):
    ``model.language_model.X`` -> ``model.X``, ``model.visual.X`` -> ``visual.X``."""
    if name.startswith("model.language_model."):
        return "model." + name[len("model.language_model."):]
    if name.startswith("model.visual."):
        return name[len("model."):]
    return name


def load_language_model(folder: Path, kwargs: dict, names: list[str]) -> Any:
    """The language model of the multimodal checkpoint in ``folder`` as its ``*ForCausalLM`` class.

    ``names``: the checkpoint's tensor names (their layout gives the key mapping). A weight of the language
    model that is not found is an error, never a random initialisation."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=kwargs.get("trust_remote_code", False))
    cls, text = language_model_class(config)
    where = layout(names)
    if cls is None or where is None:
        raise LoadError(f"{folder}: a {config.model_type} checkpoint whose language model the studio cannot load on "
                        f"its own ({type(text).__name__}; language model tensors "
                        f"{'under ' + where[0] if where else 'not found'}). Choose a text model")
    body, head = where
    mapping = {"^" + body.replace(".", r"\."): "model.", "^" + head.replace(".", r"\."): "lm_head."}
    model, info = cls.from_pretrained(str(folder), config=text, key_mapping=mapping, output_loading_info=True,
                                      **kwargs)
    missing = [k for k in info.get("missing_keys", ()) if not (text.tie_word_embeddings and k.startswith("lm_head."))]
    if missing:
        raise LoadError(f"{folder}: the language model's weights {', '.join(sorted(missing)[:3])} were not found in "
                        f"the checkpoint ({len(missing)} in all): it is incomplete; download it again")
    return model


def load_causal_lm(folder: Path, kwargs: dict) -> Any:
    """The causal LM in ``folder`` (``from_pretrained`` keyword arguments ``kwargs``): the language model of a
    multimodal checkpoint, or the whole model. Training, the Playground and the export checks load through here,
    so an adapter always meets the model it was trained on."""

    from transformers import AutoModelForCausalLM

    from studio.model_types import HINT, unknown_type
    from studio.safetensors_io import model_tensors

    config = folder_config(folder)
    newer = unknown_type(config, str(folder), bool(kwargs.get("trust_remote_code")))
    if newer:
        raise LoadError(newer, HINT)
    if is_multimodal(config):
        return load_language_model(Path(folder), kwargs, [m.name for m in model_tensors(Path(folder))])
    return AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
