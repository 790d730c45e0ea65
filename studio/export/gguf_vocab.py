"""The tokenizer part of a GGUF: tokens, token types, merges or scores, pre-tokenizer, special ids.

Byte-level BPE (GPT-2 style, as SmolLM, Qwen2 and Llama 3 use) is read from ``tokenizer.json``;
SentencePiece (Llama 2, Mistral) from ``tokenizer.model`` or a byte-fallback ``tokenizer.json``
through the ``gguf`` package's own vocab readers. Special ids, merges, add-BOS/EOS and the chat
template come from ``gguf.SpecialVocab``, the same reader llama.cpp's converter uses.

How the tokenizer runs is what transformers makes of the folder (as training saw it); that part is
kept in the export cache (``studio.export.cache``), so only the first export of a tokenizer loads it.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.export import cache
from studio.export.arches.base import text_config
from studio.export.errors import UnsupportedModel
from studio.malloc_trim import release_freed_memory

# Vocabularies whose reference tokenizer is known even when the folder's tokenizer.json lost its
# pre-tokenizer: the demo model is converted from a GGUF, and transformers rebuilds SmolLM's
# tokenizer as plain byte-level (no digit splitting). sha256 of the tokens by id, one per line.
KNOWN_VOCABS = {
    "d1f2ce856b324081b621d9e2e8dbd22879f462329f3fd4aa39fa758dddb2ce55": "smollm",  # SmolLM / SmolLM2, 49152
}
# llama.cpp's name for each pre-tokenizer regex transformers knows (GGUF_PRE_TOKENIZER_SPLITS maps
# names to regexes; several names share one regex, the first of these wins).
_PREFERRED_NAMES = ("llama-bpe", "qwen2", "gpt-4o", "tekken", "qwen35")
# Architectures whose SentencePiece-style BPE (spaces as '▁' by a normalizer, byte-fallback tokens, merges in
# tokenizer.json) llama.cpp runs as BPE over raw UTF-8 under a tokenizer model of their own (its
# ``tokenizer.ggml.model``, also the pre-tokenizer): Gemma 4. Elsewhere such a tokenizer is SentencePiece.
SPM_BPE = {"gemma4_text": "gemma4"}
# Tokens llama.cpp must print in the text (its chat parser reads them), marked USER_DEFINED as its converter does
_VISIBLE = {"gemma4": frozenset({"<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>",
                                 "<tool_response|>", '<|"|>'})}


@dataclass
class GgufVocab:
    model: str  # tokenizer.ggml.model: gpt2 | llama
    pre: str  # tokenizer.ggml.pre
    tokens: list[str]
    types: list[int]
    scores: list[float] | None
    special: Any  # gguf.SpecialVocab
    notes: list[str] = field(default_factory=list)  # how it was read (transformers, or the export cache)
    cached: bool = False  # it came from the export cache

    def add_to(self, w) -> None:
        w.add_tokenizer_model(self.model)
        w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        if self.scores is not None:
            w.add_token_scores(self.scores)
        w.add_token_types(self.types)
        self.special.add_to_gguf(w, quiet=True)


def build_vocab(folder: Path, config: dict, trust: bool = False) -> GgufVocab:
    """Read the folder's tokenizer the way llama.cpp expects it; unknown kinds fail before any writing.

    What transformers decides (see ``_read_with_transformers``) is kept in the export cache, keyed by the
    tokenizer files and the library versions: the next export of a model with the same tokenizer skips
    the seconds transformers takes to import and load it, and gets the same vocabulary."""

    n_vocab = int(text_config(config)["vocab_size"])  # a multimodal checkpoint's is its language model's
    spm_bpe = SPM_BPE.get(str(text_config(config).get("model_type")))
    key = cache.vocab_key(folder, n_vocab, trust)
    entry = cache.load("vocab", key)
    cached = entry is not None and _complete(entry["value"], n_vocab)
    if entry is not None and cached:
        facts = entry["value"]
        note = f"the tokenizer's GGUF vocabulary came from the export cache (built {entry.get('created', '?')})"
    else:
        # Only the facts outlive the tokenizer transformers built; copied out of the heap it filled, and that
        # heap handed back, so the rest of the export does not keep its fragments (the peak is the reference
        # model's, later, and this kept it 20 MiB above the converter's).
        blob = json.dumps(_read_with_transformers(folder, n_vocab, trust, spm_bpe))
        release_freed_memory()
        facts = json.loads(blob)
        del blob
        why = cache.save("vocab", key, facts)
        note = f"the tokenizer's GGUF vocabulary was read with transformers; {why}" if why else \
            "the tokenizer's GGUF vocabulary was read with transformers and kept in the export cache"
    vocab = _assemble(folder, n_vocab, facts)
    vocab.notes.append(note)
    vocab.cached = cached
    return vocab


_FACTS = ("model", "pre", "tokens", "types", "scores", "load_merges", "add_bos", "add_eos", "chat_template")


def _complete(facts: dict, n_vocab: int) -> bool:
    return (all(k in facts for k in _FACTS) and isinstance(facts["tokens"], list) and len(facts["tokens"]) == n_vocab
            and isinstance(facts["types"], list) and len(facts["types"]) == n_vocab)


def _read_with_transformers(folder: Path, n_vocab: int, trust: bool, spm_bpe: str | None = None) -> dict:
    """The vocabulary facts as transformers runs the tokenizer (JSON-able, for the cache). ``spm_bpe``: the
    architecture's own tokenizer model for a SentencePiece-style BPE (``SPM_BPE``), if it has one."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust)
    # The tokenizer as transformers runs it, which is what training saw: transformers 5 may rebuild
    # it by model class (a qwen2 folder gets Qwen2's split regex whatever tokenizer.json says).
    backend = getattr(tok, "backend_tokenizer", None)
    tok_json: dict = (json.loads(backend.to_str()) if backend is not None
                      else _read_json(folder / "tokenizer.json")) or {}
    model = tok_json.get("model") or {}
    if model.get("type") == "BPE" and not model.get("byte_fallback") and \
            ((tok_json.get("decoder") or {}).get("type") == "ByteLevel"):
        tokens, types = _bpe_tokens(tok_json, n_vocab)
        facts = {"model": "gpt2", "pre": detect_pre(tok_json, tokens), "tokens": tokens, "types": types,
                 "scores": None, "load_merges": True}
    elif spm_bpe and model.get("type") == "BPE" and model.get("byte_fallback") and (folder / "tokenizer.json").is_file():
        facts = _sentencepiece(folder, n_vocab, from_json=True)
        facts.update(model=spm_bpe, pre=spm_bpe, types=_added_types(tok_json, facts, _VISIBLE.get(spm_bpe, frozenset())))
    elif (folder / "tokenizer.model").is_file() or model.get("byte_fallback"):
        facts = _sentencepiece(folder, n_vocab)
    else:
        raise UnsupportedModel(f"{folder / 'tokenizer.json'}: tokenizer kind '{model.get('type')}' cannot be "
                               "written to GGUF", "supported: byte-level BPE and SentencePiece (llama) tokenizers")
    # whether the tokenizer adds BOS/EOS, seen by watching it encode, and the chat template it uses
    ids = tok("a")["input_ids"]
    facts["add_bos"] = bool(tok.bos_token_id is not None and ids[:1] == [tok.bos_token_id])
    facts["add_eos"] = bool(tok.eos_token_id is not None and ids[-1:] == [tok.eos_token_id] and len(ids) > 1)
    template = getattr(tok, "chat_template", None)
    facts["chat_template"] = template if isinstance(template, str) else None
    return facts


