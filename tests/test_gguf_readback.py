"""The export's own GGUF reader (gguf_readback.gguf_reader, fast) reads exactly what the gguf package's
GGUFReader reads, and the merge's finiteness check catches every non-finite value."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from studio.export.gguf_readback import gguf_reader
from studio.export.gguf_writer import write_gguf
from studio.export.llama_cpp import merged_in_memory
from studio.export.merge import _finite


@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_k_m"])
def test_fast_reader_equals_the_gguf_package_reader(tiny_model_dir, tmp_path, quant):
    from gguf import GGUFReader

    path = write_gguf(tiny_model_dir, tmp_path / f"m-{quant}.gguf", quant)
    ours, ref = gguf_reader(path), GGUFReader(str(path))
    ref_fields = {k: f for k, f in ref.fields.items() if not k.startswith("GGUF.")}  # the header, not a field
    assert list(ours.fields) == list(ref_fields)
    for key, field in ref_fields.items():
        got, want = ours.fields[key], field.contents()
        got = got.tolist() if isinstance(got, np.ndarray) else got
        if isinstance(want, float):
            assert got == pytest.approx(want), key
        else:
            assert got == want, key
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for a, b in zip(ours.tensors, ref.tensors):
        assert a.tensor_type == b.tensor_type and tuple(a.shape) == tuple(b.shape.tolist()), a.name
        assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape, a.name
        assert np.array_equal(a.data.view(np.uint8), np.asarray(b.data).view(np.uint8)), a.name
    assert len({t.tensor_type for t in ours.tensors}) >= 2  # norms stay F32 next to the quantised matrices


def test_fast_reader_refuses_what_is_not_gguf(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(ValueError, match="not a GGUF"):
        gguf_reader(bad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_finite_check_catches_every_non_finite_value(dtype):
    t = torch.randn(64, 48).to(dtype)
    assert _finite(t)
    big = torch.full((64, 48), torch.finfo(dtype).max, dtype=dtype)
    assert _finite(big)  # finite values whose sum overflows the tensor's own dtype are still finite
    for bad in (float("nan"), float("inf"), float("-inf")):
        u = t.clone()
        u[5, 7] = bad
        assert not _finite(u), (dtype, bad)
    both = t.clone()
    both[0, 0], both[1, 1] = float("inf"), float("-inf")
    assert not _finite(both)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_merged_in_memory_equals_the_merged_folder(tiny_model_dir, tmp_path, dtype):
    """A GGUF export merges as it converts (no merged copy on disk); the model its llama.cpp check
    answers with must be exactly the merged folder's model, also when the base is 16-bit."""
    import shutil

    from test_export import make_run
    from transformers import AutoModelForCausalLM

    from studio.export.adapter import load_adapter
    from studio.export.merge import MergedWeights, merge_to_folder

    if dtype != "float32":
        base = tmp_path / dtype
        AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=getattr(torch, dtype)).save_pretrained(base)
        for f in tiny_model_dir.iterdir():
            if f.name.startswith("tokenizer") or f.name == "special_tokens_map.json":
                shutil.copy2(f, base / f.name)
        tiny_model_dir = base
    run = make_run(tmp_path / "runs", tiny_model_dir, targets=["q_proj", "v_proj", "down_proj"])
    adapter = load_adapter(run / "adapter")
    folder = tmp_path / "merged"
    folder.mkdir()
    merge_to_folder(tiny_model_dir, adapter, folder)
    want = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).state_dict()
    weights = MergedWeights(tiny_model_dir, adapter)
    got = merged_in_memory(weights).state_dict()
    assert set(got) == set(want)
    for name in want:
        assert torch.equal(got[name], want[name]), name
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).state_dict()
    assert not torch.equal(base["model.layers.0.self_attn.q_proj.weight"], got["model.layers.0.self_attn.q_proj.weight"])
