"""The Llama-shaped families: dense and mixture-of-experts, with or without q/k norms and biases."""
from __future__ import annotations

from studio.export.arches.base import GgufArch

ARCHES = (
    GgufArch("llama", "llama", permute_qk=True),
    GgufArch("mistral", "llama", permute_qk=True),  # llama.cpp writes Mistral as llama-arch
    GgufArch("mixtral", "llama", permute_qk=True),  # llama-arch with experts (ffn_*_exps) and a router (ffn_gate_inp)
    GgufArch("qwen2", "qwen2"),  # NeoX rotary: no permutation; q/k/v carry biases
    GgufArch("qwen3", "qwen3"),  # NeoX rotary, per-head q/k norms
    GgufArch("qwen3_moe", "qwen3moe"),  # Qwen3 with experts
)
