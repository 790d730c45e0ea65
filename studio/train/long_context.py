"""Long sequences on the same memory: the loss through a tiled LM head, a tiled MLP, offloaded activations.

- **Tiled LM head** (``train.tiled_head``): the training and validation loss of a causal LM is computed
  by TRL's ``trl.kernels.ChunkedLogProbFunction``, which projects the hidden states through the output
  layer a tile at a time (at most 4,096 tokens x ``studio.memory.HEAD_VOCAB_TILE`` logits: small on the
  CPU, whose eager fold keeps several fp32 copies of a tile), folds each tile into an online
  log-sum-exp and recomputes the tiles in backward: the ``(tokens x vocab)`` logits, their fp32 upcast,
  log-softmax and gradient are never built. TRL wires the same kernel into its own trainers through
  ``add_fused_lm_head``; the studio trains SFT with the plain ``Trainer`` and needs a tile size that fits
  a CPU's fp32 tiles, so it patches the forward itself (TRL's helper fixes the vocabulary tile at 32,768).
  Only positions with a label are projected (prompt tokens cost nothing). Generation and any call
  without ``tiled_loss=True`` run the model's own forward.
- **Tiled MLP** (``train.tiled_mlp``): each decoder layer's MLP runs over the sequence in tiles without
  keeping its intermediate tensors, and recomputes each tile in backward (the sequence-tiled MLP of
  DeepSpeed's Arctic Long Sequence Training; liger-kernel's ``LigerTiledMLPFunction`` needs Triton, so
  the CPU path is ours). The MLP is per token, so tiling changes no value; the dropout masks of a tile
  are drawn again from the same random state in backward.
- **Activation offloading** (``train.offload_activations``, CUDA only): with gradient checkpointing the
  tensors the step keeps between forward and backward (each layer's input) live in pinned host memory,
  copied on a side stream by TRL's ``OffloadActivations`` (``trl.models.activation_offloading``).

``apply`` puts what a recipe asks for on a loaded base and records it (``applied``); the planner
(studio.memory, whose tile sizes this module uses) counts what each part keeps; bench/memory_components.py
measures it.
"""
from __future__ import annotations

import contextlib
import functools
import types
from dataclasses import dataclass, field
from typing import Any

import torch

from studio import kernels, objectives
from studio.memory import HEAD_VOCAB_TILE, MLP_TILE_TOKENS

# Config attributes that scale the logits in a way this head does not reproduce: such a model keeps the
# full head (said in the run log). Soft-capping and Cohere's logit_scale are reproduced.
UNHANDLED_SCALING = ("logits_scaling", "output_multiplier", "lm_head_multiplier")


@dataclass
class Applied:
    """What runs on a loaded base (``apply``): the run's log, the Trainer and the probe read it here."""

    tiled_head: bool = False
    tiled_mlp: int = 0  # how many MLPs run tiled
    offload: bool = False
    kernels: str = "torch"
    notes: list[str] = field(default_factory=list)  # what the recipe asked and does not run, in words