def _assemble(folder: Path, n_vocab: int, facts: dict) -> GgufVocab:
    """The vocabulary from its facts; special ids and merges read from the files by ``gguf.SpecialVocab``."""
    import gguf

    special = gguf.SpecialVocab(folder, load_merges=bool(facts["load_merges"]), n_vocab=n_vocab)
    special.add_special_token["bos"] = bool(facts["add_bos"])
    special.add_special_token["eos"] = bool(facts["add_eos"])
    if special.chat_template is None and facts["chat_template"]:
        special.chat_template = facts["chat_template"]
    scores = [float(x) for x in facts["scores"]] if facts["scores"] is not None else None
    return GgufVocab(facts["model"], facts["pre"], list(facts["tokens"]), [int(t) for t in facts["types"]],
                     scores, special)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _bpe_tokens(tok_json: dict, n_vocab: int) -> tuple[list[str], list[int]]:
    """Tokens by id with llama.cpp token types; ids the model has but the tokenizer lacks become [PADn]."""
    import gguf

    by_id: dict[int, str] = {i: t for t, i in tok_json["model"]["vocab"].items()}
    kinds: dict[int, int] = {}
    for added in tok_json.get("added_tokens", []):
        by_id[int(added["id"])] = added["content"]
        kinds[int(added["id"])] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    if max(by_id) >= n_vocab:
        raise UnsupportedModel(f"the tokenizer has {max(by_id) + 1} tokens but the model only {n_vocab}",
                               "the tokenizer does not belong to this model")
    tokens, types = [], []
    for i in range(n_vocab):
        if i in by_id:
            tokens.append(by_id[i])
            types.append(int(kinds.get(i, gguf.TokenType.NORMAL)))
        else:
            tokens.append(f"[PAD{i}]")
            types.append(int(gguf.TokenType.UNUSED))
    return tokens, types


