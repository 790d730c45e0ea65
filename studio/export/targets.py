"""The export targets (a registry the CLI and the UI fill their menus from) and the one entry point.

Every export: checks everything it can before writing (format, quantisation, architecture,
tokenizer, chat template, free space, existing output), writes into a temporary folder beside the
destination, verifies what it wrote, and only then renames the folder to its final name.
"""
from __future__ import annotations

import datetime as _dt
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from studio import methods, runs
from studio.attach import worker_pid
from studio.data.chat_render import TemplateError, TemplateRunaway
from studio.export import llama_cpp, verify
from studio.export.adapter import Adapter, check_adapter_weights, check_pair_shapes, copy_adapter, load_adapter
from studio.export.errors import ConfigError, DiskError, Progress, VerificationFailed, no_progress
from studio.export.gguf_readback import gguf_reader
from studio.export.gguf_vocab import build_vocab
from studio.export.gguf_writer import check_supported, write_gguf
from studio.export.inputs import ExportInputs, load_inputs
from studio.export.lora_gguf import lora_tensors, write_lora_gguf
from studio.export.merge import MergedWeights, check_mergeable, copy_side_files, merge_to_folder, tokenizer_eos_id
from studio.export.ollama import detect_chat, model_name, modelfile, sampling_params
from studio.fsutil import atomic_dir, disk_full, is_write_error, read_json, sha256_files

GGUF_QUANTS = ("f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0")
# quantisations whose greedy tokens may drift from the float model's: a greedy mismatch is a warning
LOSSY_GREEDY = ("q4_0", "q4_k_m", "q5_k_m")
GGUF_FORMATS = ("gguf", "ollama", "ollama-lora")
MARGIN_BYTES = 64 << 20
REPORT = "export.json"
ADAPTER_HASHED = ("adapter_config.json", "adapter_model.safetensors")


@dataclass
class Job:
    inputs: ExportInputs
    fmt: str
    quant: str | None
    progress: Progress = no_progress
    adapter: Adapter | None = None
    chat: Any = None  # ollama.OllamaChat
    checks: list = field(default_factory=list)
    on_check: Callable[[Any], None] = lambda check: None
    files: dict = field(default_factory=dict)  # file name -> {"kind", "quant"} for the report
    ollama_name: str | None = None  # the model name in the `ollama create` command
    vocab: Any = None  # gguf_vocab.GgufVocab, read once by prepare() and written by every GGUF
    adapter_sha256: str | None = None  # see adapter_digest()
    mmproj: str | None = None  # the vision projector file written beside the GGUF (an image run)

    def adapter_digest(self) -> str:
        """sha256 over the adapter's config and weights, read once per export: the report's adapter hash and
        the key of the merged model's cached answers."""
        if self.adapter_sha256 is None:
            self.adapter_sha256 = sha256_files(*(self.inputs.adapter_dir / n for n in ADAPTER_HASHED))
        return self.adapter_sha256

    def loaded_adapter(self) -> Adapter:
        """The adapter read by prepare(), which reads it for every target that merges or converts it."""
        if self.adapter is None:
            raise RuntimeError(f"the {self.fmt} export needs the adapter that prepare() loads")
        return self.adapter

    def gguf_quant(self) -> str:
        """The GGUF quantisation: prepare() gives every GGUF target its default when none was asked for."""
        if self.quant is None:
            raise RuntimeError(f"the {self.fmt} export needs a quantisation")
        return self.quant

    def record(self, check: "verify.Check") -> None:
        self.checks.append(check)
        self.progress("verify", 1, 1)
        self.on_check(check)


@dataclass(frozen=True)
class ExportTarget:
    name: str
    label: str
    description: str
    quants: tuple[str, ...]
    default_quant: str | None
    needs_merge: bool
    build: Callable[[Job, Path], object]  # writes the target into the temp folder; what it returns is not used


@dataclass
class ExportResult:
    path: Path
    format: str
    quant: str | None
    files: list[dict]  # {"name", "bytes", and for model files "kind", "quant"}
    checks: list[dict]
    next_command: str | None = None  # for Ollama: the exact `ollama create NAME -f .../Modelfile`
    source: dict = field(default_factory=dict)  # run, step, adapter hash (as in export.json)

    def to_dict(self) -> dict:
        return {"path": str(self.path), "format": self.format, "quant": self.quant, "files": self.files,
                "checks": self.checks, "next_command": self.next_command, "source": self.source}


