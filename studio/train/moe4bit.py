"""Mixture-of-experts models whose experts really are 4-bit.

transformers 5 keeps each MoE layer's experts as two 3-D parameters (``gate_up_proj`` of shape
(experts, 2 x intermediate, hidden) and ``down_proj``; ``up_proj`` for experts without a gate;
transposed in gpt-oss). bitsandbytes' quantiser converts only ``nn.Linear`` layers, so with a plain
``BitsAndBytesConfig(load_in_4bit=True)`` those experts, about 90% of the weights of Mixtral or
Qwen3-30B-A3B, stay in 16-bit and the model does not fit a 24 GB card.

Two extension points of transformers make them 4-bit without a second copy in 16-bit:

* loading: a subclass of transformers' own bitsandbytes 4-bit quantiser also claims the experts'
  3-D parameters, and its quantise step turns each tensor, as the loader hands it over (one layer at
  a time, already fused by transformers' checkpoint conversion), into one NF4 block per expert
  (``bitsandbytes.functional.quantize_4bit``, the same code and block size as ``Linear4bit``). The
  parameter then holds the packed bytes, (experts, n/2, 1) uint8; the quantisation states (absmax,
  code book, nested statistics) live on the experts module.
* the forward: transformers dispatches an experts module's forward through its ``ExpertsInterface``
  (``config._experts_implementation``); ``nf4`` registered there runs the routed tokens of each
  expert through ``bitsandbytes.matmul_4bit``, as ``Linear4bit`` does, with the module's own gate
  (``_apply_gate``), biases and activation.

The experts are frozen: LoRA adapts the attention and the other linear layers (see
``lora_targets``), so the adapter is a plain peft adapter that loads on the 16-bit base for the
Playground, merging and export.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from studio.memory import MOE_PEFT_NAMES

IMPLEMENTATION = "lora_studio_nf4"
BLOCK = 64  # weights per absmax, as Linear4bit (bitsandbytes' default)
STATES = "lora_studio_nf4_states"  # the attribute of an experts module that holds its quantisation states
EXPERT_PARAMS = ("gate_up_proj", "up_proj", "down_proj")
# peft maps these leaf names of a transformers-4 MoE onto the fused 3-D experts of transformers 5
# (peft.utils.transformers_weight_conversion), so with frozen 4-bit experts they are not targeted;
# the planner leaves out the same names (one set, in the torch-free memory model).
_PEFT_MOE_NAMES = MOE_PEFT_NAMES
# Target names that mean the experts: refused while they are 4-bit (studio.train.loading.attach_lora).
EXPERT_TARGET_NAMES = _PEFT_MOE_NAMES | set(EXPERT_PARAMS) | {"experts"}


def is_fused_experts(module: Any) -> bool:
    """A transformers-5 experts module: its forward goes through the ExpertsInterface and it holds 3-D weights."""
    import torch

    if not hasattr(module, "is_transposed") or not hasattr(module, "num_experts"):
        return False
    params = [getattr(module, n, None) for n in EXPERT_PARAMS]
    return any(isinstance(p, torch.Tensor) and p.dim() == 3 for p in params)


def has_fused_experts(model: Any) -> bool:
    return any(is_fused_experts(m) for m in model.modules())


def quantized_experts(model: Any) -> list[Any]:
    """The experts modules of ``model`` that hold NF4 weights."""
    return [m for m in model.modules() if hasattr(m, STATES)]


def quantize_expert_tensor(value: Any, module: Any, name: str, config: Any) -> Any:
    """One NF4 block per expert of a (E, a, b) weight; the packed bytes as a frozen (E, n/2, 1) parameter."""
    import bitsandbytes.functional as F
    import torch

    packed, states = [], []
    for e in range(value.shape[0]):
        w = value[e].t() if module.is_transposed else value[e]  # (out, in), as nn.Linear stores it
        q, state = F.quantize_4bit(w.contiguous(), blocksize=BLOCK, compress_statistics=config.bnb_4bit_use_double_quant,
                                   quant_type=config.bnb_4bit_quant_type, quant_storage=torch.uint8)
        packed.append(q)
        states.append(state)
    if not hasattr(module, STATES):
        setattr(module, STATES, {})
    getattr(module, STATES)[name] = states
    module.config._experts_implementation = IMPLEMENTATION
    param = torch.nn.Parameter(torch.stack(packed), requires_grad=False)
    return param


def _experts_quantizer_class() -> type:
    """transformers' bitsandbytes 4-bit quantiser, extended to the fused 3-D experts."""
    from transformers.core_model_loading import ConversionOps
    from transformers.integrations.bitsandbytes import Bnb4bitQuantize
    from transformers.quantizers.quantizer_bnb_4bit import Bnb4BitHfQuantizer
    from transformers.quantizers.quantizers_utils import get_module_from_name

    class QuantizeExperts(ConversionOps):
        def __init__(self, hf_quantizer: Any) -> None:
            self.hf_quantizer = hf_quantizer
            self.linear = Bnb4bitQuantize(hf_quantizer)

        def convert(self, input_dict: dict, full_layer_name: str | None = None, model: Any = None,
                    **kwargs: Any) -> dict:
            out = {}
            for name, value in input_dict.items():
                module, leaf = get_module_from_name(model, name)
                if is_fused_experts(module) and leaf in EXPERT_PARAMS:
                    tensor = value[0] if isinstance(value, list) else value
                    out[name] = quantize_expert_tensor(tensor, module, leaf, self.hf_quantizer.quantization_config)
                else:
                    out.update(self.linear.convert({name: value}, full_layer_name=full_layer_name, model=model,
                                                   **kwargs))
            return out

    class ExpertsBnb4BitHfQuantizer(Bnb4BitHfQuantizer):
        def param_needs_quantization(self, model: Any, param_name: str, **kwargs: Any) -> bool:
            module, leaf = get_module_from_name(model, param_name)
            if leaf in EXPERT_PARAMS and is_fused_experts(module):
                return True
            return super().param_needs_quantization(model, param_name, **kwargs)

        def get_quantize_ops(self) -> Any:
            return QuantizeExperts(self)

    return ExpertsBnb4BitHfQuantizer


