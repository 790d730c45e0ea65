"""Read a PEFT LoRA adapter as per-weight deltas, and export the adapter folder itself.

A LoRA weight update is ``scale * B @ A`` with ``scale = alpha / r`` (or ``alpha / sqrt(r)`` with
rsLoRA), where ``r`` and ``alpha`` may be overridden per module by ``rank_pattern`` and
``alpha_pattern`` (peft's own matching rule is reused for those). The other low-rank methods merge
the way peft itself computes them:

- AdaLoRA: ``B @ (A * E) * alpha / (init_r + 1e-5)`` (peft keeps ``ranknum`` at ``init_r`` even
  after the rank pattern cut a module's rank down; ``alpha`` is ``init_r`` when it is 0);
- DoRA: ``m / ||W + scale * B @ A|| * (W + scale * B @ A)``, the norm taken per output row of the
  base weight the merge reads, ``m`` the learned magnitude vector.

Prefix and prompt tuning change no weight: there is nothing to merge (``studio.methods`` says why).
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from studio import methods, multimodal
from studio.export.errors import ConfigError, UnsupportedModel
from studio.safetensors_io import DamagedFile, model_tensors, read_header

PREFIX = "base_model.model."
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")

if TYPE_CHECKING:  # torch loads only when an adapter is read: the annotations name its tensor type
    from torch import Tensor


@dataclass
class LoraDelta:
    a: Tensor  # (r, in) ; for embeddings (r, num_embeddings)
    b: Tensor  # (out, r); for embeddings (dim, r)
    scale: float
    embedding: bool = False
    magnitude: Tensor | None = None  # DoRA: the learned norm of each output row (out,)

    def delta(self):
        """The dense update in float32, shaped like the base weight (DoRA's rescaling is in add_to)."""
        a, b = self.a.float(), self.b.float()
        d = (b @ a) * self.scale
        return d.T if self.embedding else d

    def add_to(self, w) -> None:
        """``w += scale * B @ A`` in place (``w`` float32): no second weight-sized tensor; DoRA then rescales rows."""
        if self.embedding:
            w.add_(self.delta())
        else:
            w.addmm_(self.b.float(), self.a.float(), alpha=self.scale)
        self._rescale(w, None)

    def add_rows_to(self, w, rows) -> None:
        """``add_to`` for some rows of the weight only (``w``: those rows, float32; ``rows``: their indices):
        the same update, at the cost of the rows (the weight check samples rows of every matrix)."""
        if self.embedding:
            w.add_((self.a.float()[:, rows].T @ self.b.float().T) * self.scale)
        else:
            w.addmm_(self.b.float()[rows], self.a.float(), alpha=self.scale)
        self._rescale(w, rows)

    def _rescale(self, w, rows) -> None:
        if self.magnitude is not None:  # DoRA: each output row to its learned norm (a row's own property)
            import torch

            m = self.magnitude.float() if rows is None else self.magnitude.float()[rows]
            w.mul_((m / torch.linalg.norm(w, dim=1)).unsqueeze(1))


@dataclass
class Adapter:
    config: dict
    deltas: dict[str, LoraDelta]  # base weight name -> update
    replacements: dict[str, Tensor]  # base weight name -> full tensor (modules_to_save)


def load_adapter(adapter_dir: Path) -> Adapter:
    """All LoRA pairs of an adapter keyed by the base weight they update; refuses what it cannot merge."""
    from safetensors.torch import load_file

    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    _check_config(cfg, adapter_dir)
    tensors = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    pairs: dict[str, dict[str, Tensor]] = {}
    replacements: dict[str, Tensor] = {}
    for key, t in tensors.items():
        module, part = _split_key(key, adapter_dir)
        if part is None:
            replacements[module] = t
        else:
            pairs.setdefault(module, {})[part] = t
    deltas = {}
    for module, p in pairs.items():
        emb = "lora_embedding_A" in p
        a, b = (p.get("lora_embedding_A"), p.get("lora_embedding_B")) if emb else (p.get("lora_A"), p.get("lora_B"))
        if a is None or b is None:
            raise UnsupportedModel(f"{adapter_dir}: module {module} has only half of its LoRA pair",
                                   "the adapter file is damaged; export from a checkpoint or train again")
        if "lora_E" in p:  # AdaLoRA: the singular values scale A's rows
            a = a.float() * p["lora_E"].float()
        if "lora_magnitude_vector" in p and emb:
            raise UnsupportedModel(f"{adapter_dir}: DoRA on the embedding {module} is not merged by this exporter",
                                   "export it with --format adapter")
        scale = _scale(cfg, module)
        if not math.isfinite(scale):
            raise ConfigError(f"{adapter_dir / 'adapter_config.json'}: lora_alpha / r for {module} is {scale} "
                              "(lora_alpha or r is infinite, NaN or zero), so no merged weight can be computed",
                              "fix lora_alpha and r in adapter_config.json as training wrote them, or train again")
        deltas[f"{module}.weight"] = LoraDelta(a, b, scale, emb, p.get("lora_magnitude_vector"))
    return Adapter(cfg, deltas, replacements)


def check_adapter_weights(adapter_dir: Path) -> int:
    """Every tensor of the adapter file readable and finite; the tensor count. Every export calls it first.

    A file cut short or with a header that lies about its offsets, and weights that became NaN or
    infinite in training, are refused with the file named, before anything is written.
    """
    import torch
    from safetensors import safe_open

    path = Path(adapter_dir) / "adapter_model.safetensors"
    bad: list[str] = []
    try:
        with safe_open(str(path), "pt") as f:
            names = list(f.keys())
            for name in names:
                t = f.get_tensor(name)
                if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
                    bad.append(name)
    except Exception as e:  # safetensors raises SafetensorError (not an OSError) for damaged files
        if isinstance(e, (MemoryError, KeyboardInterrupt)):
            raise
        raise ConfigError(f"{path}: the adapter file is damaged and cannot be read ({str(e).splitlines()[0][:200]})",
                          "export from a run whose adapter is intact, or resume or train the run again") from None
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ConfigError(f"{path}: the adapter holds NaN or infinite weights ({shown}); exporting it would give "
                          "a broken model",
                          "train again with a lower train.lr and a small train.weight_decay (see docs/reliability.md)")
    return len(names)


# peft rewrites the base weights when it attaches an adapter saved with these initialisations (the base
# becomes the residual W - B0 @ A0): a shared base would then answer wrongly, and a merge onto W is wrong.
BASE_REWRITING_INITS = ("pissa", "olora", "corda")
RANK_FIELDS = ("r", "init_r", "target_r", "num_virtual_tokens")
MAX_CONFIG_BYTES = 1 << 20


def check_adapter(adapter_dir: Path, weights: bool = True) -> dict:
    """The one check of an adapter folder before anything loads it (export, chat, eval); its config.

    Refuses, naming the file and what to do: a config that is not a JSON object, an adapter type
    LoRA Studio does not load, an initialisation that rewrites the base weights (PiSSA, OLoRA,
    CorDA), weights that are a pickle file (they can run code when loaded), ranks larger than any
    tensor in the file (peft would allocate them first: rank 2**40 is a memory bomb), and with
    ``weights`` damaged or non-finite tensors (``check_adapter_weights``).
    """

    adapter_dir = Path(adapter_dir)
    cfg = _read_config(adapter_dir / "adapter_config.json")
    peft_type = cfg.get("peft_type", "LORA")
    known = {m.peft_type: m.label for m in methods.METHODS.values()}
    if not isinstance(peft_type, str) or peft_type.upper() not in known:
        raise ConfigError(f"{adapter_dir / 'adapter_config.json'}: adapter type {str(peft_type)[:60]!r} is not one "
                          f"LoRA Studio loads ({', '.join(sorted(set(known.values())))})",
                          "use an adapter trained by LoRA Studio or with one of those peft methods")
    init = cfg.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(BASE_REWRITING_INITS):
        raise UnsupportedModel(f"{adapter_dir / 'adapter_config.json'}: the adapter was saved with "
                               f"init_lora_weights={init!r}, which makes peft rewrite the base model's weights "
                               "when it attaches the adapter (and fails on a 4-bit base)",
                               "convert it to a plain LoRA adapter first (peft's save_pretrained with "
                               "path_initial_model_for_weight_conversion)")
    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        pickles = sorted(p.name for p in adapter_dir.glob("adapter_model.*") if p.is_file())
        if pickles:
            raise ConfigError(f"{adapter_dir}: the adapter weights are a pickle file ({', '.join(pickles)}), which can "
                              "run code when loaded; LoRA Studio reads adapter weights only from "
                              "adapter_model.safetensors", "save the adapter again with peft's "
                              "save_pretrained(..., safe_serialization=True), from a source you trust")
        raise ConfigError(f"{adapter_dir}: no adapter_model.safetensors next to adapter_config.json",
                          "give a run's adapter/ folder or one of its checkpoints")
    if weights:
        check_adapter_weights(adapter_dir)
    _check_ranks(cfg, path)
    return cfg


def _read_config(path: Path) -> dict:
    """adapter_config.json as a dict; a list, garbage, a huge or deeply nested file are named."""
    hint = "use an intact adapter folder (a run's adapter/ or one of its checkpoints)"
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or e})", hint) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES >> 20} MiB, not an adapter config", hint)
    try:
        cfg = json.loads(raw)
    except (ValueError, RecursionError):
        cfg = None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: not a readable JSON object (damaged?)", hint)
    return cfg


