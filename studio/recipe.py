"""The run configuration: small dataclasses, one per concern, with a JSON round trip.

Every field carries a one-line ``doc`` in its metadata; the UI shows it as the tooltip and the
CLI as help. Old files are migrated by ``schema_version``, unknown keys produce warnings (never
a crash) and ``validate()`` returns every problem at once, each with a way to fix it.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from studio import objectives
from studio.fsutil import atomic_write_text
from studio.image_tokens import DEFAULT_MAX_PIXELS
from studio.methods import NAMES as METHOD_NAMES
from studio.methods import recipe_problems as _method_problems

SCHEMA_VERSION = 1
MAX_RECIPE_BYTES = 1 << 20  # a recipe is a few hundred bytes; a megabyte is not one
MAX_RECIPE_DEPTH = 16


def _depth(value: Any) -> int:
    """How deeply lists and objects nest (iterative: a hostile file must not exhaust the stack here)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d <= MAX_RECIPE_DEPTH:
                stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest

QUANT_MODES = ("4bit", "8bit", "none")
OPTIMIZERS = ("adamw_torch", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit")
ATTN_IMPLS = ("sdpa", "eager", "flash_attention_2")
KERNELS = ("auto", "torch", "liger")
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
DTYPES = ("auto", "bfloat16", "float16", "float32")
QUANT_TYPES = ("nf4", "fp4")
TRAIN_ON = ("assistant", "all")
OBJECTIVES = objectives.NAMES  # docs/objectives.md; dpo and orpo need chosen/rejected pairs, grpo prompts
PREFERENCE_OBJECTIVES = objectives.PAIRED
REWARD_OBJECTIVES = objectives.SAMPLING
TRL_OBJECTIVES = objectives.TRL
ANSWER_MATCH = ("exact", "contains", "numeric")
# grpo's sampling and rewards (studio.rewards; docs/objectives.md)
GRPO_SETTINGS = ("train.grpo_generations", "train.grpo_completion_len", "train.grpo_temperature", "train.grpo_beta",
                 "train.grpo_rewards", "train.grpo_pattern", "train.grpo_answer_match", "train.grpo_tolerance",
                 "train.grpo_schema", "train.grpo_min_tokens", "train.grpo_max_tokens", "train.grpo_reward_file")
# What the adapter is trained on and how sequences are built: `train` and `plan` take them as flags.
OBJECTIVE_SETTINGS = ("train.objective", "train.pref_beta", "train.packing") + GRPO_SETTINGS
STRATEGIES = ("auto", "ddp", "fsdp")
# The settings the planner chooses (and a run's memory depends on), by their recipe names.
PLANNED: tuple[str, ...] = ("quant.mode", "quant.double_quant", "quant.compute_dtype", "lora.rank", "lora.alpha", "lora.targets",
           "lora.dropout", "train.micro_batch", "train.grad_accum", "train.seq_len", "train.grad_ckpt", "train.attn",
           "train.optimizer", "train.tiled_head", "train.tiled_mlp", "train.offload_activations", "train.kernels")
PLANNED += ("lora.method", "lora.virtual_tokens")  # fixed by the user, never chosen by the planner


def _f(default: Any, doc: str, **kw: Any) -> Any:
    """A dataclass field with its user-facing one-line doc and its vocabulary.

    ``choices``: the allowed values; ``min``/``max``: inclusive bounds, ``gt``/``lt``: exclusive
    ones; ``flag``: the command-line flag when it is not ``--name-with-dashes``. ``validate()``, the
    Plan page's editors and the commands' argparse options all read these, nowhere else.
    """
    if isinstance(default, (list, dict)):
        def fresh() -> Any:  # each recipe gets its own copy of a mutable default
            return type(default)(default)
        return field(default_factory=fresh, metadata={"doc": doc, **kw})
    return field(default=default, metadata={"doc": doc, **kw})


@dataclass
class ModelSpec:
    name_or_path: str = _f("demo", "Base model: 'demo', a local folder, a Hugging Face cache id or a catalog id.")
    trust_remote_code: bool = _f(False, "Run Python code shipped with the model (only for models you trust).")
    allow_pickle: bool = _f(False, "Accept .bin/.pt weights (loaded with weights_only=True); safetensors otherwise.")


@dataclass
class DataSpec:
    path: str = _f("", "Dataset file or folder (JSONL, JSON, CSV, TSV, Parquet, text, datasets folder), or a folder of "
                       "documents (PDF, DOCX, ODT, EPUB, HTML, Markdown, text) for continued pre-training.")
    format: str = _f("auto", "Dataset format, or 'auto' to detect it.")
    columns: dict = _f({}, "Column mapping override, e.g. {'prompt': 'question', 'completion': 'answer'}.")
    roles: dict = _f({}, "Role value mapping, e.g. {'bing': 'assistant', 'human': 'user'}.")
    label_filter: bool = _f(True, "Train only rows a good/bad label column (KTO label, tag) marks good, when found.")
    val_fraction: float = _f(0.05, "Fraction of examples held out for validation (0 to disable).", min=0.0, lt=0.5)
    seed: int = _f(42, "Seed for the train/validation split and shuffling.", min=0, max=2**31 - 1)
    train_on: str = _f("assistant", "Which tokens of a conversation carry the loss: 'assistant' turns only, or "
                       "'all'. Documents and plain text always carry it on every token (continued pre-training).",
                       choices=TRAIN_ON)
    mix: str = _f("", "Chat rows (a dataset file) mixed into the training set, so a run on documents keeps the "
                  "model answering; their tokens follow data.train_on.")
    mix_ratio: float = _f(0.2, "Share of the training examples taken from data.mix (0.2: one in five).",
                          min=0.0, max=0.9)
    heldout: str = _f("", "Optional held-out prompts (JSONL) answered before and after training to show the change.")
    max_pixels: int = _f(DEFAULT_MAX_PIXELS, "Rows with images: each image is shrunk (aspect kept) to at most this many "
                         "pixels before the model's processor sees it (more pixels: more image tokens and memory).",
                         min=28 * 28, max=16384 * 28 * 28)


@dataclass
class LoraSpec:
    rank: int = _f(16, "LoRA rank r: capacity of the adapter; memory grows linearly with it.", min=1, max=4096)
    alpha: int = _f(32, "LoRA alpha: the update is scaled by alpha / rank.", min=1, max=65536)
    dropout: float = _f(0.05, "Dropout on the LoRA input during training.", min=0.0, lt=1.0)
    targets: list = _f(["all-linear"], "Modules to adapt: ['all-linear'] or names such as q_proj, v_proj.")
    method: str = _f("lora", "Adapter method: lora, rslora (rank-stabilised), dora (weight-decomposed), adalora "
                     "(adaptive rank), prefix (prefix tuning) or prompt (prompt tuning).", choices=METHOD_NAMES,
                     flag="--peft")
    virtual_tokens: int = _f(20, "Learned virtual tokens of prefix and prompt tuning (per layer for prefix).",
                             min=1, max=1024)


@dataclass
class QuantSpec:
    mode: str = _f("4bit", "Base weights: '4bit' (QLoRA, NF4), '8bit' (LLM.int8) or 'none' (16-bit).", choices=QUANT_MODES, flag="--quant")
    double_quant: bool = _f(True, "Quantise the 4-bit scales too (saves about 0.4 bit per weight).")
    quant_type: str = _f("nf4", "4-bit data type: 'nf4' (normal float) or 'fp4'.", choices=QUANT_TYPES)
    compute_dtype: str = _f("auto", "Dtype of matmuls and trainable weights: auto = bf16 on GPUs that have it, else fp16; fp32 on CPU.", choices=DTYPES)


@dataclass
class TrainSpec:
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1: run the epochs).", min=-1, max=10_000_000)
    epochs: float = _f(1.0, "Passes over the training set when max_steps is -1.", min=0.0, max=1000.0)
    micro_batch: int = _f(4, "Examples per forward pass on the GPU.", min=1, max=4096, flag="--batch")
    grad_accum: int = _f(4, "Micro-batches accumulated per optimizer step (effective batch = micro_batch x this).", min=1, max=65536)
    seq_len: int = _f(1024, "Longest example in tokens; longer ones are truncated.", min=16, max=1_048_576)
    lr: float = _f(2e-4, "Peak learning rate.", gt=0.0, lt=1.0)
    scheduler: str = _f("cosine", "Learning-rate schedule after warm-up.", choices=SCHEDULERS)
    warmup_ratio: float = _f(0.03, "Fraction of steps spent warming the learning rate up.", min=0.0, max=1.0)
    optimizer: str = _f("adamw_torch", "Optimizer: adamw_torch, adamw_8bit, paged_adamw_8bit or paged_adamw_32bit.", choices=OPTIMIZERS)
    weight_decay: float = _f(0.0, "AdamW weight decay.", min=0.0, max=10.0)
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.", min=0.0, max=1e6)
    grad_ckpt: bool = _f(True, "Gradient checkpointing: recompute activations to save memory (about 30% slower).")
    attn: str = _f("sdpa", "Attention implementation: sdpa, eager or flash_attention_2.", choices=ATTN_IMPLS)
    tiled_head: bool = _f(True, "Compute the loss through the output layer a tile at a time, never building the "
                                "tokens x vocabulary logits (same loss; far less memory at long lengths).")
    tiled_mlp: bool = _f(False, "Run each layer's MLP over the sequence in tiles and recompute them in backward: "
                                "for very long sequences (the planner turns it on when a length needs it).")
    offload_activations: bool = _f(False, "GPU only, with gradient checkpointing: keep each layer's saved input in "
                                          "host RAM between forward and backward (the planner turns it on when a "
                                          "length needs it and the machine has the RAM).")
    kernels: str = _f("auto", "Layer kernels on the GPU: liger (liger-kernel's fused RMSNorm, RoPE and SwiGLU, when "
                              "installed and the family is supported), torch, or auto (liger when it can run).",
                      choices=KERNELS)
    seed: int = _f(42, "Seed for weights of the adapter, dropout and data order.", min=0, max=2**31 - 1)
    logging_steps: int = _f(1, "Emit a metric event every N optimizer steps.", min=1, max=1_000_000)
    eval_steps: int = _f(0, "Evaluate on the validation split every N steps (0: at the end only).", min=0, max=10_000_000)
    save_steps: int = _f(50, "Write a checkpoint every N optimizer steps.", min=1, max=10_000_000)
    keep_checkpoints: int = _f(2, "How many checkpoints to keep (older ones are deleted).", min=1, max=1000)
    objective: str = _f("sft", "What the adapter learns: 'sft' imitates the answers; 'dpo' and 'orpo' learn from "
                               "chosen/rejected pairs (dpo compares with the base model, orpo needs no reference); "
                               "'grpo' samples completions of the prompts and learns from their rewards.",
                        choices=OBJECTIVES)
    pref_beta: float = _f(0.1, "Preference strength: DPO's beta (higher keeps the adapter closer to the base) or "
                               "ORPO's weight of the odds-ratio term next to the chosen answers' loss.",
                          gt=0.0, max=100.0)
    grpo_generations: int = _f(4, "grpo: completions sampled per prompt, compared with each other (the effective "
                                  "batch micro_batch x grad_accum holds whole groups of them).", min=2, max=64,
                               flag="--generations")
    grpo_completion_len: int = _f(128, "grpo: the longest completion sampled, in tokens (longer ones are cut and "
                                       "counted as cut).", min=1, max=32768, flag="--completion-len")
    grpo_temperature: float = _f(1.0, "grpo: sampling temperature (higher: more varied completions to compare).",
                                 gt=0.0, max=2.0, flag="--sample-temperature")
    grpo_beta: float = _f(0.04, "grpo: KL weight keeping the adapter near the base (0: no reference pass, "
                                "faster, free to drift).", min=0.0, max=10.0, flag="--kl-beta")
    grpo_rewards: str = _f("pattern", "grpo: the rewards and their weights, NAME[:WEIGHT],...: pattern (the row's "
                                      "'pattern' regex), answer (the row's 'answer'), json (valid JSON, a schema), "
                                      "length (a band of tokens), file (train.grpo_reward_file).", flag="--rewards")
    grpo_pattern: str = _f("", "grpo: the regular expression of the pattern reward for rows without a 'pattern' "
                               "column.", flag="--reward-pattern")
    grpo_answer_match: str = _f("contains", "grpo: how the answer reward compares: exact (the final answer), "
                                            "contains, or numeric (the last number, within grpo_tolerance).",
                                choices=ANSWER_MATCH, flag="--answer-match")
    grpo_tolerance: float = _f(1e-6, "grpo: relative tolerance of a numeric answer.", min=0.0, max=1.0,
                               flag="--answer-tolerance")
    grpo_schema: str = _f("", "grpo: a JSON Schema file the json reward checks completions against (empty: any "
                              "valid JSON).", flag="--json-schema")
    grpo_min_tokens: int = _f(0, "grpo: the length reward's band starts here (completion tokens).", min=0,
                              max=32768, flag="--reward-min-tokens")
    grpo_max_tokens: int = _f(0, "grpo: the length reward's band ends here (0: grpo_completion_len).", min=0,
                              max=32768, flag="--reward-max-tokens")
    grpo_reward_file: str = _f("", "grpo: your own reward, a Python file with def reward(prompt, completion, **row) "
                                   "-> float; it runs only after you agree to it.", flag="--reward-file")
    grpo_reward_sha256: str = _f("", "grpo: the sha256 of the reward file you agreed to run (set by the prompt in "
                                     "the terminal or the window; a changed file is refused).")
    vision_lora: bool = _f(False, "Rows with images on a vision-language model: adapt the vision tower's linear "
                                  "layers with LoRA too (by default the tower is frozen and only the language model "
                                  "is adapted).")
    packing: bool = _f(False, "SFT only: put several short examples in one sequence (no padding), with attention "
                              "kept within each example.")
    # Several processes (GPUs) under torchrun: docs/multi-gpu.md.
    nproc: int = _f(1, "Training processes, one per GPU, started with torchrun (1: a single process).",
                    min=1, max=1024)
    gpus: str = _f("", "GPU indices to train on, comma-separated ('0,1'); empty: the first nproc GPUs. "
                       "Sets CUDA_VISIBLE_DEVICES; nproc follows its length.")
    strategy: str = _f("auto", "With several processes: ddp (a full copy of the model per GPU: faster), fsdp "
                               "(weights and optimizer state sharded: for models no single GPU holds), or auto "
                               "(the planner's choice).", choices=STRATEGIES)


