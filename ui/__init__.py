"""The desktop window (Qt only; never imports torch, transformers, peft, bitsandbytes or datasets)."""