def _check_ranks(cfg: dict, weights: Path) -> None:
    """Every rank the config declares is a positive integer no larger than the largest tensor dimension."""

    try:
        largest = max((max(t.shape, default=0) for t in read_header(weights)), default=0)
    except DamagedFile as e:
        raise ConfigError(str(e), "use an intact adapter folder") from None
    declared = [(k, cfg.get(k)) for k in RANK_FIELDS if cfg.get(k) is not None]
    pattern = cfg.get("rank_pattern")
    if isinstance(pattern, dict):
        declared += [(f"rank_pattern[{k!r}]", v) for k, v in pattern.items()]
    for name, value in declared:
        if isinstance(value, list):  # AdaLoRA's rank_pattern: a mask per module, not a number
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= max(largest, 1):
            raise ConfigError(f"{weights.parent / 'adapter_config.json'}: {name} is {str(value)[:40]}, but the "
                              f"adapter's weights are at most {largest} wide: the config does not match its weights",
                              "use an intact adapter folder (a run's adapter/ or one of its checkpoints)")


def check_pair_shapes(adapter_dir: Path, base_dir: Path) -> None:
    """Every LoRA pair agrees with itself (A's rank = B's rank) and with the base weight it updates.

    Checked from the file headers for every format, before any work: a pair that does not fit cannot
    be merged, and peft cannot load it either, so ``--format adapter`` must not hand it on as loadable.
    """
    from safetensors import safe_open


    path = Path(adapter_dir) / "adapter_model.safetensors"
    with safe_open(str(path), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    try:
        base = {m.name: tuple(m.shape) for m in model_tensors(base_dir)}
    except Exception:  # an unreadable base is reported by the export's own checks, with its file
        base = {}
    where = multimodal.layout(base)  # a multimodal checkpoint's names for the language model's weights
    pairs: dict[str, dict[str, tuple[str, tuple]]] = {}
    for key, shape in shapes.items():
        try:
            module, part = _split_key(key, adapter_dir)
        except UnsupportedModel:  # a prompt method's embeddings: no pair to check (the merge says why it cannot)
            continue
        if part in ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B"):
            pairs.setdefault(module, {})[part.rsplit("_", 1)[1]] = (key, shape)
    hint = "the adapter file does not match its own config or its base model: export an earlier checkpoint, or train again"
    for module, p in pairs.items():
        if set(p) != {"A", "B"}:
            continue  # a half pair is refused with its own message by the merge
        (ka, a), (kb, b) = p["A"], p["B"]
        if len(a) != 2 or len(b) != 2 or a[0] != b[1]:
            raise UnsupportedModel(f"{path}: the LoRA pair of {module} disagrees on its rank: {ka} is "
                                   f"{'x'.join(map(str, a))} and {kb} is {'x'.join(map(str, b))} (A must be "
                                   "rank x in, B out x rank); neither a merge nor peft can use it", hint)
        emb = "embedding" in ka
        want = (a[1], b[0]) if emb else (b[0], a[1])
        have = base.get(f"{module}.weight",
                        base.get(multimodal.to_checkpoint(multimodal.to_text(f"{module}.weight") or module, where)))
        if have is not None and have != want:
            raise UnsupportedModel(f"{path}: the LoRA pair of {module} ({ka} {'x'.join(map(str, a))}, {kb} "
                                   f"{'x'.join(map(str, b))}) updates a {'x'.join(map(str, want))} weight, but "
                                   f"the base weight {module}.weight is {'x'.join(map(str, have))}; neither a merge "
                                   "nor peft can use it", "the adapter was trained on another model, or is damaged")


def _check_config(cfg: dict, where: Path) -> None:
    peft_type = str(cfg.get("peft_type", "LORA")).upper()
    method = methods.METHODS.get(methods.from_adapter_config(cfg))
    if method is not None and not method.mergeable:
        raise UnsupportedModel(f"{where}: {method.why_not_merged}", "export it with --format adapter instead")
    if peft_type not in ("LORA", "ADALORA"):
        raise UnsupportedModel(f"{where}: adapter type {peft_type} cannot be merged (only LoRA, rsLoRA, DoRA "
                               "and AdaLoRA)", "export it with --format adapter instead")
    if cfg.get("fan_in_fan_out"):
        raise UnsupportedModel(f"{where}: fan_in_fan_out adapters (GPT-2 style Conv1D) are not supported",
                               "export it with --format adapter")


def _split_key(key: str, where: Path) -> tuple[str, str | None]:
    """``base_model.model.X.lora_A.weight`` -> (``X``, ``lora_A``); full tensors -> (weight name, None)."""
    name = key.removeprefix(PREFIX)
    for part in ("lora_embedding_A", "lora_embedding_B", "lora_A", "lora_B", "lora_E", "lora_magnitude_vector"):
        for suffix in (f".{part}.weight", f".{part}"):
            if name.endswith(suffix):
                return name[: -len(suffix)], part
    if ".modules_to_save." in name or name.endswith((".weight", ".bias")):
        return name.replace(".modules_to_save", ""), None
    raise UnsupportedModel(f"{where}: adapter tensor {key} is not a LoRA weight this exporter knows",
                           "export it with --format adapter")


def _scale(cfg: dict, module: str) -> float:
    if str(cfg.get("peft_type", "")).upper() == "ADALORA":  # peft: scaling / (ranknum + 1e-5), ranknum = init_r
        init_r = float(cfg.get("init_r", 12))
        alpha = float(cfg.get("lora_alpha") or 0) or init_r
        return alpha / (init_r + 1e-5)
    r = int(cfg.get("r", 8))
    alpha = float(cfg.get("lora_alpha", r))
    ranks, alphas = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
    if ranks or alphas:
        from peft.utils.other import get_pattern_key  # peft's own rule for which pattern names a module
    if ranks:
        r = int(ranks.get(get_pattern_key(ranks.keys(), module), r))
    if alphas:
        alpha = float(alphas.get(get_pattern_key(alphas.keys(), module), alpha))
    if r <= 0:
        return math.nan
    return alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r


def copy_adapter(adapter_dir: Path, out: Path, base_dir: Path) -> list[Path]:
    """The PEFT folder as it is, with the base model named in adapter_config.json."""
    written = []
    for name in ADAPTER_FILES:
        src = Path(adapter_dir) / name
        if src.is_file():
            shutil.copy2(src, out / name)
            written.append(out / name)
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = str(base_dir)
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    return written