# -- builders ------------------------------------------------------------------------------------

def _build_adapter(job: Job, tmp: Path) -> None:
    job.progress("adapter", 0, 1)
    copy_adapter(job.inputs.adapter_dir, tmp, job.inputs.base_dir)

    cfg = read_json(job.inputs.adapter_dir / "adapter_config.json", default={}) or {}
    label = methods.get(methods.from_adapter_config(cfg)).label
    job.files["adapter_model.safetensors"] = {"kind": f"{label} adapter (PEFT)", "quant": None}
    job.progress("adapter", 1, 1)
    job.progress("verify", 0, 1)
    job.record(verify.check_adapter(job.inputs.adapter_dir, tmp))
    missing = unavailable(job.inputs.run_dir)
    if missing:  # prefix/prompt tuning (or DoRA for ollama-lora): say what this adapter cannot become, and why
        why = " / ".join(dict.fromkeys(missing.values()))
        job.record(verify.Check("other_formats", None, f"{', '.join(missing)} unavailable for this run: {why}",
                                {"unavailable": missing}))


def _build_merged(job: Job, tmp: Path) -> None:
    merge_to_folder(job.inputs.base_dir, job.loaded_adapter(), tmp, job.progress)
    job.files["*.safetensors"] = {"kind": "merged model", "quant": _dtype_name(job.inputs.config)}
    job.progress("verify", 0, 1)
    job.record(verify.check_merge(job.inputs.base_dir, job.inputs.adapter_dir, tmp, job.inputs.trust_remote_code))


def _build_gguf(job: Job, tmp: Path) -> Path:
    scratch = tmp / ".merged"  # inside the temp folder: cancel or failure removes it with the rest
    scratch.mkdir()
    # The merged model's config and tokenizer files only: its weights are merged as the GGUF writer reads
    # them (MergedWeights), so no merged copy is written and read back; the checks merge them the same way.
    copy_side_files(job.inputs.base_dir, scratch)
    weights = MergedWeights(job.inputs.base_dir, job.loaded_adapter())
    quant = job.gguf_quant()
    gguf_path = tmp / f"model-{quant}.gguf"
    write_gguf(scratch, gguf_path, quant, name=_model_title(job), progress=job.progress, vocab=job.vocab,
               trust=job.inputs.trust_remote_code, weights=weights)
    job.files[gguf_path.name] = {"kind": "merged model (GGUF)", "quant": quant}
    job.progress("verify", 0, 1)
    greedy = llama_cpp.GreedyCheck(scratch, gguf_path, trust=job.inputs.trust_remote_code, weights=weights,
                                adapter_digest=job.adapter_digest(), quant=quant)
    greedy.start()  # llama.cpp answers while the weights and the vocabulary are checked
    reader = gguf_reader(gguf_path)  # read once for both checks
    job.record(verify.check_gguf_weights(scratch, gguf_path, quant, reader=reader, weights=weights))
    job.record(_with_vocab_source(verify.check_gguf_vocab(job.inputs.base_dir, gguf_path, reader=reader,
                                                          light=greedy.light), job.vocab))
    del reader  # its memory map closes before the folder is renamed
    job.vocab = None  # written: its memory is the reference model's now (an Ollama export reads no more of it)
    job.record(greedy.finish())
    _build_mmproj(job, tmp, gguf_path, weights)
    shutil.rmtree(scratch)
    return gguf_path


def _image_run(job: Job) -> bool:
    from studio import vision

    return vision.adapter_on_whole_vlm(job.inputs.adapter_dir)


