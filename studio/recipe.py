"""The run configuration: small dataclasses, one per concern, with a JSON round trip.

Every field carries a one-line ``doc`` in its metadata; the UI shows it as the tooltip and the
CLI as help. Old files are migrated by ``schema_version``, unknown keys produce warnings (never
a crash) and ``validate()`` returns every problem at once, each with a way to fix it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")
DTYPES = ("auto", "bfloat16", "float16", "float32")


def _f(default: Any, doc: str, **kw: Any) -> Any:
    """A dataclass field with its user-facing one-line doc."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc, **kw})
    return field(default=default, metadata={"doc": doc, **kw})


@dataclass
class ModelSpec:
    name_or_path: str = _f("demo", "Base model: 'demo', a local folder, a Hugging Face cache id or a catalog id.")
    trust_remote_code: bool = _f(False, "Run Python code shipped with the model (only for models you trust).")
    allow_pickle: bool = _f(False, "Accept .bin/.pt weights (loaded with weights_only=True); safetensors otherwise.")


@dataclass
class DataSpec:
    path: str = _f("", "Dataset file or folder (JSONL, JSON, CSV, TSV, Parquet, text, datasets folder).")
    format: str = _f("auto", "Dataset format, or 'auto' to detect it.")
    columns: dict = _f({}, "Column mapping override, e.g. {'prompt': 'question', 'completion': 'answer'}.")
    val_fraction: float = _f(0.05, "Fraction of examples held out for validation (0 to disable).")
    seed: int = _f(42, "Seed for the train/validation split and shuffling.")
    train_on: str = _f("assistant", "Which tokens carry the loss: 'assistant' turns only, or 'all'.")
    heldout: str = _f("", "Optional held-out prompts (JSONL) answered before and after training to show the change.")


@dataclass
class LoraSpec:
    rank: int = _f(16, "LoRA rank r: capacity of the adapter; memory grows linearly with it.")
    alpha: int = _f(32, "LoRA alpha: the update is scaled by alpha / rank.")
    dropout: float = _f(0.05, "Dropout on the LoRA input during training.")
    targets: list = _f(["all-linear"], "Modules to adapt: ['all-linear'] or names such as q_proj, v_proj.")


@dataclass
class QuantSpec:
    mode: str = _f("4bit", "Base weights: '4bit' (QLoRA, NF4), '8bit' (LLM.int8) or 'none' (16-bit).")
    double_quant: bool = _f(True, "Quantise the 4-bit scales too (saves about 0.4 bit per weight).")
    quant_type: str = _f("nf4", "4-bit data type: 'nf4' (normal float) or 'fp4'.")
    compute_dtype: str = _f("auto", "Dtype of matmuls and trainable weights: auto = bf16 on GPUs that have it, else fp16; fp32 on CPU.")


@dataclass
class TrainSpec:
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1: run the epochs).")
    epochs: float = _f(1.0, "Passes over the training set when max_steps is -1.")
    micro_batch: int = _f(4, "Examples per forward pass on the GPU.")
    grad_accum: int = _f(4, "Micro-batches accumulated per optimizer step (effective batch = micro_batch x this).")
    seq_len: int = _f(1024, "Longest example in tokens; longer ones are truncated.")
    lr: float = _f(2e-4, "Peak learning rate.")
    scheduler: str = _f("cosine", "Learning-rate schedule after warm-up.")
    warmup_ratio: float = _f(0.03, "Fraction of steps spent warming the learning rate up.")
    optimizer: str = _f("adamw_torch", "Optimizer: adamw_torch, adamw_8bit, paged_adamw_8bit or paged_adamw_32bit.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")
    grad_ckpt: bool = _f(True, "Gradient checkpointing: recompute activations to save memory (about 30% slower).")
    attn: str = _f("sdpa", "Attention implementation: sdpa, eager or flash_attention_2.")
    seed: int = _f(42, "Seed for weights of the adapter, dropout and data order.")
    logging_steps: int = _f(1, "Emit a metric event every N optimizer steps.")
    eval_steps: int = _f(0, "Evaluate on the validation split every N steps (0: at the end only).")
    save_steps: int = _f(50, "Write a checkpoint every N optimizer steps.")
    keep_checkpoints: int = _f(2, "How many checkpoints to keep (older ones are deleted).")


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
        from studio.fsutil import atomic_write_text

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


