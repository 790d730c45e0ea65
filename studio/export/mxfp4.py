"""MXFP4 blocks as a checkpoint stores them and as GGML stores them (llama.cpp's MXFP4 type).

Both hold blocks of 32 values: one E8M0 scale byte (a power of two, bias 127) and 32 four-bit E2M1
codes, sign in the top bit, magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6. They differ only in where each
code sits (gpt-oss's published checkpoints, OCP MX spec; ggml's ``block_mxfp4``):

* checkpoint: ``*_blocks`` (..., n_blocks, 16) bytes, byte j = code 2j (low nibble) and code 2j+1
  (high nibble); ``*_scales`` (..., n_blocks) beside them;
* GGML: 17 bytes a block, the scale byte then 16 bytes with code j in the low nibble of byte j and
  code j+16 in its high nibble.

So a block moves from one to the other without touching a code or a scale (``to_ggml``): the
experts llama.cpp runs are the published ones, bit for bit. Floats are encoded by the ``gguf``
package's MXFP4 quantiser (llama.cpp's rule: scale from the block's largest magnitude, nearest code),
through ``gguf_writer.encode_tensor`` like every other block type.
"""
from __future__ import annotations

from typing import Any

BLOCK = 32  # values per block
# E2M1 magnitudes of codes 0..7; codes 8..15 are the same, negative
FP4 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def _codes(blocks: Any):
    """The checkpoint's packed bytes (..., 16) as codes (..., 32) in value order."""
    import torch

    blocks = blocks.to(torch.uint8)
    return torch.stack((blocks & 0x0F, blocks >> 4), dim=-1).reshape(*blocks.shape[:-1], BLOCK)


def dequantize(blocks: Any, scales: Any):
    """Checkpoint blocks (..., n_blocks, 16) and scales (..., n_blocks) as float32 rows (..., n_blocks * 32):
    each code's value times two to the power of its block's scale minus 127."""
    import torch

    if tuple(blocks.shape[:-1]) != tuple(scales.shape) or blocks.shape[-1] != BLOCK // 2:
        raise ValueError(f"MXFP4 blocks {tuple(blocks.shape)} and scales {tuple(scales.shape)} do not match")
    values = torch.tensor(FP4, dtype=torch.float32)[_codes(blocks).long()]
    exponent = scales.to(torch.int32) - 127
    out = torch.ldexp(values, exponent.unsqueeze(-1))
    return out.reshape(*scales.shape[:-1], scales.shape[-1] * BLOCK)


def to_ggml(blocks: Any, scales: Any):
    """Checkpoint blocks and scales as GGML MXFP4 bytes (..., n_blocks * 17), a numpy uint8 array whose rows
    are the checkpoint's rows: the same codes and scales, moved into ggml's nibble order."""
    import torch

    if tuple(blocks.shape[:-1]) != tuple(scales.shape) or blocks.shape[-1] != BLOCK // 2:
        raise ValueError(f"MXFP4 blocks {tuple(blocks.shape)} and scales {tuple(scales.shape)} do not match")
    codes = _codes(blocks)
    packed = codes[..., : BLOCK // 2] | (codes[..., BLOCK // 2:] << 4)
    out = torch.cat((scales.to(torch.uint8).unsqueeze(-1), packed), dim=-1)
    return out.reshape(*scales.shape[:-1], scales.shape[-1] * (BLOCK // 2 + 1)).numpy()