def detect_pre(tok_json: dict, tokens: list[str]) -> str:
    """llama.cpp's pre-tokenizer name for this tokenizer.json (how text is split before BPE)."""
    known = KNOWN_VOCABS.get(vocab_fingerprint(tokens))
    if known:
        return known
    pre = tok_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"  # llama.cpp splits like StarCoder: single digits, then the GPT-2 regex
    if kinds[:1] == ["Split"] and kinds[1:] in ([], ["ByteLevel"]):
        name = _name_for_regex((steps[0].get("pattern") or {}).get("Regex"))
        if name:
            return name
    raise UnsupportedModel(f"tokenizer.json pre-tokenizer {kinds} is not one llama.cpp knows by name",
                           "GGUF export supports GPT-2, SmolLM/StarCoder, Llama 3 and Qwen2 style tokenizers")


def vocab_fingerprint(tokens: list[str]) -> str:
    """sha256 of the tokens by id, one per line: identifies a known vocabulary."""
    return hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest()


def _name_for_regex(regex: str | None) -> str | None:
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    names = [n for n, r in GGUF_PRE_TOKENIZER_SPLITS.items() if r == regex]
    for preferred in _PREFERRED_NAMES:
        if preferred in names:
            return preferred
    return names[0] if names else None


def _added_types(tok_json: dict, facts: dict, visible: frozenset) -> list[int]:
    """Token types where tokenizer.json's added tokens say more than the converter's reader does: an added
    token transformers matches whole (``<|turn>``) is CONTROL when special, USER_DEFINED otherwise, so that
    llama.cpp matches it whole too (the reader calls NORMAL whatever is not bos/eos/unk/pad); ``visible``
    ones are USER_DEFINED (printed in the text)."""
    import gguf

    added = {a["content"]: bool(a.get("special")) for a in tok_json.get("added_tokens", [])}
    out = []
    for token, kind in zip(facts["tokens"], facts["types"]):
        if token in visible:
            kind = int(gguf.TokenType.USER_DEFINED)
        elif token in added and kind == int(gguf.TokenType.NORMAL):
            kind = int(gguf.TokenType.CONTROL if added[token] else gguf.TokenType.USER_DEFINED)
        out.append(kind)
    return out


def _sentencepiece(folder: Path, n_vocab: int, from_json: bool = False) -> dict:
    """Tokens, scores and types of a SentencePiece model (tokenizer.model), or of a byte-fallback BPE
    tokenizer.json read the way llama.cpp's converter reads it (``from_json``, or no tokenizer.model)."""
    import gguf

    reader = gguf.SentencePieceVocab if (folder / "tokenizer.model").is_file() and not from_json else gguf.LlamaHfVocab
    try:
        sp = reader(folder)
    except (FileNotFoundError, ValueError, ImportError) as e:
        raise UnsupportedModel(f"{folder}: cannot read the SentencePiece tokenizer ({e})",
                               "GGUF export needs tokenizer.model or a llama-style tokenizer.json") from None
    tokens, scores, types = [], [], []
    from_json = reader is gguf.LlamaHfVocab
    for i, (text, score, ttype) in enumerate(sp.all_tokens()):
        tokens.append(text.decode("utf-8") if isinstance(text, bytes) else text)
        # tokenizer.json has no scores (the gguf reader writes -1000 for all); BPE trainers number
        # tokens in merge order, so -id ranks them the way SentencePiece scores would.
        scores.append(float(-i) if from_json and int(ttype) == int(gguf.TokenType.NORMAL) else float(score))
        types.append(int(ttype))
    while len(tokens) < n_vocab:
        tokens.append(f"[PAD{len(tokens)}]")
        scores.append(-1000.0)
        types.append(int(gguf.TokenType.UNUSED))
    return {"model": "llama", "pre": "default", "tokens": tokens[:n_vocab], "types": types[:n_vocab],
            "scores": scores[:n_vocab], "load_merges": from_json}
