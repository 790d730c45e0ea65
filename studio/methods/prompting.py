"""Prefix and prompt tuning: learned vectors in front of every layer (prefix) or of the prompt (prompt).

No linear layer is adapted (targets []), so lora.rank, alpha and targets play no part. Prefix
tuning trains a key and a value vector per virtual token and layer and makes the attention mask
explicit (transformers then repeats k and v to every head); peft refuses it with gradient
checkpointing. Prompt tuning's virtual tokens lengthen every sequence and need the input's
gradient. Nothing can be merged into the base weights.
"""
from __future__ import annotations

from typing import Any

from studio.adapted import ModelShape, dtype_bytes
from studio.methods.base import Method, Terms, no_activations, no_trainable_terms, no_transients, virtual
from studio.settings import Settings

# Prefix and prompt tuning start from this text (repeated to fill the virtual tokens), not from random
# vectors: random prefixes and prompts of unit scale wreck a model's answers (measured on the demo: the
# validation loss went from 3.1 to 7.4 after 3 steps), a real text leaves it close to the base.
INIT_TEXT = "Answer the request below helpfully, accurately and in the requested format."
_NO_MERGE = ("{label} changes no weight: it feeds learned vectors into the model on every request, so there "
             "is nothing to fold into the base weights and no llama.cpp/Ollama format that carries it")


def _prefix_effective(s: Settings) -> Settings:
    return s.replace(targets=())


def _prompt_effective(s: Settings) -> Settings:
    return s.replace(targets=(), seq_len=int(s.seq_len) + virtual(s))


def _prefix_tensors(info: ModelShape, s: Settings) -> list[tuple[int, int]]:
    """A key and a value vector per virtual token and layer (no reparameterisation)."""
    return [(virtual(s) * info.layers * 2 * info.kv_dim, 1)]


def _prompt_tensors(info: ModelShape, s: Settings) -> list[tuple[int, int]]:
    """One embedding per virtual token."""
    return [(virtual(s) * info.hidden, 1)]


def _prefix_words(s: Settings) -> str:
    return f"prefix tuning, {virtual(s)} virtual tokens"


def _prompt_words(s: Settings) -> str:
    return f"prompt tuning, {virtual(s)} virtual tokens"


def _prefix_activations(info: ModelShape, s: Settings, device: str, peak: bool) -> Terms:
    a, batch, seq = dtype_bytes(s.compute_dtype), s.micro_batch, s.seq_len
    p, L = virtual(s), info.layers
    encoder = batch * p * L * 2 * info.kv_dim * (4 + a)  # the fp32 prompt encoder output and its cast copies
    # with a prefix the attention mask is explicit, so transformers repeats k and v to every head, over S + P keys
    keys = L * batch * ((seq + p) * 2 * info.q_dim - seq * 2 * info.kv_dim) * a
    mask = batch * seq * (seq + p) * (1 if device == "cuda" else a)
    return ({"prefix_key_values": int(encoder + keys + mask)},
            {"prefix_key_values": f"prefix tuning (estimate, checked on the CPU): {p} past keys/values per layer "
                                  f"for {batch} sequences, keys and values repeated to every head over "
                                  f"{seq}+{p} positions, and the {seq}x{seq + p} attention mask"})


def _prefix_config(recipe: Any, total_steps: int, base: Any, targets: Any) -> Any:
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(num_virtual_tokens=recipe.lora.virtual_tokens, task_type="CAUSAL_LM")


def _prompt_config(recipe: Any, total_steps: int, base: Any, targets: Any) -> Any:
    """With ``base`` (the model folder) the prompt starts from the embeddings of INIT_TEXT (peft's TEXT init,
    the tokenizer read from that folder); without it from peft's random init."""
    from peft import PromptTuningConfig

    if base is None:
        return PromptTuningConfig(num_virtual_tokens=recipe.lora.virtual_tokens, task_type="CAUSAL_LM")
    return PromptTuningConfig(num_virtual_tokens=recipe.lora.virtual_tokens, task_type="CAUSAL_LM",
                              prompt_tuning_init="TEXT", prompt_tuning_init_text=INIT_TEXT,
                              tokenizer_name_or_path=str(base),
                              tokenizer_kwargs={"trust_remote_code": recipe.model.trust_remote_code})


PREFIX = Method("prefix", "Prefix tuning", "Learned key/value vectors in front of every layer, no weight changed: "
                "tiny adapters and fast task switching, for a small memory cost per layer; usually weaker than LoRA.",
                "PREFIX_TUNING", low_rank=False, mergeable=False, gguf_adapter=False,
                why_not_merged=_NO_MERGE.format(label="Prefix tuning"),
                why_no_gguf_adapter=_NO_MERGE.format(label="Prefix tuning"), no_grad_ckpt=True, kv_from_text=True,
                effective=_prefix_effective, extra_tensors=_prefix_tensors, words=_prefix_words,
                trainable_terms=no_trainable_terms, activations=_prefix_activations, transients=no_transients,
                peft_config=_prefix_config)
PROMPT = Method("prompt", "Prompt tuning", "Learned virtual tokens in front of the prompt, no weight changed: the "
                "smallest adapters, a longer sequence to pay for; works best on large models and simple tasks.",
                "PROMPT_TUNING", low_rank=False, mergeable=False, gguf_adapter=False,
                why_not_merged=_NO_MERGE.format(label="Prompt tuning"),
                why_no_gguf_adapter=_NO_MERGE.format(label="Prompt tuning"), input_needs_grad=True,
                effective=_prompt_effective, extra_tensors=_prompt_tensors, words=_prompt_words,
                trainable_terms=no_trainable_terms, activations=no_activations, transients=no_transients,
                peft_config=_prompt_config)