@dataclass
class Recipe:
    name: str = _f("", "A short name for the run (defaults to the model and dataset names).")
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    lora: LoraSpec = field(default_factory=LoraSpec)
    quant: QuantSpec = field(default_factory=QuantSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    schema_version: int = SCHEMA_VERSION

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, raw: dict, warnings: list[str] | None = None) -> "Recipe":
        """Build a recipe from a dict, migrating old versions; unknown keys become warnings."""
        warnings = warnings if warnings is not None else []
        raw = migrate(dict(raw), warnings)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in raw:
                continue
            value = raw.pop(f.name)
            sub = _SECTIONS.get(f.name)
            kwargs[f.name] = _section_from_dict(sub, value, f.name, warnings) if sub else value
        for key in raw:
            warnings.append(f"recipe: unknown key '{key}' ignored")
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path, warnings: list[str] | None = None) -> "Recipe":
        path = Path(path)
        try:
            if path.is_dir():
                raise RecipeError(f"{path}: is a folder, not a recipe file; give the recipe.json inside it")
            if path.stat().st_size > MAX_RECIPE_BYTES:
                raise RecipeError(f"{path}: {path.stat().st_size} bytes is far too large for a recipe "
                                  f"(at most {MAX_RECIPE_BYTES // 1024} KiB); give the recipe.json of a run")
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RecipeError(f"{path}: recipe file not found") from None
        except UnicodeDecodeError as e:
            raise RecipeError(f"{path}: not UTF-8 text (byte {e.start}); save the recipe as UTF-8 JSON") from None
        except json.JSONDecodeError as e:
            raise RecipeError(f"{path}: not valid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
        except RecursionError:
            raise RecipeError(f"{path}: nested too deeply to be a recipe; a recipe is one object of sections "
                              "(model, data, lora, quant, train) holding plain values") from None
        except OSError as e:
            raise RecipeError(f"{path}: cannot be read ({e.strerror or e}); check the path and its permissions") from None
        if not isinstance(raw, dict):
            raise RecipeError(f"{path}: a recipe is a JSON object, found {type(raw).__name__}")
        if _depth(raw) > MAX_RECIPE_DEPTH:
            raise RecipeError(f"{path}: nested more than {MAX_RECIPE_DEPTH} levels deep; a recipe is one object of "
                              "sections (model, data, lora, quant, train) holding plain values")
        return cls.from_dict(raw, warnings)

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), self.to_json())

    # -- checks -----------------------------------------------------------------------------
    def validate(self) -> list["Problem"]:
        """Every problem at once, each with the field and how to fix it."""
        return [p for check in _CHECKS for p in check(self)]