_SECTIONS = {"model": ModelSpec, "data": DataSpec, "lora": LoraSpec, "quant": QuantSpec, "train": TrainSpec}


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
            want = type(f.default) if f.default is not dataclasses.MISSING else type(f.default_factory())
            ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                out.append(Problem(f"{section}.{f.name}", f"expected {want.__name__}, got {value!r}",
                                   f"set it to a {want.__name__}, e.g. {f.default if f.default is not dataclasses.MISSING else f.default_factory()!r}"))
    return out


def _choice(field_name: str, value: Any, allowed: tuple) -> list[Problem]:
    if value in allowed:
        return []
    return [Problem(field_name, f"{value!r} is not one of {', '.join(allowed)}", f"use one of: {', '.join(allowed)}")]


def _check_choices(r: Recipe) -> list[Problem]:
    return (_choice("quant.mode", r.quant.mode, QUANT_MODES) + _choice("quant.quant_type", r.quant.quant_type, ("nf4", "fp4"))
            + _choice("quant.compute_dtype", r.quant.compute_dtype, DTYPES)
            + _choice("train.optimizer", r.train.optimizer, OPTIMIZERS) + _choice("train.attn", r.train.attn, ATTN_IMPLS)
            + _choice("train.scheduler", r.train.scheduler, SCHEDULERS)
            + _choice("data.train_on", r.data.train_on, ("assistant", "all")))


# Every number a recipe may hold: (lowest, highest) inclusive. Wider than anyone trains with, narrow
# enough that a typo (rank 1e9, warmup_ratio -5) or NaN is a problem named before any work starts.
NUMERIC_RANGES: dict[str, tuple[float, float]] = {
    "data.val_fraction": (0.0, 0.5), "data.seed": (0, 2**32 - 1),
    "lora.rank": (1, 4096), "lora.alpha": (1, 65536), "lora.dropout": (0.0, 0.99),
    "train.max_steps": (-1, 10_000_000), "train.epochs": (0.0, 1000.0), "train.micro_batch": (1, 4096),
    "train.grad_accum": (1, 65536), "train.seq_len": (16, 1 << 20), "train.lr": (0.0, 1.0),
    "train.warmup_ratio": (0.0, 1.0), "train.weight_decay": (0.0, 10.0), "train.max_grad_norm": (0.0, 1e6),
    "train.seed": (0, 2**32 - 1), "train.logging_steps": (1, 1_000_000), "train.eval_steps": (0, 10_000_000),
    "train.save_steps": (1, 10_000_000), "train.keep_checkpoints": (1, 1000),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_numbers(r: Recipe) -> list[Problem]:
    """Finite and inside NUMERIC_RANGES: NaN compares false with everything, so it is named first."""
    import math

    out = []
    for name, (low, high) in NUMERIC_RANGES.items():
        section, key = name.split(".")
        value = getattr(getattr(r, section), key)
        if not _is_number(value):
            continue  # _check_types names it
        if not math.isfinite(value):
            out.append(Problem(name, f"{value} is not a finite number", f"set {name} to a number between {low} and {high}"))
        elif not low <= value <= high:
            out.append(Problem(name, f"{value} is outside [{low}, {high}]", f"set {name} to a number in that range"))
    return out


def _check_ranges(r: Recipe) -> list[Problem]:
    """What NUMERIC_RANGES cannot say: open bounds and values that would train nothing."""
    import math

    t, lo = r.train, r.lora
    finite = lambda v: _is_number(v) and math.isfinite(v)  # noqa: E731 - non-finite ones are named already
    out = []
    if finite(t.lr) and t.lr in (0, 1):
        out.append(Problem("train.lr", f"{t.lr} is outside (0, 1)", "typical LoRA learning rates are 1e-5 to 5e-4"))
    if finite(r.data.val_fraction) and r.data.val_fraction == 0.5:
        out.append(Problem("data.val_fraction", f"{r.data.val_fraction} is outside [0, 0.5)", "use 0 to disable or about 0.05"))
    if isinstance(t.max_steps, int) and t.max_steps == 0:
        out.append(Problem("train.max_steps", f"{t.max_steps} steps would train nothing", "use -1 (epochs) or a positive number"))
    if t.max_steps == -1 and finite(t.epochs) and t.epochs == 0:
        out.append(Problem("train.epochs", f"{t.epochs} epochs would train nothing", "use a positive number such as 1"))
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


_CHECKS = (_check_required, _check_types, _check_choices, _check_numbers, _check_ranges)