def _build_mmproj(job: Job, tmp: Path, gguf_path: Path, weights: MergedWeights) -> None:
    """A run trained on image rows: beside the language model's GGUF, the vision projector file llama.cpp's
    multimodal tools load (``mmproj``), its tower merged; where llama.cpp has no projector for the family, or
    the adapter changed the tower where the file cannot carry it, a skipped check says why and nothing is written."""
    from studio.export import mmproj
    from studio.export.errors import UnsupportedModel

    if not _image_run(job):
        return
    path = tmp / mmproj.mmproj_name()
    try:
        mmproj.write_mmproj(job.inputs.base_dir, job.inputs.config, path, weights=weights,
                            name=f"{_model_title(job)} vision projector", progress=job.progress)
    except UnsupportedModel as e:
        path.unlink(missing_ok=True)
        job.record(verify.Check("mmproj", None, f"skipped: {e.message}; {e.hint}"))
        return
    job.files[path.name] = {"kind": "vision projector (GGUF, llama.cpp mtmd)", "quant": "f16"}
    job.record(mmproj.check_mmproj(job.inputs.base_dir, job.inputs.config, path, weights=weights))
    job.record(llama_cpp.check_mtmd(job.inputs.base_dir, gguf_path, path))
    job.mmproj = path.name


def _build_ollama(job: Job, tmp: Path) -> None:
    _write_modelfile(job, tmp, _build_gguf(job, tmp).name)


def _build_ollama_lora(job: Job, tmp: Path) -> None:
    """The base model as GGUF (not merged), the LoRA as an adapter GGUF, and a Modelfile joining them."""

    base_name = Path(job.inputs.model_name).name
    quant, adapter = job.gguf_quant(), job.loaded_adapter()
    base_path = tmp / f"base-{quant}.gguf"
    write_gguf(job.inputs.base_dir, base_path, quant, name=base_name, progress=job.progress, vocab=job.vocab,
               trust=job.inputs.trust_remote_code)
    job.files[base_path.name] = {"kind": "base model (GGUF)", "quant": quant}
    lora_path = tmp / "adapter-f32.gguf"
    write_lora_gguf(adapter, job.inputs.base_dir, lora_path, name=f"{base_name} LoRA {job.inputs.run_dir.name}")
    job.files[lora_path.name] = {"kind": "LoRA adapter (GGUF)", "quant": "f32"}
    job.progress("verify", 0, 1)
    greedy = llama_cpp.GreedyCheck(job.inputs.base_dir, base_path, source="base", trust=job.inputs.trust_remote_code,
                                quant=quant)
    greedy.start()
    job.record(verify.check_lora_gguf(adapter, job.inputs.base_dir, lora_path))
    reader = gguf_reader(base_path)
    job.record(verify.check_gguf_weights(job.inputs.base_dir, base_path, quant, source="base", reader=reader))
    job.record(_with_vocab_source(verify.check_gguf_vocab(job.inputs.base_dir, base_path, reader=reader,
                                                          light=greedy.light), job.vocab))
    del reader
    job.record(greedy.finish())
    _write_modelfile(job, tmp, base_path.name, lora_path.name)


def _with_vocab_source(check: "verify.Check", vocab: Any) -> "verify.Check":
    """Say where the written vocabulary came from (read with transformers, or the export cache)."""
    if vocab is not None and vocab.notes:
        check.details["vocabulary_source"] = vocab.notes[-1]
        if vocab.cached:
            check.summary += " (the vocabulary written came from the export cache)"
    return check


def _write_modelfile(job: Job, tmp: Path, gguf_name: str, adapter_name: str | None = None) -> None:
    eos = _token_text(job.inputs.base_dir, tokenizer_eos_id(job.inputs.base_dir))
    text = modelfile(gguf_name, job.chat, [eos] if eos else [], sampling_params(), adapter_name)
    if job.mmproj:  # Ollama takes a vision model's projector file as a second FROM line
        first = text.index("\n") + 1
        text = text[:first] + f"FROM ./{job.mmproj}\n" + text[first:]
    (tmp / "Modelfile").write_text(text, encoding="utf-8")
    job.files["Modelfile"] = {"kind": "Ollama Modelfile", "quant": None}
    job.ollama_name = model_name(f"{Path(job.inputs.model_name).name}-{job.inputs.run_dir.name}")
    job.record(verify.Check("ollama_template", True,
                            f"Modelfile TEMPLATE ({job.chat.family.name}) renders {job.chat.checked} probe "
                            "conversations exactly as the tokenizer's chat template",
                            {"family": job.chat.family.name, "system": job.chat.system}))


