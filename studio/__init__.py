"""LoRA Studio core: no Qt here; torch and friends are imported lazily inside functions."""
__version__ = "0.1.0"