class RecipeError(ValueError):
    """A recipe that cannot be read or used; the message says where and what to do."""


@dataclass
class Problem:
    field: str
    message: str
    hint: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message} ({self.hint})"


SECTIONS = _SECTIONS = {"model": ModelSpec, "data": DataSpec, "lora": LoraSpec, "quant": QuantSpec, "train": TrainSpec}


def _section_from_dict(cls: type, value: Any, name: str, warnings: list[str]) -> Any:
    if not isinstance(value, dict):
        warnings.append(f"recipe: '{name}' should be an object; defaults used")
        return cls()
    known = {f.name for f in dataclasses.fields(cls)}
    for key in value:
        if key not in known:
            warnings.append(f"recipe: unknown key '{name}.{key}' ignored")
    return cls(**{k: v for k, v in value.items() if k in known})


def migrate(raw: dict, warnings: list[str]) -> dict:
    """Bring an older recipe dict up to SCHEMA_VERSION (version 0 had no schema_version)."""
    version = raw.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        warnings.append(f"recipe: schema_version {version!r} is newer than this studio ({SCHEMA_VERSION}); "
                        "reading what is known")
    elif version == 0:
        # v0 kept LoRA targets as a comma string and the quant mode as "load_in_4bit".
        lora = raw.get("lora") or {}
        if isinstance(lora.get("targets"), str):
            lora["targets"] = [t.strip() for t in lora["targets"].split(",") if t.strip()]
        quant = raw.get("quant") or {}
        if "load_in_4bit" in quant:
            quant["mode"] = "4bit" if quant.pop("load_in_4bit") else "none"
    raw["schema_version"] = SCHEMA_VERSION
    return raw