def applied(model: Any) -> Applied:
    """The record of ``model`` (a peft model or its base); an untouched model's says nothing runs."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, "_studio_long_context", None) or Applied()


def _record(model: Any) -> Applied:
    if getattr(model, "_studio_long_context", None) is None:
        model._studio_long_context = Applied()
    return model._studio_long_context


def apply(model: Any, t: Any, device: str) -> Applied:
    """Put the long-sequence parts ``t`` (the recipe's train section) asks for on the base, before peft wraps
    it; what was asked and cannot run here goes into the record's notes."""
    record = _record(model)
    chosen, why = kernels.resolve(t.kernels, getattr(model.config, "model_type", ""), device)
    if why:
        record.notes.append(why)
    if chosen == "liger":
        kernels.apply_liger(model)
        record.kernels = "liger"
    if t.tiled_head and objectives.get(t.objective).head == "studio":
        refusal = tiled_head_refusal(model)
        if refusal:
            record.notes.append(f"train.tiled_head: the loss is computed from the full logits, because {refusal}")
        else:
            add_tiled_head(model, device)
    if t.tiled_mlp and not add_tiled_mlp(model):
        record.notes.append("train.tiled_mlp: this model has no dense MLP to tile (its experts run as they are)")
    if t.offload_activations:
        record.offload = device == "cuda" and t.grad_ckpt
        if not record.offload:
            record.notes.append("train.offload_activations: not used, " + (
                "on the CPU the activations are in RAM already" if device != "cuda"
                else "it offloads the layer inputs that gradient checkpointing keeps (train.grad_ckpt is off)"))
    return record


def _text_config(model: Any) -> Any:
    return model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config


def tiled_head_refusal(model: Any) -> str:
    """Why this model cannot use the tiled head ('' when it can)."""
    config = _text_config(model)
    odd = [name for name in UNHANDLED_SCALING if getattr(config, name, None) not in (None, 1, 1.0)]
    if odd:
        return f"its config scales the logits ({', '.join(odd)})"
    if model.get_output_embeddings() is None or not hasattr(model, "base_model"):
        return "it has no separate output layer"
    return ""


def add_tiled_head(model: Any, device: str) -> None:
    """Give ``model`` (the causal LM, before peft wraps it) a tiled loss: ``model(..., labels=L,
    tiled_loss=True)`` returns the mean negative log-likelihood over the labelled tokens (divided by
    ``num_items_in_batch`` when given, as transformers' loss does) without building the logits."""
    from transformers.modeling_outputs import CausalLMOutputWithPast
    from trl.kernels import ChunkedLogProbFunction

    original = model.forward
    config = _text_config(model)
    softcap = getattr(config, "final_logit_softcapping", None)
    scale = float(getattr(config, "logit_scale", None) or 1.0)
    chunk = HEAD_VOCAB_TILE["cuda" if device == "cuda" else "cpu"]

    @functools.wraps(type(model).forward)  # generate() checks its model kwargs against this signature
    def forward(self: Any, *args: Any, tiled_loss: bool = False, labels: Any = None,
                num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        if not tiled_loss or labels is None:
            if labels is not None:
                kwargs["labels"] = labels
            if num_items_in_batch is not None:
                kwargs["num_items_in_batch"] = num_items_in_batch
            return original(*args, **kwargs)
        kwargs["use_cache"] = False
        want_router = bool(getattr(config, "output_router_logits", False))
        if want_router:
            kwargs.setdefault("output_router_logits", True)
        out = self.base_model(*args, **kwargs)
        hidden = out.last_hidden_state[:, :-1]
        shifted = labels[:, 1:].to(hidden.device)
        mask = shifted != -100
        head = self.get_output_embeddings()
        weight, bias = head.weight, getattr(head, "bias", None)
        log_probs = ChunkedLogProbFunction.apply(hidden[mask], weight, bias, shifted[mask], 1.0, chunk, softcap,
                                                 scale, ("log_probs",))[0]
        total = -log_probs.sum()
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        if isinstance(denominator, torch.Tensor):
            denominator = denominator.to(total.device)
        loss = total / denominator
        if want_router and getattr(out, "router_logits", None) is not None:
            from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

            aux = load_balancing_loss_func(out.router_logits, config.num_experts if hasattr(config, "num_experts")
                                           else config.num_local_experts, config.num_experts_per_tok,
                                           kwargs.get("attention_mask"))
            loss = loss + getattr(config, "router_aux_loss_coef", 0.0) * aux.to(loss.device)
        return CausalLMOutputWithPast(loss=loss)

    model.forward = types.MethodType(forward, model)
    _record(model).tiled_head = True


def has_tiled_head(model: Any) -> bool:
    return applied(model).tiled_head


# --- the tiled MLP ------------------------------------------------------------------------------------------
class _TiledMLP(torch.autograd.Function):
    """y = mlp(x), computed ``tokens`` at a time; only x is kept for backward, where each tile is run
    again with gradients (the adapter's gradients accumulate in their ``.grad``, as in any backward)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, forward: Any, tokens: int) -> torch.Tensor:
        ctx.forward, ctx.tokens = forward, tokens
        ctx.rng = _rng_state(x.device)
        ctx.save_for_backward(x)
        flat = x.reshape(-1, x.shape[-1])
        with torch.no_grad():
            out = torch.cat([forward(t) for t in flat.split(tokens)], dim=0)
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        (x,) = ctx.saved_tensors
        flat = x.detach().reshape(-1, x.shape[-1])
        grads = grad.reshape(-1, grad.shape[-1])
        grad_x = torch.zeros_like(flat) if x.requires_grad else None
        with _restored_rng(x.device, ctx.rng), torch.enable_grad():
            for start in range(0, flat.shape[0], ctx.tokens):
                piece = flat[start:start + ctx.tokens].detach().requires_grad_(x.requires_grad)
                out = ctx.forward(piece)
                torch.autograd.backward(out, grads[start:start + ctx.tokens])
                if grad_x is not None:
                    grad_x[start:start + ctx.tokens] = piece.grad
        return (None if grad_x is None else grad_x.view_as(x)), None, None


def _rng_state(device: torch.device) -> tuple:
    return (torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


@contextlib.contextmanager
def _restored_rng(device: torch.device, state: tuple) -> Any:
    """Run with the random state the forward saw (the dropout masks come out the same), then go on."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        yield


def dense_mlps(model: Any) -> list[Any]:
    """The decoder layers' MLP modules that map (batch, seq, hidden) to the same shape token by token
    (mixture-of-experts blocks, which also return router logits, are left as they are)."""
    found = []
    for name, module in model.named_modules():
        if name.endswith(".mlp") and not hasattr(module, "experts") and \
                (hasattr(module, "down_proj") or hasattr(module, "fc2")):
            found.append(module)
    return found


def add_tiled_mlp(model: Any, tokens: int = MLP_TILE_TOKENS) -> int:
    """Run every dense MLP of ``model`` in tiles of ``tokens`` while training; returns how many."""
    mlps = dense_mlps(model)
    for mlp in mlps:
        own = mlp.forward

        def forward(self: Any, x: torch.Tensor, _own: Any = own) -> torch.Tensor:
            if not torch.is_grad_enabled() or x.shape[:-1].numel() <= tokens:
                return _own(x)
            return _TiledMLP.apply(x, _own, tokens)

        mlp.forward = types.MethodType(forward, mlp)
    _record(model).tiled_mlp = len(mlps)
    return len(mlps)


# --- activation offloading ----------------------------------------------------------------------------------
def offload_context(model: Any) -> Any:
    """TRL's activation offloading around a training step (CUDA only: on the CPU the tensors are in RAM)."""
    from trl.models.activation_offloading import get_act_offloading_ctx_manager

    return get_act_offloading_ctx_manager(model, warn_if_no_head=False)
