"""Library warnings that matter to a user, said as one plain sentence; everything else stays in the log.

Workers write whatever torch, transformers, peft or bitsandbytes print to stderr, which goes to the
run's ``worker.log``; the window and the CLI show the studio's own events. A few library messages
change what the user should do or expect: ``install()`` turns those into ``warning`` events (once
each), and lets every message through to stderr as before.
"""
from __future__ import annotations

import logging
import re
import warnings
from typing import Callable

# (pattern in the library's message, what the user is told). Sources: the messages as these
# libraries print them (transformers' tokenizer and loading warnings, bitsandbytes' setup check,
# torch's CUDA initialisation).
NOTICES: tuple[tuple[re.Pattern, str], ...] = tuple((re.compile(p, re.I), s) for p, s in (
    (r"Token indices sequence length is longer than the specified maximum",
     "Some examples are longer than the model's stated maximum length; training cuts them to the run's "
     "sequence length."),
    (r"weights of .* were not initialized from the model checkpoint|newly initialized",
     "Some weights of the base model are missing from its files and were initialised at random: the model "
     "folder may be incomplete. Check that every *.safetensors file is there."),
    (r"compiled without GPU support|bitsandbytes.*(cannot|could not) (find|load).*(cuda|libbitsandbytes)",
     "bitsandbytes has no GPU support in this environment: 4-bit loading and 8-bit optimizers fall back or "
     "fail. Run 'lora-studio doctor' to see why."),
    (r"CUDA initialization|found no NVIDIA driver",
     "PyTorch cannot use the GPU (driver or CUDA problem): training runs on the CPU. Run 'lora-studio doctor'."),
))


LOGGERS = ("", "transformers", "peft", "bitsandbytes", "accelerate", "torch")


def translate(message: str) -> str | None:
    """The sentence for a library message that matters, or None for one that does not."""
    return next((sentence for pattern, sentence in NOTICES if pattern.search(message)), None)


def install(say: Callable[[str], None]) -> None:
    """Send each notice once to ``say`` (an emitter of warning events); print everything as before."""
    said: set[str] = set()

    def note(message: str) -> None:
        sentence = translate(message)
        if sentence and sentence not in said:
            said.add(sentence)
            say(sentence)

    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        note(str(message))
        show(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning
    handler = _Handler(note)
    for name in LOGGERS:  # transformers' own loggers do not propagate to the root logger
        logging.getLogger(name).addHandler(handler)


class _Handler(logging.Handler):
    def __init__(self, note: Callable[[str], None]) -> None:
        super().__init__(level=logging.WARNING)
        self.note = note

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.note(record.getMessage())
        except Exception:  # a notice must never break the library that logged
            pass
