"""An image run's memory components, measured through the worker's loader on the CPU against the planner.

For tiny vision-language checkpoints of each family the studio trains on images (Qwen2-VL, Gemma 3; built from
configs with their processors by tests/tiny.py), loaded as an image run loads them (``studio.train.loading
.load_model(..., vision=True)``: the language model in 4-bit NF4 or 16-bit, the vision tower and projector in
the compute dtype, LoRA on the language model), the planner's components are checked against what is there:

- ``vision_weights``: the stored bytes of every parameter outside the language model (tower and projector)
  against ``memory`` 's vision_weights (the tower count from the safetensors headers, ``studio.vision_plan``);
- ``weights``: the language model's stored bytes against base_weights_* + unquantized_weights;
- ``quant_constants``, ``lora_weights``;
- ``tower_saved``: what autograd keeps for backward inside the frozen tower during a real forward with an
  image batch (``studio.vision.VisionCollator``): nothing, which is why the tower has no activation component.

    python bench/memory_vision.py       # both families, 4-bit and 16-bit (about a minute on 2 cores)

The last line is ``worst component error: N%``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from memory_components import _unique_bytes, weight_bytes  # noqa: E402

from studio import memory, models, vision_plan  # noqa: E402
from studio.recipe import Recipe  # noqa: E402
from studio.settings import Settings  # noqa: E402

FAMILIES = ("qwen2_vl", "gemma3")
MODES = ("4bit", "none")


def settings(mode: str) -> Settings:
    return Settings(quant_mode=mode, compute_dtype="float32", rank=8, alpha=16, micro_batch=2, grad_accum=1,
                    seq_len=96, grad_ckpt=False)


def recipe_for(folder: Path, s: Settings) -> Recipe:
    r = Recipe()
    r.model.name_or_path = str(folder)
    r.quant.mode, r.quant.compute_dtype = s.quant_mode, s.compute_dtype
    r.lora.rank, r.lora.alpha, r.lora.dropout = s.rank, s.alpha, 0.0
    r.train.micro_batch, r.train.seq_len, r.train.grad_ckpt = s.micro_batch, s.seq_len, s.grad_ckpt
    r.data.max_pixels = 56 * 56
    return r


def predict(folder: Path, s: Settings) -> dict:
    info = vision_plan.for_images(models.from_folder(folder), {"images": 1})
    c = memory.estimate(info, s, dropout=0.0, device="cpu").components
    return {"vision_weights": c["vision_weights"],
            "weights": sum(v for k, v in c.items() if k.startswith("base_weights") or k == "unquantized_weights"),
            "quant_constants": c.get("quant_constants", 0), "lora_weights": c["lora_weights"], "tower_saved": 0}


def measure(folder: Path, s: Settings, image: Path) -> dict:
    import torch

    from studio import vision
    from studio.train.loading import load_model

    model = load_model(folder, recipe_for(folder, s), "cpu", vision=True)
    model.train()
    frozen = [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
    outside = [p for n, p in frozen if not vision.in_language_model(n) and "lm_head" not in n.split(".")]
    out = weight_bytes(model)
    tower_bytes = _unique_bytes(outside)
    out["weights"] -= tower_bytes
    out["vision_weights"] = tower_bytes
    out["lora_weights"] = _unique_bytes(p for p in model.parameters() if p.requires_grad)
    # one real forward and backward with an image batch; what the tower saves for backward is metered
    processor = vision.load_processor(folder, max_pixels=56 * 56)
    example = {"messages": [{"role": "user", "content": "<image>What colour is it?"},
                            {"role": "assistant", "content": "It is red."}], "images": [str(image)]}
    row = vision.encode_vision_example(processor, example, s.seq_len)
    batch = vision.VisionCollator(processor, 56 * 56)([vision.VisionDataset([row])[0]] * s.micro_batch)
    tower = next(m for n, m in model.named_modules() if n.endswith(("visual", "vision_tower")))
    region = {"now": "lm"}
    saved: dict[int, tuple[int, str]] = {}
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params and st.nbytes():
            saved.setdefault(st.data_ptr(), (st.nbytes(), region["now"]))
        return t

    hooks = [tower.register_forward_pre_hook(lambda *a: region.update(now="tower")),
             tower.register_forward_hook(lambda *a: region.update(now="lm"))]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    loss.backward()
    for h in hooks:
        h.remove()
    out["tower_saved"] = sum(n for n, r in saved.values() if r == "tower")
    return out


def run(workdir: Path, out=print, quick: bool = False) -> float:
    """Measure and predict; one line per component; the worst relative error. ``quick``: Qwen2-VL in 4-bit only
    (tests/test_memory_components.py)."""
    from tests.tiny import make_vlm, write_image

    image = write_image(workdir / "red.png", (56, 56), (220, 30, 30))
    worst = 0.0
    for family in FAMILIES[:1] if quick else FAMILIES:
        folder = make_vlm(workdir / family, family)
        for mode in MODES[:1] if quick else MODES:
            s = settings(mode)
            got, want = measure(folder, s, image), predict(folder, s)
            for name, predicted in want.items():
                measured = got[name]
                err = abs(predicted - measured) / measured if measured else (0.0 if predicted == 0 else 1.0)
                worst = max(worst, err)
                out(f"{family:9s} {mode:5s}  {name:16s} predicted {predicted:>12,}  measured {measured:>12,}  "
                    f"{err:6.2%}")
    out(f"worst component error: {worst:.2%}")
    return worst


def main() -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        worst = run(Path(tmp))
    return 0 if worst <= 0.02 else 1


if __name__ == "__main__":
    sys.exit(main())
