"""SmolLM3 (``smollm3``): a Llama whose every fourth layer attends without rotary embeddings.

llama.cpp's ``smollm3`` architecture is Llama-arch (q/k rows permuted for its rotary layout) and has no
key for the no-rope layers: it skips rotary embeddings in layers 4, 8, 12, ... (``(il + 1) % 4 == 0``)
by construction. The checkpoint's ``no_rope_layers`` (1 = rotary, 0 = none) must be that pattern;
another one, biases or sliding-window layers are refused, since llama.cpp would run them differently.
"""
from __future__ import annotations

from studio.export.arches.base import GgufArch
from studio.export.errors import UnsupportedModel

NO_ROPE_STEP = 4  # llama.cpp's hparams.n_no_rope_layer_step for smollm3


def llama_cpp_rope_layers(n_layers: int) -> list[int]:
    """What llama.cpp runs: 1 where a layer uses rotary embeddings, 0 where it does not."""
    return [int((i + 1) % NO_ROPE_STEP != 0) for i in range(n_layers)]


def _check(config: dict) -> None:
    n_layers = int(config["num_hidden_layers"])
    wanted = llama_cpp_rope_layers(n_layers)
    pattern = config.get("no_rope_layers")
    if pattern is None:  # transformers derives the pattern from the interval
        interval = int(config.get("no_rope_layer_interval") or NO_ROPE_STEP)
        pattern = [int((i + 1) % interval != 0) for i in range(n_layers)]
    if [int(x) for x in pattern] != wanted:
        raise UnsupportedModel("GGUF export: this SmolLM3 skips rotary embeddings in other layers than every "
                               "fourth (no_rope_layers), the only pattern llama.cpp runs",
                               "export --format merged or adapter instead")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise UnsupportedModel("GGUF export: llama.cpp's smollm3 has no attention or MLP biases",
                               "export --format merged or adapter instead")
    if config.get("use_sliding_window") or any(t != "full_attention" for t in config.get("layer_types") or []):
        raise UnsupportedModel("GGUF export: llama.cpp's smollm3 has no sliding-window attention",
                               "export --format merged or adapter instead")


ARCHES = (GgufArch("smollm3", "smollm3", permute_qk=True, check=_check),)
