"""A model newer than the installed transformers: say so in words instead of transformers' KeyError.

transformers builds a model from the ``model_type`` in its config.json; a type it does not know (a family
released after this LoRA Studio's pinned transformers) fails deep inside ``AutoConfig`` with a message about
``trust_remote_code``. The studio checks first and names the type, the transformers version the checkpoint
was saved with (``transformers_version`` in its config.json: a version that knows it) and what to do.
"""
from __future__ import annotations

from typing import Any

HINT = "update LoRA Studio (the transformers it pins decides which model types it knows), or choose another model"


def installed_transformers() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _numbers(version: str) -> tuple[int, ...]:
    out = []
    for part in version.split("."):
        digits = "".join(c for c in part if c.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def unknown_type(config: dict[str, Any], where: str, trust_remote_code: bool = False) -> str | None:
    """The message for a config whose model types (its own, and its text model's) the installed transformers
    does not know, or None. A config that ships its own code (``auto_map``) is transformers' business when the
    user allowed remote code."""
    from transformers import CONFIG_MAPPING

    if trust_remote_code and config.get("auto_map"):
        return None
    types = [config.get("model_type")]
    text = config.get("text_config")
    if isinstance(text, dict):
        types.append(text.get("model_type"))
    unknown = [str(t) for t in types if t and t not in CONFIG_MAPPING]
    if not unknown:
        return None
    have = installed_transformers()
    saved = str(config.get("transformers_version") or "")
    newer = bool(saved) and _numbers(saved) > _numbers(have)
    knows = (f" The checkpoint was saved with transformers {saved}, which knows it." if newer else
             f" Its config.json names transformers {saved}." if saved else "")
    remote = (" It ships its own model code (auto_map): allow trust_remote_code for it if you trust its author."
              if config.get("auto_map") else "")
    return (f"{where}: model type '{unknown[0]}' is newer than the installed transformers {have}, which does not "
            f"know it.{knows}{remote} Update LoRA Studio to a version whose transformers supports "
            f"'{unknown[0]}'{f' (transformers {saved} or later)' if newer else ''}, or choose another model.")
