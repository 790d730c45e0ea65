"""What a base model is, from its ``config.json`` alone: shapes, exact parameter counts, linear layers.

``resolve()`` turns what the user typed ('demo', a folder, a Hugging Face cache id such as
``Qwen/Qwen2.5-7B-Instruct`` or a catalog id) into a :class:`ModelInfo`. Parameter counts are
exact: the model is built on PyTorch's ``meta`` device (no memory, no weights) and every
parameter is counted and put in a group. The catalog in ``resources/catalog.json`` stores the
same counts precomputed, so planning a catalog model needs neither torch nor transformers
(``python -m studio.models refresh`` recomputes them; a test checks they still agree).

This module imports neither Qt nor torch at import time.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from studio import demo, model_types, multimodal, paths
from studio.adapted import fused_experts
from studio.fsutil import atomic_write_json, atomic_write_text
from studio.paths import resources_dir

CATALOG_FILE = "catalog.json"
DEMO_CATALOG_ID = "smollm2-135m-instruct"
GROUPS = ("embeddings", "attention", "mlp", "experts", "router", "norms", "lm_head", "other")


def looks_like_model(path: str | Path) -> bool:
    """A folder with config.json (or a .gguf file) is a model; anything else is treated as data."""
    path = Path(path)
    return (path.is_dir() and (path / "config.json").is_file()) or path.suffix.lower() == ".gguf"


class ModelError(ValueError):
    """A model that cannot be found or read; the message says what to do (``hint``: the action alone)."""

    def __init__(self, message: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


@dataclass
class LinearGroup:
    """Linear layers sharing a name and shape (e.g. the 32 ``q_proj`` of a Llama)."""

    name: str
    in_features: int
    out_features: int
    count: int
    bias: bool = False
    quantized: bool = True  # bitsandbytes replaces it (transformers skips lm_head and tied weights)
    lora_all_linear: bool = True  # peft's "all-linear" adapts it (never the output layer)

    @property
    def weight_numel(self) -> int:
        return self.in_features * self.out_features * self.count


@dataclass
class ModelInfo:
    """Shapes and exact parameter counts of a causal LM; Qt-free and torch-free."""

    name: str
    source: str  # "folder" | "hf-cache" | "catalog" | "demo"
    architecture: str
    model_type: str
    vocab: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    context: int
    tied: bool
    has_chat_template: bool
    params: dict[str, int] = field(default_factory=dict)
    linears: list[LinearGroup] = field(default_factory=list)
    num_experts: int = 0
    experts_per_token: int = 0
    norms_per_layer: int = 2
    supports_sdpa: bool = True  # False: transformers refuses attn_implementation="sdpa" (e.g. Gemma 2)
    logit_softcap: bool = False  # tanh soft-capping of the final logits (Gemma 2)
    attn_softcap: bool = False  # tanh soft-capping of the attention scores (Gemma 2, eager only)
    qk_norm: bool = False  # RMSNorm on each head's query and key (Qwen3, Gemma 3)
    sliding_window: int = 0  # local attention layers see this many tokens (a mask is built beyond it)
    sliding_layers: int = 0  # how many layers use that local window
    # Linear-attention (Gated DeltaNet) layers between the full-attention ones (Qwen3.5): how many, and their shape.
    # Each keeps a causal convolution over q|k|v and a chunked delta-rule state instead of attention scores
    # (studio.memory.linear_attention_bytes); heads/dims as config.json names them (linear_*).
    linear_layers: int = 0
    linear_leading: int = 0  # linear-attention layers before the first full-attention one (their input needs no grad)
    linear_k_heads: int = 0
    linear_v_heads: int = 0
    linear_k_dim: int = 0
    linear_v_dim: int = 0
    linear_conv: int = 0  # the causal convolution's kernel width
    attn_output_gate: bool = False  # full attention's output is multiplied by sigmoid(gate), q_proj twice as wide
    shared_expert: int = 0  # intermediate size of an MoE's always-on shared expert, gated per token (Qwen3.5-MoE)
    # Gemma 4: global layers with their own head size and key/value heads (0: as the others), the last layers
    # reusing an earlier layer's keys and values (how many of them sliding, how many global), and the width of
    # the per-layer input each layer adds (its per-layer embeddings)
    full_head_dim: int = 0
    full_kv_heads: int = 0
    kv_shared_sliding: int = 0
    kv_shared_full: int = 0
    per_layer_input: int = 0
    # An image run (a vision-language checkpoint on rows with images): its vision tower and projector, loaded
    # beside the language model in the compute dtype, never quantised (studio.vision_plan sets it; 0 otherwise)
    vision_params: int = 0
    path: str | None = None
    note: str = ""

    @property
    def total_params(self) -> int:
        return sum(self.params.values())

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def full_layers(self) -> int:
        """Decoder layers with softmax attention (all of them but the linear-attention ones)."""
        return self.layers - self.linear_layers

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total_params"] = self.total_params
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelInfo":
        """Rebuild from ``to_dict()`` (e.g. a GUI reading a subprocess's answer)."""
        known = set(cls.__dataclass_fields__)
        d = {k: v for k, v in d.items() if k in known}
        d["linears"] = [g if isinstance(g, LinearGroup) else LinearGroup(**g) for g in d.get("linears", [])]
        return cls(**d)

    def summary(self) -> str:
        return (f"{self.name}: {self.architecture}, {self.total_params / 1e9:.2f}B parameters, "
                f"{self.layers} layers, hidden {self.hidden}, vocab {self.vocab}, context {self.context}")


@dataclass
class CatalogEntry:
    """A popular model's public config facts, with parameter counts precomputed on the meta device."""

    id: str
    name: str
    hf_id: str
    family: str
    config: dict
    chat_template: bool = True
    published_params_b: float = 0.0  # the model card's size in billions, a cross-check of the counts
    aliases: list[str] = field(default_factory=list)  # other Hugging Face ids with the same shapes (base/chat)
    param_groups: dict[str, int] = field(default_factory=dict)  # exact counts per group (meta device)
    linears: list[dict] = field(default_factory=list)
    supports_sdpa: bool = True
    licence: str = ""  # the Hub's licence id ("apache-2.0", "llama3.1", "gemma"); "" where none was found
    gated: bool | None = None  # the Hub asks to accept the licence before download; None: not known
    sources: dict[str, str] = field(default_factory=dict)  # where each fact comes from (field -> source)
    note: str = ""  # what a user should know before training it (a publisher's advice)
    tower_params: int = 0  # a multimodal checkpoint's vision/audio towers (not loaded for text training)
    active_params_b: float = 0.0  # a mixture of experts: parameters used per token, in billions (model card)

    @property
    def params(self) -> int:
        """Total parameter count."""
        return sum(self.param_groups.values())

    @property
    def total_params(self) -> int:
        return self.params

    @property
    def display_name(self) -> str:
        return self.name


# --- catalog ------------------------------------------------------------------------------------
_CATALOG: list[CatalogEntry] | None = None


def catalog_path() -> Path:
    return resources_dir() / CATALOG_FILE


def catalog() -> list[CatalogEntry]:
    """Every catalog entry (read once per process)."""
    global _CATALOG
    if _CATALOG is None:
        raw = json.loads(catalog_path().read_text(encoding="utf-8"))
        _CATALOG = [CatalogEntry(**e) for e in raw["models"]]
    return _CATALOG


def find_catalog(name: str) -> CatalogEntry | None:
    """The entry whose id, Hugging Face id, alias or display name matches (case-insensitive)."""
    key = name.strip().lower()
    for entry in catalog():
        names = [entry.id, entry.hf_id, entry.name, *entry.aliases]
        if key in (n.lower() for n in names):
            return entry
    return None


def shipped_entry(entry_id: str) -> CatalogEntry:
    """A catalog entry the studio itself relies on (the demo, the speed anchor): the catalog ships with the
    studio, so without that entry the install is damaged (a ModelError that says so, not a None)."""
    entry = find_catalog(entry_id)
    if entry is None:
        raise ModelError(f"the model catalog ({catalog_path()}) has no '{entry_id}' entry; reinstall LoRA Studio")
    return entry


# --- resolve -------------------------------------------------------------------------------------
def resolve(name_or_path: str, trust_remote_code: bool = False) -> ModelInfo:
    """'demo', a local folder, a Hugging Face cache repo id or a catalog id -> ModelInfo."""
    name = str(name_or_path).strip()
    if not name:
        raise ModelError("no model given: use 'demo', a folder with config.json, a Hugging Face id or a catalog id "
                         "(lora-studio models lists the catalog)")
    if name == "demo":
        return _resolve_demo()
    path = Path(name).expanduser()
    if path.is_file() and path.name == "config.json":
        path = path.parent
    if path.is_dir():
        return from_folder(path, trust_remote_code=trust_remote_code, source="folder")
    if path.suffix == ".gguf":
        raise ModelError(f"{name}: GGUF files are for inference; give the original Hugging Face folder "
                         "(config.json + safetensors) to fine-tune it")
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", name):
        cached = _hf_cache_folder(name)
        if cached is not None:
            return from_folder(cached, trust_remote_code=trust_remote_code, source="hf-cache", name=name)
    entry = find_catalog(name)
    if entry is not None:
        return from_catalog(entry)
    raise ModelError(f"model '{name}' not found: it is not a folder, not in the local Hugging Face cache and not "
                     "a catalog id. Download it first (lora-studio models download OWNER/NAME, or the Model page), "
                     "give its folder, or pick one from 'lora-studio models'")


def _resolve_demo() -> ModelInfo:
    folder = demo.demo_model_dir()
    if demo.is_converted(folder):
        info = from_folder(folder, source="demo", name="demo")
        return info
    info = from_catalog(shipped_entry(DEMO_CATALOG_ID))  # same shapes as the converted demo
    info.name, info.source = "demo", "demo"
    info.note = "demo model not converted yet (lora-studio demo-model); shapes taken from the catalog"
    return info


def _hf_cache_folder(repo_id: str) -> Path | None:
    """The cached snapshot folder of ``repo_id``, read from the local cache only (never the network)."""
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, or huggingface_hub missing: the caller tries the catalog next
        return None
    return folder if (folder / "config.json").is_file() else None


def from_catalog(entry: CatalogEntry) -> ModelInfo:
    """ModelInfo from a catalog entry's stored config and counts (no torch needed)."""
    info = _shape_from_config(entry.config, name=entry.id, source="catalog")
    info.params = dict(entry.param_groups)
    info.linears = [LinearGroup(**g) for g in entry.linears]
    info.supports_sdpa = entry.supports_sdpa
    info.has_chat_template = entry.chat_template
    info.note = " ".join(n for n in (moe_note(info), entry.note) if n)  # the publisher's advice too
    return info


def moe_note(info: ModelInfo) -> str:
    """What training a transformers-5 mixture-of-experts model does with its experts.

    transformers 5 keeps each layer's experts as 3D parameters (``gate_up_proj``, ``down_proj``), not
    ``nn.Linear``. In 4-bit the studio quantises them per expert to NF4 and keeps them frozen
    (studio.train.moe4bit); in 16 and 8 bit they stay in 16-bit and LoRA all-linear adapts them.
    """
    if not fused_experts(info):
        return ""
    experts = info.params["experts"]
    share = experts / max(1, info.total_params)
    return (f"Mixture of experts: {experts / 1e9:.1f}B of its parameters ({share:.0%}) are experts. In 4-bit they are "
            f"quantised to NF4 per expert (about {experts * 0.53 / (1 << 30):.0f} GiB instead of "
            f"{experts * 2 / (1 << 30):.0f} GiB in 16-bit) and stay frozen: LoRA adapts the attention and the "
            "other linear layers. In 16 or 8 bit the experts stay 16-bit and LoRA all-linear adapts them too.")


def from_folder(folder: Path, trust_remote_code: bool = False, source: str = "folder",
                name: str | None = None) -> ModelInfo:
    """ModelInfo from a model folder's config.json, counted on the meta device."""
    folder = Path(folder)
    cfg_file = folder / "config.json"
    config = read_config(folder)
    info = _shape_from_config(config, name=name or folder.name, source=source)
    info.path = str(folder.resolve())
    info.has_chat_template = _folder_has_chat_template(folder)
    info.params, info.linears, info.supports_sdpa = _cached_counts(cfg_file, config, folder, trust_remote_code)
    info.note = moe_note(info)
    return info


MAX_CONFIG_BYTES = 4 << 20  # real config.json files are a few kilobytes


def read_config(folder: Path) -> dict:
    """A model folder's config.json as a dict, or ModelError naming the file and what is wrong."""
    cfg_file = Path(folder) / "config.json"
    try:
        if cfg_file.stat().st_size > MAX_CONFIG_BYTES:
            raise ModelError(f"{cfg_file}: {cfg_file.stat().st_size} bytes is not a model config (they are a few "
                             "kilobytes); is the file damaged?")
        config = json.loads(cfg_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{folder}: no config.json; a model folder holds config.json and *.safetensors") from None
    except json.JSONDecodeError as e:
        raise ModelError(f"{cfg_file}: not valid JSON at line {e.lineno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise ModelError(f"{cfg_file}: not UTF-8 text; is the file damaged?") from None
    except RecursionError:
        raise ModelError(f"{cfg_file}: nested too deeply to be a model config; is the file damaged?") from None
    except OSError as e:
        raise ModelError(f"{cfg_file}: cannot be read ({e.strerror or e}); check the path and permissions") from None
    if not isinstance(config, dict):
        raise ModelError(f"{cfg_file}: a model config is a JSON object, found {type(config).__name__}")
    return config


# What a config may ask for. Building a model on the meta device costs time per layer, so a config
# asking for 10,000 layers would spin for minutes; the largest published models are far below these.
CONFIG_LIMITS = {"layers": 1024, "hidden": 131072, "intermediate": 1 << 20, "vocab": 4 << 20, "heads": 4096,
                 "kv_heads": 4096, "head_dim": 65536, "num_experts": 4096, "context": 1 << 24}


def _check_limits(info: "ModelInfo", name: str) -> None:
    for key, limit in CONFIG_LIMITS.items():
        value = getattr(info, key)
        if value < 0 or value > limit:
            raise ModelError(f"{name}: config.json asks for {key} = {value}, outside what LoRA Studio handles "
                             f"(0 to {limit}); is the config damaged?")


# Part of the count cache's key: a change in what is counted (issue 28: a multimodal checkpoint's language model
# alone, as training loads it) must not be answered from counts made under the old rule.
COUNTS_RULES = "language-model-only;shared-expert-is-mlp"


def _cached_counts(cfg_file: Path, config: dict, folder: Path, trust_remote_code: bool) -> tuple[dict, list, bool]:
    """Meta-device counts, cached per config.json content and transformers version (building is slow)."""
    import hashlib

    version = model_types.installed_transformers()
    key = hashlib.sha256(cfg_file.read_bytes() + version.encode() + COUNTS_RULES.encode()).hexdigest()[:24]
    cache = paths.data_dir() / "cache" / "model-counts" / f"{key}.json"
    try:
        raw = json.loads(cache.read_text(encoding="utf-8"))
        return raw["params"], [LinearGroup(**g) for g in raw["linears"]], raw["supports_sdpa"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    model = _meta_model(config, folder, trust_remote_code)
    params, linears, sdpa = _group_counts(model), _linear_groups(model), _supports_sdpa(model)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache, {"params": params, "linears": [asdict(g) for g in linears], "supports_sdpa": sdpa})
    except OSError:  # a read-only data folder only costs speed
        pass
    return params, linears, sdpa


def _folder_has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    tok_cfg = folder / "tokenizer_config.json"
    try:
        return bool(json.loads(tok_cfg.read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return False


def _text_config(config: dict) -> dict:
    """Multimodal configs nest the language model under text_config."""
    inner = config.get("text_config")
    return {**config, **inner} if isinstance(inner, dict) else config


def _shape_from_config(config: dict, name: str, source: str) -> ModelInfo:
    """The shape facts straight from config.json (counts are filled in separately). A downloaded model whose
    type the installed transformers does not know is named as such first (studio.model_types)."""
    if source in ("folder", "hf-cache") and not config.get("auto_map"):  # remote code: transformers' own check
        newer = model_types.unknown_type(config, name)
        if newer:
            raise ModelError(newer, model_types.HINT)
    c = _text_config(config)

    def get(*keys: str, default: Any = None) -> Any:
        return next((c[k] for k in keys if c.get(k) is not None), default)

    try:
        info = _info_from_config(c, get, name, source)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError) as e:
        if isinstance(e, ModelError):
            raise
        raise ModelError(f"{name}: config.json has a value that is not a usable number ({e}); is the config "
                         "damaged?") from None
    _check_limits(info, name)
    return info


def _info_from_config(c: dict, get: Any, name: str, source: str) -> ModelInfo:
    hidden = int(get("hidden_size", "n_embd", "d_model", default=0))
    heads = int(get("num_attention_heads", "n_head", default=1))
    if not hidden or "vocab_size" not in c:
        raise ModelError(f"{name}: config.json lacks hidden_size or vocab_size; is this a causal language model?")
    archs = c.get("architectures") or [""]
    return ModelInfo(
        name=name, source=source, architecture=archs[0], model_type=str(c.get("model_type", "")),
        vocab=int(c["vocab_size"]), layers=int(get("num_hidden_layers", "n_layer", default=0)), hidden=hidden,
        # an MoE's experts are what is wide: their own size (Qwen3-MoE and Qwen3.5-MoE give both sizes)
        intermediate=int(get(*(("moe_intermediate_size",) if get("num_local_experts", "num_experts", "n_routed_experts")
                               else ()), "intermediate_size", "moe_intermediate_size", "n_inner", default=4 * hidden)),
        heads=heads, kv_heads=int(get("num_key_value_heads", default=heads)),
        head_dim=int(get("head_dim", default=hidden // heads)),
        context=int(get("max_position_embeddings", "n_positions", "seq_length", default=2048)),
        tied=bool(c.get("tie_word_embeddings", True)), has_chat_template=False,
        num_experts=int(get("num_local_experts", "num_experts", "n_routed_experts", default=0)),
        experts_per_token=int(get("num_experts_per_tok", "top_k", default=0)),
        norms_per_layer=(4 if c.get("model_type") in ("gemma2", "gemma3", "gemma3_text", "olmo2", *GEMMA4_TYPES) else 2)
        + (1 if c.get("model_type") in GEMMA4_TYPES and c.get("hidden_size_per_layer_input") else 0),
        logit_softcap=bool(c.get("final_logit_softcapping")), attn_softcap=bool(c.get("attn_logit_softcapping")),
        qk_norm=c.get("model_type") in ("qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2", *QWEN35_TYPES,
                                        *GEMMA4_TYPES),
        sliding_window=int(get("sliding_window", default=0) or 0) if c.get("use_sliding_window", True) else 0,
        sliding_layers=_sliding_layers(c), shared_expert=int(get("shared_expert_intermediate_size", default=0) or 0),
        **_linear_attention(c), **_gemma4(c))


GEMMA4_TYPES = ("gemma4", "gemma4_text")


def _gemma4(c: dict) -> dict[str, Any]:
    """Gemma 4's per-kind attention and per-layer inputs, as Gemma4TextConfig derives them (transformers 5.23:
    global layers take global_head_dim, default 512, and num_global_key_value_heads when attention_k_eq_v;
    the last num_kv_shared_layers layers reuse the keys and values of the last earlier layer of their kind)."""
    if c.get("model_type") not in GEMMA4_TYPES:
        return {}
    types = layer_types(c) or ["sliding_attention" if (i + 1) % 6 else "full_attention"
                               for i in range(int(c.get("num_hidden_layers", 0)))]
    shared = types[len(types) - int(c.get("num_kv_shared_layers") or 0):] if c.get("num_kv_shared_layers") else []
    kv = c.get("num_global_key_value_heads") if c.get("attention_k_eq_v") else None
    head_dim = c.get("global_head_dim") or 512
    per_layer = c.get("per_layer_config")  # what transformers saves once it has derived the global layers' shape
    if isinstance(per_layer, dict):
        glob = [v for k, v in per_layer.items() if isinstance(v, dict) and str(k).isdigit()
                and int(k) < len(types) and types[int(k)] == "full_attention"]
        head_dim = next((g["head_dim"] for g in glob if g.get("head_dim")), head_dim)
        kv = next((g["num_key_value_heads"] for g in glob if g.get("num_key_value_heads")), kv)
    return {"full_head_dim": int(head_dim), "full_kv_heads": int(kv or 0),
            "kv_shared_sliding": sum(1 for t in shared if t == "sliding_attention"),
            "kv_shared_full": sum(1 for t in shared if t != "sliding_attention"),
            "per_layer_input": int(c.get("hidden_size_per_layer_input") or 0)}


# Qwen3.5 (transformers 5.23): Gated DeltaNet layers between full-attention layers whose output is gated
QWEN35_TYPES = ("qwen3_5", "qwen3_5_text", "qwen3_5_moe", "qwen3_5_moe_text")


def layer_types(c: dict) -> list[str]:
    """Each decoder layer's kind as config.json gives it (layer_types), or as transformers derives it from
    full_attention_interval (every n-th layer full attention, the others linear: Qwen3_5TextConfig)."""
    types = c.get("layer_types")
    if isinstance(types, list):
        return [str(t) for t in types]
    interval = c.get("full_attention_interval")
    if c.get("model_type") in QWEN35_TYPES or interval:
        n, every = int(c.get("num_hidden_layers", 0)), int(interval or 4)
        return ["linear_attention" if (i + 1) % every else "full_attention" for i in range(n)]
    return []


def _linear_attention(c: dict) -> dict[str, Any]:
    """The linear-attention facts of ModelInfo (none for a model without such layers)."""
    types = layer_types(c)
    count = sum(1 for t in types if t == "linear_attention")
    gate = c.get("model_type") in QWEN35_TYPES or bool(c.get("attn_output_gate"))  # transformers always gates Qwen3.5
    if not count:
        return {"attn_output_gate": gate}
    return {"linear_layers": count, "linear_leading": next((i for i, t in enumerate(types) if t != "linear_attention"), len(types)), "attn_output_gate": gate,
            "linear_k_heads": int(c.get("linear_num_key_heads", 16)),
            "linear_v_heads": int(c.get("linear_num_value_heads", 32)),
            "linear_k_dim": int(c.get("linear_key_head_dim", 128)),
            "linear_v_dim": int(c.get("linear_value_head_dim", 128)),
            "linear_conv": int(c.get("linear_conv_kernel_dim", 4))}


def _sliding_layers(c: dict) -> int:
    """Layers with a local window: those config.layer_types names so, else all of them when a window is set."""
    if not c.get("sliding_window") or not c.get("use_sliding_window", True):
        return 0
    types = c.get("layer_types")
    if isinstance(types, list):
        return sum(1 for t in types if t == "sliding_attention")
    if c.get("model_type") == "gemma2":
        return int(c.get("num_hidden_layers", 0)) // 2  # alternating local/global
    return int(c.get("num_hidden_layers", 0))


# --- an estimate from config.json alone (search results: no torch, no weights) --------------------------
def estimate_from_config(config: dict, name: str, source: str = "hub") -> ModelInfo:
    """Shapes and parameter groups of a Llama-style decoder from its config, without building it.

    For models not in the catalog and not downloaded (a search result): the planner needs linear
    layers and parameter groups; this counts them as a dense or mixture-of-experts Llama would have
    them (q/k/v/o, gate/up/down or experts held as 3D parameters, embeddings, lm_head). Exact counts
    come from the meta device once the model is downloaded.
    """
    info = _shape_from_config(config, name=name, source=source)
    c = _text_config(config)
    h, q, kv, L = info.hidden, info.q_dim, info.kv_dim, info.layers
    moe_inter = int(c.get("moe_intermediate_size") or info.intermediate)
    dense_inter = int(c.get("intermediate_size") or 4 * h)
    bias = bool(c.get("attention_bias"))
    linears = [LinearGroup("q_proj", h, q, L, bias), LinearGroup("k_proj", h, kv, L, bias),
               LinearGroup("v_proj", h, kv, L, bias), LinearGroup("o_proj", q, h, L)]
    params = {"embeddings": info.vocab * h, "attention": L * (2 * h * q + 2 * h * kv) + (L * (q + 2 * kv) if bias else 0),
              "norms": L * info.norms_per_layer * h + h}
    if info.num_experts:
        params["experts"] = L * info.num_experts * 3 * h * moe_inter
        params["router"] = L * info.num_experts * h
        linears.append(LinearGroup("gate", h, info.num_experts, L, quantized=False, lora_all_linear=False))
    else:
        linears += [LinearGroup("gate_proj", h, dense_inter, L), LinearGroup("up_proj", h, dense_inter, L),
                    LinearGroup("down_proj", dense_inter, h, L)]
        params["mlp"] = L * 3 * h * dense_inter
    if not info.tied:
        params["lm_head"] = info.vocab * h
        linears.append(LinearGroup("lm_head", h, info.vocab, 1, quantized=False, lora_all_linear=False))
    info.params, info.linears = params, linears
    info.note = "shapes estimated from config.json (exact counts once downloaded)"
    return info


# --- exact counts on the meta device ----------------------------------------------------------------
def count_parameters(config: dict, folder: Path | None = None,
                     trust_remote_code: bool = False) -> tuple[dict[str, int], list[LinearGroup]]:
    """Build the model on the meta device and count every parameter by group, plus its linear layers."""
    model = _meta_model(config, folder, trust_remote_code)
    return _group_counts(model), _linear_groups(model)


def _supports_sdpa(model: Any) -> bool:
    """Whether transformers accepts attn_implementation="sdpa" for this model class."""
    return bool(getattr(type(model), "_supports_sdpa", True))


def _meta_model(config: dict, folder: Path | None, trust_remote_code: bool) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    newer = model_types.unknown_type(config, str(folder or config.get("model_type")), trust_remote_code)
    if newer:
        raise ModelError(newer, model_types.HINT)
    try:
        if folder is not None:
            cfg = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        else:
            kw = {k: v for k, v in config.items() if k != "model_type"}
            cfg = AutoConfig.for_model(config["model_type"], **kw)
        if multimodal.is_multimodal(cfg.to_dict()):  # the language model alone, as training loads it
            cls, text = multimodal.language_model_class(cfg)
            if cls is not None:
                with torch.device("meta"):
                    return cls(text)
            part = multimodal.language_part(cfg)  # no causal LM class of its own: taken from the whole model
            if part is not None:
                return part
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
    except ValueError as e:
        hint = " (it ships its own code: allow trust_remote_code for this model if you trust it)" \
            if "trust_remote_code" in str(e) else ""
        raise ModelError(f"{folder or config.get('model_type')}: transformers cannot build this model: "
                         f"{str(e).splitlines()[0]}{hint}") from None


def _group_of(name: str, is_moe: bool) -> str:
    n = name.lower()
    if "norm" in n or re.search(r"(^|\.)ln_", n):
        return "norms"
    if "expert" in n and "shared_expert" not in n:  # a shared expert is an ordinary MLP of linear layers
        return "experts"
    if is_moe and re.search(r"\.(gate|router)(\.|$)", n):
        return "router"
    if re.search(r"attn|attention", n):
        return "attention"
    if re.search(r"mlp|feed_forward|ffn", n):
        return "mlp"
    return "other"


def _group_counts(model: Any) -> dict[str, int]:
    """Parameters per group; tied weights are counted once (as embeddings)."""
    emb = model.get_input_embeddings()
    out = model.get_output_embeddings()
    ids = {id(p): "embeddings" for p in emb.parameters()}
    if out is not None:
        ids.update({id(p): "lm_head" for p in out.parameters() if id(p) not in ids})
    is_moe = bool(getattr(model.config, "num_local_experts", 0) or getattr(model.config, "num_experts", 0))
    counts = dict.fromkeys(GROUPS, 0)
    for name, p in model.named_parameters():  # remove_duplicate=True: a tied weight appears once
        counts[ids.get(id(p)) or _group_of(name, is_moe)] += p.numel()
    return {k: v for k, v in counts.items() if v}


def _linear_groups(model: Any) -> list[LinearGroup]:
    """Linear layers grouped by short name and shape, with what bitsandbytes and peft do to each."""
    import torch.nn as nn

    out = model.get_output_embeddings()
    in_w = model.get_input_embeddings().weight
    groups: dict[tuple, LinearGroup] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        is_output = module is out or module.weight is in_w
        key = (name.rsplit(".", 1)[-1], module.in_features, module.out_features, module.bias is not None, is_output)
        if key not in groups:
            groups[key] = LinearGroup(name=key[0], in_features=key[1], out_features=key[2], count=0, bias=key[3],
                                      quantized=type(module) is nn.Linear and not is_output,
                                      lora_all_linear=not is_output)
        groups[key].count += 1
    return list(groups.values())


def _tower_params(config: dict, language: int) -> int:
    """Parameters of a multimodal checkpoint outside its language model (the whole model on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    cfg = AutoConfig.for_model(config["model_type"], **{k: v for k, v in config.items() if k != "model_type"})
    with torch.device("meta"):
        whole = AutoModelForImageTextToText.from_config(cfg, trust_remote_code=False)
    return sum(p.numel() for p in whole.parameters()) - language


def refresh_catalog(path: Path | None = None) -> int:
    """Recompute every catalog entry's counts on the meta device and rewrite the file atomically."""
    path = path or catalog_path()
    raw = json.loads(path.read_text(encoding="utf-8"))
    for e in raw["models"]:
        model = _meta_model(e["config"], None, False)
        e["param_groups"], e["linears"] = _group_counts(model), [asdict(g) for g in _linear_groups(model)]
        e["supports_sdpa"] = _supports_sdpa(model)
        if multimodal.is_multimodal(e["config"]):
            e["tower_params"] = _tower_params(e["config"], sum(e["param_groups"].values()))
    atomic_write_text(path, json.dumps(raw, indent=1) + "\n")
    global _CATALOG
    _CATALOG = None
    return len(raw["models"])


if __name__ == "__main__":  # python -m studio.models refresh
    if sys.argv[1:] == ["refresh"]:
        print(f"refreshed {refresh_catalog()} catalog entries")
    else:
        print("usage: python -m studio.models refresh")
