"""Versions and devices as the workers will see them: ``python -m studio.runtime.probe``.

It runs under the runtime's interpreter (it imports torch) and speaks the worker protocol: one
``done`` event whose data is the answer.
"""
from __future__ import annotations

import sys

from studio import events

PROBE_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets",
                  "safetensors", "gguf", "numpy")


def probe() -> dict:
    """Versions and devices as the workers will see them; imports torch, so run it in the runtime."""
    import importlib.metadata as md

    result: dict = {"python": sys.version.split()[0], "executable": sys.executable, "versions": {}}
    for name in PROBE_PACKAGES:
        try:
            result["versions"][name] = md.version(name)
        except md.PackageNotFoundError:
            result["versions"][name] = None
    result.update(_probe_torch())
    result["bnb_4bit"] = _probe_bnb(result.get("device", "cpu"))
    return result


def _probe_torch() -> dict:
    try:
        import torch
    except Exception as e:
        return {"torch_error": f"{type(e).__name__}: {e}", "device": "cpu"}
    cuda = torch.cuda.is_available()
    out = {"torch_cuda": torch.version.cuda, "cuda_available": cuda, "device": "cuda" if cuda else "cpu",
           "cudnn": torch.backends.cudnn.version() if cuda else None, "devices": []}
    for i in range(torch.cuda.device_count() if cuda else 0):
        props = torch.cuda.get_device_properties(i)
        out["devices"].append({"name": props.name, "memory_mb": props.total_memory // 2**20,
                               "capability": f"{props.major}.{props.minor}",
                               "bf16": bool(torch.cuda.is_bf16_supported()) if i == 0 else None})
    return out


def _probe_bnb(device: str) -> dict:
    """Quantise and dequantise a small tensor with NF4: proof that 4-bit loading will work here."""
    try:
        import torch
        from bitsandbytes import functional as F

        x = torch.linspace(-1, 1, 4096, dtype=torch.float32, device=device).reshape(64, 64)
        q, state = F.quantize_4bit(x, quant_type="nf4")
        err = (F.dequantize_4bit(q, state, quant_type="nf4") - x).abs().max().item()
        return {"ok": err < 0.2, "device": device, "max_error": round(err, 4)}
    except Exception as e:
        return {"ok": False, "device": device, "error": f"{type(e).__name__}: {str(e)[:300]}"}


def main() -> int:
    emitter = events.Emitter(stream=events.reserve_stdout())
    emitter.emit(events.DONE, **probe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