TARGETS: dict[str, ExportTarget] = {t.name: t for t in (
    ExportTarget("merged", "Merged model (safetensors)",
                 "The base model with the adapter merged in: a folder transformers, vLLM and others load as is.",
                 (), None, True, _build_merged),
    ExportTarget("adapter", "Adapter only (PEFT)",
                 "The small LoRA adapter; load it on top of the base model with peft or a LoRA-capable server.",
                 (), None, False, _build_adapter),
    ExportTarget("gguf", "GGUF (llama.cpp)",
                 "One file for llama.cpp, LM Studio and friends (Llama, Mistral, Qwen2/3/3.5, Gemma 1-3, Phi, "
                 "SmolLM, gpt-oss and their MoE variants).",
                 GGUF_QUANTS, "q8_0", True, _build_gguf),
    ExportTarget("ollama", "Ollama",
                 "A GGUF and a Modelfile with the chat template and stop tokens: 'ollama create NAME -f Modelfile'.",
                 GGUF_QUANTS, "q8_0", True, _build_ollama),
    ExportTarget("ollama-lora", "Ollama (base + LoRA GGUF)",
                 "The base model as GGUF, the LoRA as a llama.cpp adapter GGUF, and a Modelfile with FROM base "
                 "and ADAPTER: keep one base and swap adapters (also 'llama-cli -m base --lora adapter').",
                 GGUF_QUANTS, "q8_0", False, _build_ollama_lora),
)}


# -- the entry point -----------------------------------------------------------------------------

def default_out(run_dir: Path, fmt: str, quant: str | None) -> Path:
    return Path(run_dir) / runs.EXPORTS / (f"{fmt}-{quant}" if quant else fmt)


def check_options(fmt: str, quant: str | None) -> ExportTarget:
    """The target for ``fmt``, refusing unknown formats and quantisations that do not apply."""
    target = TARGETS.get(fmt)
    if target is None:
        raise ConfigError(f"unknown export format '{fmt}'", f"choose one of {', '.join(TARGETS)}")
    if quant and quant not in target.quants:
        allowed = ", ".join(target.quants) or "none (this format keeps the base model's dtype)"
        raise ConfigError(f"--quant {quant} does not apply to {fmt}", f"allowed: {allowed}")
    return target


def unavailable(run_dir: Path) -> dict[str, str]:
    """Targets this run's adapter method cannot give, each with the reason (torch-free: the Export page reads it).

    Prefix and prompt tuning change no weight, so nothing can be merged (merged, GGUF, Ollama); DoRA
    has no llama.cpp LoRA adapter form (ollama-lora). The adapter itself is always available.
    """

    cfg = read_json(Path(run_dir) / runs.ADAPTER / "adapter_config.json", default=None)
    if not isinstance(cfg, dict):
        return {}
    method = methods.get(methods.from_adapter_config(cfg))
    out = {}
    for name, target in TARGETS.items():
        if (target.needs_merge or name == "ollama-lora") and not method.mergeable:
            out[name] = method.why_not_merged
        elif name == "ollama-lora" and not method.gguf_adapter:
            out[name] = method.why_no_gguf_adapter
    return out


def check_method(run_dir: Path, fmt: str) -> None:
    """Refuse a target the run's adapter method cannot give, saying why and what it can give."""
    why = unavailable(run_dir).get(fmt)
    if why:
        can_merge = "merged" not in unavailable(run_dir)
        hint = ("export --format ollama or gguf (merged) instead" if can_merge
                else "export --format adapter (the PEFT folder; load it with peft on the base model)")
        raise ConfigError(f"--format {fmt} is not available for this run: {why}", hint)


def prepare(run_dir: Path, fmt: str, quant: str | None = None) -> Job:
    """Every check that needs no writing: fails fast, before any work, with what to do."""
    target = check_options(fmt, quant)
    job = Job(load_inputs(run_dir), fmt, quant or target.default_quant)
    check_method(job.inputs.run_dir, fmt)
    check_adapter_weights(job.inputs.adapter_dir)  # damaged or non-finite adapters: refused for every format
    check_pair_shapes(job.inputs.adapter_dir, job.inputs.base_dir)  # pairs that no merge and no peft can use
    if target.needs_merge or fmt == "ollama-lora":
        job.adapter = load_adapter(job.inputs.adapter_dir)
        check_mergeable(job.inputs.base_dir, job.adapter)
    if fmt == "ollama-lora":
        lora_tensors(job.loaded_adapter(), job.inputs.config)  # refuses what a LoRA GGUF cannot carry, before any work
    if fmt in GGUF_FORMATS:
        check_supported(job.inputs.config)
        job.vocab = build_vocab(job.inputs.base_dir, job.inputs.config, job.inputs.trust_remote_code)
    if fmt in ("ollama", "ollama-lora"):
        from transformers import AutoTokenizer

        job.chat = detect_chat(AutoTokenizer.from_pretrained(str(job.inputs.base_dir),
                                                            trust_remote_code=job.inputs.trust_remote_code))
    return job


