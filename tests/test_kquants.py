"""K-quant GGUF: our Q4_K/Q5_K/Q6_K encoders checked against the gguf package's own dequantiser,
the mixed recipes' type choices, and a q4_k_m / q6_k export read back with gguf.GGUFReader."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tiny

K_TYPES = ("Q4_K", "Q5_K", "Q6_K")
# (levels per sub-block, sub-block size): Q4_K 16 levels / 32 values, Q5_K 32 / 32, Q6_K 64 / 16
LEVELS = {"Q4_K": (15, 32), "Q5_K": (31, 32), "Q6_K": (63, 16)}
# relative RMS error on Gaussian weights (what the formats give; far above the fallback types' float noise)
RMS_BOUND = {"Q4_K": 0.08, "Q5_K": 0.04, "Q6_K": 0.02}


def _weights(rows: int = 64, cols: int = 1024, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32) * 0.02
    x[1] += 0.03  # all positive-ish row: needs the min
    x[2] = -np.abs(x[2])  # all negative
    x[3, :256] = 0.0  # an all-zero super-block
    x[4, :256] = 0.5  # a constant super-block
    x[5, 7] = 1.5  # an outlier
    x[6] *= 1e-4  # tiny values (f16 scale near its bottom)
    return x


@pytest.mark.parametrize("name", K_TYPES)
def test_k_quant_round_trip_through_the_gguf_dequantiser(name):
    import gguf

    from studio.export.kquants import quantize

    qtype = gguf.GGMLQuantizationType[name]
    x = _weights()
    data = quantize(x, qtype)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    assert data.dtype == np.uint8 and data.shape == (x.shape[0], x.shape[1] // block * size)
    y = gguf.quants.dequantize(data, qtype)  # the reference reader, not ours
    assert y.shape == x.shape and np.isfinite(y).all()
    assert np.abs(y[3, :256]).max() == 0.0
    np.testing.assert_allclose(y[4, :256], 0.5, rtol=2e-3)
    g = x[7:]  # plain Gaussian rows
    assert np.linalg.norm(y[7:] - g) / np.linalg.norm(g) < RMS_BOUND[name]
    # per sub-block, no value is off by more than 1.5 steps of that sub-block's own range (a scale fitted
    # for least squares may clip an extreme value a little; 6-bit scales shared by the super-block add
    # rounding). Rows 5 (an outlier shares the super-block) and 6 (values below f16's resolution for d)
    # are exempt: the format itself cannot do better there.
    levels, sub = LEVELS[name]
    keep = np.r_[0:5, 7:x.shape[0]]
    xs, ys = x[keep].reshape(-1, sub), y[keep].reshape(-1, sub)
    lo = np.minimum(xs.min(1), 0) if name != "Q6_K" else -np.abs(xs).max(1)
    hi = xs.max(1) if name != "Q6_K" else np.abs(xs).max(1)
    step = (hi - lo) / levels
    assert (np.abs(ys - xs).max(1) <= step * 1.5 + 1e-9).all()
    assert abs(float(y[5, 7]) - 1.5) < 0.6 * 1.6 / levels  # the outlier itself keeps within ~half a step


def test_k_quant_works_in_chunks_without_copies_of_the_tensor(monkeypatch):
    import tracemalloc

    import gguf

    from studio.export import kquants

    x = np.random.default_rng(1).standard_normal((1024, 4096)).astype(np.float32)  # 16 MB
    monkeypatch.setattr(kquants, "CHUNK_VALUES", 1 << 18)  # 1 MB chunks
    tracemalloc.start()
    out = kquants.quantize(x, gguf.GGMLQuantizationType.Q4_K)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < out.nbytes + 12 * (1 << 20), f"peak {peak / 2**20:.1f} MB"  # output + temporaries of one chunk
    ref = np.concatenate([kquants.quantize(x[:512], gguf.GGMLQuantizationType.Q4_K),
                          kquants.quantize(x[512:], gguf.GGMLQuantizationType.Q4_K)])
    assert np.array_equal(out, ref)  # chunking changes nothing


def test_recipes_pick_types_like_llama_cpp():
    from studio.export.kquants import more_bits, recipe_type

    assert [i for i in range(8) if more_bits(i, 8)] == [0, 3, 6, 7]
    assert [i for i in range(30) if more_bits(i, 30)] == [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]

    def t(name, shape, recipe="q4_k_m", n=8, out=True):
        return recipe_type(name, shape, recipe, n, out)

    assert t("blk.0.attn_norm.weight", (256,)) == "F32"
    assert t("blk.1.attn_q.weight", (256, 256)) == "Q4_K"
    assert t("blk.0.attn_v.weight", (64, 256)) == "Q6_K" and t("blk.1.attn_v.weight", (64, 256)) == "Q4_K"
    assert t("blk.3.ffn_down.weight", (256, 512)) == "Q6_K" and t("blk.4.ffn_down.weight", (256, 512)) == "Q4_K"
    assert t("blk.4.ffn_down.weight", (256, 512), "q5_k_m") == "Q5_K"
    assert t("blk.0.attn_v.weight", (64, 256), "q6_k") == "Q6_K"
    assert t("output.weight", (384, 256)) == "Q6_K" and t("token_embd.weight", (384, 256)) == "Q4_K"
    assert t("token_embd.weight", (384, 256), out=False) == "Q6_K"  # tied: the embeddings are the output
    # SmolLM2-135M is 576 wide: not a multiple of 256 -> the 32-value fallbacks
    assert t("blk.1.attn_q.weight", (576, 576)) == "Q5_0" and t("blk.1.attn_q.weight", (576, 576), "q5_k_m") == "Q5_1"
    assert t("blk.0.attn_v.weight", (192, 576)) == "Q8_0" and t("blk.1.ffn_down.weight", (576, 1536)) == "Q4_K"
    assert t("token_embd.weight", (49152, 576), out=False) == "Q8_0"
    assert t("blk.1.attn_q.weight", (40, 40)) == "F16"  # not even 32 divides it


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    """A finished run on a 256-wide, 8-layer Llama: wide enough for K-quants everywhere."""
    from test_export import make_run

    base = tiny.make_model(tmp_path_factory.mktemp("wide") / "base", hidden=256, layers=8)
    return make_run(tmp_path_factory.mktemp("runs"), base, four_bit=False, r=4)


@pytest.mark.parametrize("quant,file_type,main", [("q4_k_m", 15, "Q4_K"), ("q6_k", 18, "Q6_K")])
def test_k_quant_export_reads_back_with_gguf(wide_run, tmp_path, quant, file_type, main):
    import gguf

    from studio.export import export

    res = export(wide_run, "gguf", quant, out=tmp_path / quant)
    checks = {c["name"]: c for c in res.checks}
    assert checks["gguf_weights"]["ok"], checks["gguf_weights"]["summary"]
    assert checks["gguf_weights"]["details"]["types"][main] > 0
    path = tmp_path / quant / f"model-{quant}.gguf"
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.file_type"].contents() == file_type
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.1.attn_q.weight"] == main and types["output.weight"] == "Q6_K"
    assert types["blk.0.attn_v.weight"] == "Q6_K" and types["output_norm.weight"] == "F32"
    expected = sum(t.n_bytes for t in reader.tensors)
    assert expected < path.stat().st_size < expected + 200_000  # weights + metadata, nothing else
    report = json.loads((tmp_path / quant / "export.json").read_text())
    assert report["quant"] == quant


@pytest.mark.parametrize("name", ["Q8_0", "Q5_0", "Q4_0"])
def test_other_block_types_in_chunks_equal_the_gguf_package(name, monkeypatch):
    import gguf

    from studio.export import kquants

    monkeypatch.setattr(kquants, "CHUNK_VALUES", 4096)
    x = _weights(rows=40, cols=512)
    qtype = gguf.GGMLQuantizationType[name]
    assert np.array_equal(kquants.quantize_in_chunks(x, qtype), gguf.quants.quantize(x, qtype))
