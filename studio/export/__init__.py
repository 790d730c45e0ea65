"""Export a finished run: merged safetensors, adapter, GGUF, Ollama (DESIGN.md, ``export/``).

    from studio.export import export, TARGETS
    result = export(run_dir, "gguf", quant="q8_0")
"""
from studio.export.arches import ARCHES as _ARCHES
from studio.export.errors import Cancelled, ConfigError, DiskError, ExportError, UnsupportedModel, VerificationFailed
from studio.export.targets import TARGETS, ExportResult, ExportTarget, default_out, export, prepare

SUPPORTED_GGUF_ARCHITECTURES = tuple(sorted(_ARCHES))  # model_type values; SmolLM is llama

__all__ = ["TARGETS", "ExportTarget", "ExportResult", "export", "prepare", "default_out", "ExportError",
           "ConfigError", "DiskError", "UnsupportedModel", "VerificationFailed", "Cancelled",
           "SUPPORTED_GGUF_ARCHITECTURES"]
