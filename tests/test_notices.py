"""Library output stays in the worker's log; the few messages that matter become one sentence each."""
from __future__ import annotations

import logging
import warnings

from studio import notices


def test_messages_that_matter_are_translated_and_noise_is_not():
    assert "longer than the model's stated maximum" in notices.translate(
        "Token indices sequence length is longer than the specified maximum sequence length for this model (600 > 512)")
    assert "initialised at random" in notices.translate(
        "Some weights of LlamaForCausalLM were not initialized from the model checkpoint at /m and are newly initialized")
    for noise in ("`is_gradient_checkpointing` is deprecated and will be removed in v6.",
                  "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'."):
        assert notices.translate(noise) is None


def test_install_says_each_notice_once_from_warnings_and_library_loggers(monkeypatch):
    said: list[str] = []
    shown: list[str] = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *a, **k: shown.append(str(message)))
    logger = logging.getLogger("transformers")
    before = list(logger.handlers)
    try:
        notices.install(said.append)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("Token indices sequence length is longer than the specified maximum (9 > 8)", UserWarning, stacklevel=1)
            warnings.warn("`torch_dtype` is deprecated! Use `dtype` instead!", FutureWarning, stacklevel=1)
        logger.warning("Token indices sequence length is longer than the specified maximum (10 > 8)")
        logger.warning("Some weights of X were not initialized from the model checkpoint and are newly initialized")
    finally:
        logger.handlers[:] = before
    assert len(said) == 2 and "longer than" in said[0] and "initialised at random" in said[1]
    assert len(shown) == 2 and "torch_dtype" in shown[1]  # every warning still goes where it went (the worker log)