def estimate_bytes(job: Job) -> int:
    """What the export will write, temporary files included."""
    base = verify.model_bytes(job.inputs.base_dir)
    if job.fmt == "adapter":
        return sum(f.stat().st_size for f in job.inputs.adapter_dir.iterdir() if f.is_file())
    if job.fmt == "merged":
        return base
    if job.fmt == "ollama-lora":
        base = sum(f.stat().st_size for f in job.inputs.adapter_dir.iterdir() if f.is_file()) * 2  # f32 adapter
    from studio.export.gguf_writer import check_supported, nbytes, plan_tensors

    plan = plan_tensors(job.inputs.base_dir, job.inputs.config, check_supported(job.inputs.config), job.gguf_quant())
    return base + sum(nbytes(p.shape, p.qtype) for p in plan)


def check_free_space(dest: Path, need: int) -> None:
    probe = Path(dest)
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    want = int(need * 1.1) + MARGIN_BYTES
    if free < want:
        raise DiskError(f"not enough free space in {probe}: the export needs about {want / 2**30:.2f} GB, "
                        f"{free / 2**30:.2f} GB is free", "free some space or choose another folder with --out")


def export(run_dir: Path, fmt: str, quant: str | None = None, out: Path | None = None, force: bool = False,
           progress: Progress = no_progress, on_check: Callable[[Any], None] = lambda c: None) -> ExportResult:
    """Export a run: prepare, check space, build in a temp folder, verify, rename; nothing partial remains.

    The chat template is rendered to pick the Ollama family and to verify the output: one that refuses
    those conversations or never ends (studio.data.chat_render) is the model's, so a config error."""
    try:
        return _export(run_dir, fmt, quant, out, force, progress, on_check)
    except (TemplateError, TemplateRunaway) as e:
        raise ConfigError(str(e), "fix the chat template in the file named, or export a model whose template "
                          "renders a plain user/assistant conversation") from None


def _export(run_dir: Path, fmt: str, quant: str | None, out: Path | None, force: bool, progress: Progress,
            on_check: Callable[[Any], None]) -> ExportResult:
    target = check_options(fmt, quant)
    final = Path(out) if out else default_out(Path(run_dir).resolve(), fmt, quant or target.default_quant)
    inputs = load_inputs(run_dir)
    check_not_training(inputs.run_dir)
    check_out(final, inputs)
    if final.exists() and not force:
        raise ConfigError(f"{final} already exists", "pass --force to replace it, or choose another --out")
    job = prepare(run_dir, fmt, quant)
    job.progress, job.on_check = progress, on_check
    check_free_space(final.parent, estimate_bytes(job))
    try:
        with atomic_dir(final, overwrite=force) as tmp:
            TARGETS[fmt].build(job, tmp)
            _fail_on_checks(job)
            command = (f"ollama create {job.ollama_name} -f {final / 'Modelfile'}" if job.ollama_name else None)
            source = _source(job)
            _write_report(job, tmp, command, source)
            files = _list_files(tmp, job.files)
    except Exception as e:  # OSError, or safetensors' SafetensorError; numpy's tofile says only "requested and 0 written"
        if is_write_error(e) and (disk_full(e) or _nearly_full(final)):
            raise DiskError(f"the disk filled up while writing {final}; nothing was left behind",
                            "free some space or choose another folder with --out") from None
        raise
    return ExportResult(final, fmt, job.quant, files, [c.to_dict() for c in job.checks], command, source)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out(final: Path, inputs: ExportInputs) -> None:
    """Refuse an output that is, holds or lies inside what the export reads, whatever --force says.

    Replacing such a folder would delete the export's own inputs (the base weights, the adapter, the
    run's recipe, events and checkpoints). Only the run's ``exports/`` folder may hold outputs.
    """
    out = Path(final).expanduser().resolve()
    run, exports = inputs.run_dir.resolve(), (inputs.run_dir / runs.EXPORTS).resolve()
    protected = [("the run folder", run), ("the base model folder", inputs.base_dir.resolve()),
                 ("the run's adapter", inputs.adapter_dir.resolve())]
    for what, folder in protected:
        if _inside(folder, out):
            raise ConfigError(f"--out {final} {'is' if out == folder else 'holds'} {what} ({folder}); writing there "
                              "would delete what the export reads", "choose an output folder outside it")
        if what != "the run folder" and _inside(out, folder):
            raise ConfigError(f"--out {final} is inside {what} ({folder}); writing there would change what the "
                              "export reads", "choose an output folder outside it")
    if _inside(out, run) and exports not in out.parents:
        raise ConfigError(f"--out {final} is inside the run folder {run} but not in its {runs.EXPORTS}/ folder; "
                          "it could replace the run's own files", f"use a folder under {exports} or outside the run")