@contextmanager
def experts_in_4bit() -> Iterator[None]:
    """While loading, transformers' 4-bit bitsandbytes quantiser also quantises fused experts.

    ``AutoHfQuantizer`` picks the quantiser class from its mapping by the config's method
    (``bitsandbytes_4bit``); the subclass stands in for the one load and is put back after it, so
    every check of ``quant_method == "bitsandbytes"`` in transformers, peft and the Trainer still holds.
    """
    from transformers.quantizers import auto

    register_forward()
    key = "bitsandbytes_4bit"
    original = auto.AUTO_QUANTIZER_MAPPING[key]
    auto.AUTO_QUANTIZER_MAPPING[key] = _experts_quantizer_class()
    try:
        yield
    finally:
        auto.AUTO_QUANTIZER_MAPPING[key] = original


def register_forward() -> None:
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    if IMPLEMENTATION not in ALL_EXPERTS_FUNCTIONS:
        ALL_EXPERTS_FUNCTIONS.register(IMPLEMENTATION, nf4_experts_forward)


def _linear(module: Any, name: str, expert: int, x: Any) -> Any:
    import bitsandbytes as bnb

    state = getattr(module, STATES)[name][expert]
    bias = getattr(module, f"{name}_bias")[expert] if module.has_bias else None
    packed = getattr(module, name)[expert]
    return bnb.matmul_4bit(x, packed.t(), bias=bias, quant_state=state)


def nf4_experts_forward(self: Any, hidden_states: Any, top_k_index: Any, top_k_weights: Any) -> Any:
    """Each routed token through its experts' 4-bit weights; the routing weights sum the k results."""
    import torch

    tokens, hidden = hidden_states.shape
    k = top_k_index.size(-1)
    ids = top_k_index.reshape(-1)
    order = torch.argsort(ids, stable=True)  # (token, slot) pairs grouped by expert
    counts = torch.bincount(ids, minlength=self.num_experts).tolist()
    routed = hidden_states[order // k]
    up = "gate_up_proj" if self.has_gate else "up_proj"
    outs, start = [], 0
    for expert, n in enumerate(counts[:self.num_experts]):
        if n == 0:
            continue
        x = routed[start:start + n]
        start += n
        y = _linear(self, up, expert, x)
        y = self._apply_gate(y) if self.has_gate else self.act_fn(y)
        outs.append(_linear(self, "down_proj", expert, y))
    out = torch.cat(outs) if outs else routed.new_zeros(0, hidden)
    if self.has_post_expert_norm:
        out = self.post_expert_norm(out)
    out = out * top_k_weights.reshape(-1)[order].unsqueeze(-1).to(out.dtype)
    restored = out[torch.argsort(order)]  # back to (token, slot) order
    return restored.view(tokens, k, hidden).sum(dim=1).to(hidden_states.dtype)


def lora_targets(model: Any) -> list[str]:
    """'all-linear' for a model with 4-bit experts: every linear layer outside the experts and router
    except lm_head (and the names peft would map onto the fused experts)."""
    import torch

    try:
        import bitsandbytes as bnb
        linear: tuple = (torch.nn.Linear, bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    except ImportError:  # pragma: no cover - bitsandbytes is a dependency
        linear = (torch.nn.Linear,)
    head = model.get_output_embeddings()
    names = set()
    for path, module in model.named_modules():
        if module is head or not isinstance(module, linear):
            continue
        leaf = path.rsplit(".", 1)[-1]
        if leaf not in _PEFT_MOE_NAMES:
            names.add(leaf)
    return sorted(names)


def dequantized(module: Any, name: str) -> Any:
    """The (E, a, b) weight in the compute dtype, as the checkpoint had it (tests and the verification)."""
    import bitsandbytes.functional as F
    import torch

    packed = getattr(module, name)
    ws = [F.dequantize_4bit(packed[e], getattr(module, STATES)[name][e]) for e in range(packed.shape[0])]
    return torch.stack([w.t() if module.is_transposed else w for w in ws])