def field_doc(section: str, name: str) -> str:
    """The one-line doc of ``section.name`` (for tooltips and --help)."""
    cls = _SECTIONS[section]
    return next(f.metadata.get("doc", "") for f in dataclasses.fields(cls) if f.name == name)


def _check_types(r: Recipe) -> list[Problem]:
    out = []
    if not isinstance(r.name, str):
        out.append(Problem("name", f"expected str, got {r.name!r}", "set it to a short text, e.g. \"my-run\""))
    for section, cls in _SECTIONS.items():
        obj = getattr(r, section)
        for f in dataclasses.fields(cls):
            value = getattr(obj, f.name)
            want = type(default_of(f))
            ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                out.append(Problem(f"{section}.{f.name}", f"expected {want.__name__}, got {value!r}",
                                   f"set it to a {want.__name__}, e.g. {default_of(f)!r}"))
    return out


def default_of(f: dataclasses.Field) -> Any:
    """A recipe field's default value (a fresh copy for a list or dict); every field has one (``_f``)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"recipe field {f.name} has no default")


def _fields() -> list[tuple[str, dataclasses.Field]]:
    return [(f"{section}.{f.name}", f) for section, cls in _SECTIONS.items() for f in dataclasses.fields(cls)]


def _check_choices(r: Recipe) -> list[Problem]:
    out = []
    for key, f in _fields():
        allowed, value = f.metadata.get("choices"), get_setting(r, key)
        if allowed and value not in allowed:
            out.append(Problem(key, f"{value!r} is not one of {', '.join(allowed)}", f"use one of: {', '.join(allowed)}"))
    return out


def bounds_text(meta: Mapping[str, Any]) -> str:
    """``at least 1 and at most 4096``, ``above 0 and below 1``: a field's range in words."""
    parts = [f"{word} {_num(meta[k])}" for k, word in (("min", "at least"), ("gt", "above"), ("max", "at most"),
                                                   ("lt", "below")) if k in meta]
    return " and ".join(parts)


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:g}"