def check_not_training(run_dir: Path) -> None:
    """A run whose worker is still training has no final adapter yet: refuse rather than export a stale one."""

    pid = worker_pid(run_dir)
    if pid is not None:
        step = runs.read_state(run_dir).get("step")
        raise ConfigError(f"{run_dir} is still training (worker pid {pid}, step {step}); its adapter is not final",
                          f"wait until it finishes, or stop it ('lora-studio attach {run_dir}' then Ctrl-C, or the "
                          "Stop button) so it saves the adapter, then export")


def _nearly_full(final: Path) -> bool:
    probe = Path(final)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free < MARGIN_BYTES
    except OSError:
        return False


def _fail_on_checks(job: Job) -> None:
    for check in job.checks:
        lossy = check.name == "gguf_greedy" and job.quant in LOSSY_GREEDY  # may change greedy picks: reported
        if check.ok is False and not lossy:
            raise VerificationFailed(f"verification failed: {check.summary}",
                                     "the output was not kept; please report this with the run folder")


def _source(job: Job) -> dict:
    """Which run, step and adapter the export came from: the adapter hash is over its weights and config."""
    state = runs.read_state(job.inputs.run_dir)
    return {"run": str(job.inputs.run_dir), "run_id": job.inputs.run_dir.name,
            "step": state.get("adapter_step", state.get("step")),
            "status": state.get("status"), "adapter": str(job.inputs.adapter_dir),
            "adapter_sha256": job.adapter_digest()}


def _write_report(job: Job, tmp: Path, command: str | None, source: dict) -> None:
    report = {"format": job.fmt, "quant": job.quant, "run": str(job.inputs.run_dir),
              "step": source.get("step"), "run_status": source.get("status"),
              "adapter_sha256": source.get("adapter_sha256"),
              "base_model": str(job.inputs.base_dir), "model": job.inputs.model_name,
              "created": _dt.datetime.now().isoformat(timespec="seconds"),
              "files": _list_files(tmp, job.files), "next_command": command, "source": source,
              "checks": [c.to_dict() for c in job.checks]}
    (tmp / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _list_files(folder: Path, described: dict | None = None) -> list[dict]:
    """Every file with its size, and what it is and its quantisation where the builder said so."""
    described = described or {}
    out = []
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        name = str(p.relative_to(folder))
        info = described.get(name) or next((v for k, v in described.items() if p.match(k)), None)
        row = {"name": name, "bytes": p.stat().st_size}
        if info:
            row.update(info)
        out.append(row)
    return out


def _dtype_name(config: dict) -> str | None:
    dtype = config.get("torch_dtype") or config.get("dtype")
    return {"float16": "f16", "bfloat16": "bf16", "float32": "f32"}.get(str(dtype), dtype)


def _model_title(job: Job) -> str:
    return f"{Path(job.inputs.model_name).name} (LoRA {job.inputs.run_dir.name})"


def _token_text(folder: Path, token_id: int | None) -> str | None:
    if token_id is None:
        return None
    tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    for added in tok.get("added_tokens", []):
        if added.get("id") == token_id:
            return added["content"]
    return None