def in_bounds(value: float, meta: Mapping[str, Any]) -> bool:
    """Whether a number is finite and inside the field's bounds (NaN is never in bounds)."""
    if not math.isfinite(value):
        return False
    return (value >= meta.get("min", -math.inf) and value > meta.get("gt", -math.inf)
            and value <= meta.get("max", math.inf) and value < meta.get("lt", math.inf))


def _check_bounds(r: Recipe) -> list[Problem]:
    out = []
    for key, f in _fields():
        value = get_setting(r, key)
        if not bounds_text(f.metadata) or not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if not in_bounds(value, f.metadata):
            what = "is not a finite number" if not math.isfinite(value) else "is outside its range"
            out.append(Problem(key, f"{value} {what}: it must be {bounds_text(f.metadata)}",
                               f"set {key} to a number {bounds_text(f.metadata)}, e.g. {f.default!r}"))
    return out


def _check_ranges(r: Recipe) -> list[Problem]:
    """What bounds alone cannot say: combinations of fields."""
    t, lo = r.train, r.lora
    out = []
    if isinstance(t.max_steps, int) and t.max_steps == 0:
        out.append(Problem("train.max_steps", f"{t.max_steps} steps would train nothing", "use -1 (epochs) or a positive number"))
    if t.max_steps == -1 and isinstance(t.epochs, (int, float)) and t.epochs == 0:
        out.append(Problem("train.epochs", f"{t.epochs} epochs would train nothing", "use a positive number such as 1"))
    if isinstance(t.gpus, str) and t.gpus.strip():
        ids = [g.strip() for g in t.gpus.split(",")]
        if not all(g.isdigit() for g in ids) or len(set(ids)) != len(ids):
            out.append(Problem("train.gpus", f"{t.gpus!r} is not a list of distinct GPU indices",
                               "write them comma-separated, e.g. '0,1' ('lora-studio doctor' lists the GPUs)"))
        elif isinstance(t.nproc, int) and t.nproc not in (1, len(ids)):
            out.append(Problem("train.nproc", f"{t.nproc} processes for {len(ids)} GPUs ({t.gpus})",
                               f"use nproc {len(ids)} (one process per GPU), or leave train.gpus empty"))
    if isinstance(lo.targets, list) and not lo.targets:
        out.append(Problem("lora.targets", "no modules to adapt", "use ['all-linear'] or names such as q_proj, v_proj"))
    return out


def _check_required(r: Recipe) -> list[Problem]:
    out = []
    if not str(r.model.name_or_path).strip():
        out.append(Problem("model.name_or_path", "no base model given", "use 'demo', a folder or a catalog id"))
    if not str(r.data.path).strip():
        out.append(Problem("data.path", "no dataset given", "point it at a JSONL, CSV, Parquet or text file"))
    return out


def _check_method(r: Recipe) -> list[Problem]:
    """Adapter-method combinations no device can train (device-specific refusals come from the worker)."""
    return [Problem(*p) for p in _method_problems(r.lora.method, r.quant.mode, r.lora.targets, r.train.grad_ckpt)]


def _check_objective(r: Recipe) -> list[Problem]:
    """Settings that only one objective uses."""
    t = r.train
    out = []
    if t.packing is True and t.objective in TRL_OBJECTIVES:
        out.append(Problem("train.packing", f"packing applies to the sft objective, not {t.objective}",
                           "turn train.packing off (--no-packing) or use train.objective 'sft'"))
    if t.objective in REWARD_OBJECTIVES:
        out += _check_grpo(t)
    return out


def _check_grpo(t: "TrainSpec") -> list[Problem]:
    from studio.rewards import RewardError, parse_mix

    out = []
    batch = t.micro_batch * t.grad_accum
    if isinstance(t.grpo_generations, int) and t.grpo_generations >= 2 and batch % t.grpo_generations:
        fix = -(-batch // t.grpo_generations) * t.grpo_generations
        out.append(Problem("train.grad_accum", f"the effective batch micro_batch x grad_accum = {batch} must hold whole "
                                               f"groups of train.grpo_generations = {t.grpo_generations} completions",
                           f"make micro_batch x grad_accum a multiple of {t.grpo_generations} (for example {fix})"))
    try:
        names = {n for n, _ in parse_mix(t.grpo_rewards)}
    except RewardError as e:
        return out + [Problem("train.grpo_rewards", str(e).split(": ", 1)[-1], "for example 'pattern' or "
                              "'answer:1,length:0.2'")]
    if "file" in names and not str(t.grpo_reward_file).strip():
        out.append(Problem("train.grpo_reward_file", "the rewards name 'file' and no reward file is given",
                           "set train.grpo_reward_file (--reward-file my_reward.py)"))
    if t.grpo_max_tokens and t.grpo_min_tokens > t.grpo_max_tokens:
        out.append(Problem("train.grpo_min_tokens", f"the length band {t.grpo_min_tokens}-{t.grpo_max_tokens} is "
                           "empty", "make grpo_min_tokens at most grpo_max_tokens"))
    if str(t.grpo_pattern).strip():
        from studio.scoring import PromptFileError, _check_pattern

        try:
            _check_pattern(t.grpo_pattern, "train.grpo_pattern")
        except PromptFileError as e:
            out.append(Problem("train.grpo_pattern", str(e).split(": ", 1)[-1], "fix the regular expression"))
    if t.nproc > 1:
        out.append(Problem("train.nproc", "grpo trains in one process in this version (the pattern reward compares "
                           "each step's completions, which several processes would split)", "set train.nproc to 1"))
    if t.grpo_completion_len >= t.seq_len:
        out.append(Problem("train.grpo_completion_len", f"{t.grpo_completion_len} completion tokens leave no room "
                           f"for a prompt in train.seq_len = {t.seq_len}",
                           "lower grpo_completion_len or raise train.seq_len"))
    return out


_CHECKS = (_check_required, _check_types, _check_choices, _check_bounds, _check_ranges, _check_method,
           _check_objective)


def setting_field(key: str) -> dataclasses.Field:
    """The dataclass field of ``"section.name"`` (its metadata holds the doc, choices and bounds)."""
    section, name = key.split(".", 1)
    return next(f for f in dataclasses.fields(_SECTIONS[section]) if f.name == name)


def is_setting(key: str) -> bool:
    """Whether ``key`` names a recipe field (``"lora.rank"``)."""
    section, _, name = key.partition(".")
    return section in _SECTIONS and name in {f.name for f in dataclasses.fields(_SECTIONS[section])}


def setting_flag(key: str) -> str:
    """The command-line flag of a setting: ``--quant`` for quant.mode, ``--seq-len`` for train.seq_len."""
    return setting_field(key).metadata.get("flag") or "--" + key.split(".", 1)[1].replace("_", "-")


def get_setting(recipe: Recipe, key: str) -> Any:
    section, name = key.split(".", 1)
    return getattr(getattr(recipe, section), name)


def set_setting(recipe: Recipe, key: str, value: Any) -> None:
    section, name = key.split(".", 1)
    setattr(getattr(recipe, section), name, value)
