"""Token-level view of a dataset with a model's tokenizer: lengths, truncation, and a loss-mask view.

transformers is not needed: ``load_tokenizer`` reads tokenizer.json with the ``tokenizers`` package. Texts are rendered with the model's chat
template as training renders them (``template.training_text``) and tokenised in batches by the fast (Rust) tokenizer, which
spreads each batch over all cores.
"""
from __future__ import annotations

from array import array
from pathlib import Path
from typing import Any, Iterable

from studio.data.images import IMAGE
from studio.data.light_tokenizer import LightTokenizer
from studio.data.report import TokenStats
from studio.data.sources import DataError
from studio.data.template import DEFAULT_TEMPLATE, encode_with_offsets, training_text
from studio.demo import ensure_demo_model
from studio.models import ModelError, resolve
from studio.safety import UnsafeInput, check_remote_code

BATCH = 1024
BINS = 20


def load_tokenizer(model: str | Path) -> Any:
    """The fast tokenizer of 'demo', a model folder, or a model id found offline (never downloads).

    With a ``tokenizer.json`` (every fast tokenizer has one) it is read without transformers, so
    ``data inspect --model`` never imports torch (``light_tokenizer``: same rendering and tokens, a
    test checks it); an older folder with only a sentencepiece model goes through transformers.
    Never runs code from the model folder: one that asks for it (``auto_map``) is refused with the
    files named, and transformers gets ``trust_remote_code=False`` so it cannot ask on the terminal.
    """
    folder = _model_folder(str(model))
    try:
        check_remote_code(folder, trusted=False)
    except UnsafeInput as e:
        files = e.details.get("files")
        names = ", ".join(str(f) for f in files) if isinstance(files, (list, tuple)) else ""
        raise DataError(f"model '{model}': {folder} asks to run Python code shipped in its folder "
                        f"({names}); data inspect never runs model code. "
                        "Use a model whose tokenizer is built into transformers") from None
    if LightTokenizer.can_read(folder):
        try:
            return LightTokenizer(folder)
        except Exception as e:  # tokenizers' own errors for a damaged tokenizer.json
            raise DataError(f"model '{model}': {folder / 'tokenizer.json'} cannot be read "
                            f"({str(e).splitlines()[0]})") from None
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # transformers raises OSError/ValueError/… for a folder without a tokenizer
        raise DataError(f"model '{model}': no usable tokenizer in {folder} ({str(e).splitlines()[0]})") from None
    if not getattr(tok, "is_fast", False):
        raise DataError(f"model '{model}': only a slow tokenizer is available; loss masks need a fast one "
                        "(tokenizer.json)")
    return tok


def _model_folder(model: str) -> Path:
    if model == "demo":
        return ensure_demo_model()
    path = Path(model).expanduser()
    if path.is_dir():
        return path

    try:
        info = resolve(model)
    except ModelError as e:
        raise DataError(str(e)) from None
    if not info.path:
        raise DataError(f"model '{model}': its files are not on this machine, so its tokenizer cannot be used; "
                        "download it first or give its folder")
    return Path(info.path)


def template_name(tokenizer: Any) -> str:
    """Which chat template renders the conversations: the model's own, or the ChatML default."""
    return "model" if getattr(tokenizer, "chat_template", None) else "default (ChatML)"


def render_lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    """Token counts of already-rendered texts, one Rust batch call (parallel across cores)."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is not None:
        encode = getattr(backend, "encode_batch_fast", None) or backend.encode_batch
        return [len(e.ids) for e in encode(texts, add_special_tokens=False)]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


class LengthCollector:
    """Renders examples as they stream by; a background thread tokenises full batches meanwhile.

    The Rust tokenizer releases the GIL and spreads a batch over all cores, so rendering the next
    batch (Python, jinja) overlaps with tokenising the previous one.
    """

    def __init__(self, tokenizer: Any, on_error=None, max_pixels: int | None = None):
        from concurrent.futures import ThreadPoolExecutor

        self.tokenizer, self.on_error = tokenizer, on_error
        self.lengths = array("I")
        self.texts: list[str] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenise")
        self._pending: list = []
        # rows with images: the tokens each row's images become with this model's processor (studio.image_tokens),
        # added to the row's length; None until a row has images, False when the model's rule is not known
        self.max_pixels = max_pixels
        self._rule: Any = None
        self._extra = array("I")  # per collected row, its image tokens (0 for a text row)
        self.image_tokens = array("I")  # per row with images
        self.image_note = ""

    def _image_tokens(self, example: dict) -> int:
        images = example.get("images")
        if not images:
            return 0
        if self._rule is None:
            from studio.image_tokens import ImageTokens

            folder = getattr(self.tokenizer, "name_or_path", "") or ""
            self._rule = (ImageTokens.from_folder(folder, self.max_pixels) if folder and Path(folder).is_dir()
                          else None) or False
            if not self._rule:
                self.image_note = (f"the image tokens of {Path(folder).name or 'this model'} are not known to the "
                                   "studio (not a vision-language model it knows): row lengths count the text only")
        if not self._rule:
            return 0
        sizes = example.get("image_sizes") or []
        try:
            count = sum(self._rule.count(int(w), int(h)) for w, h in sizes)
        except (TypeError, ValueError):  # a size the processor refuses (aspect over 200): training says so per row
            count = 0
        self.image_tokens.append(count)
        return count

    def add(self, example: dict, row: int, line: int | None) -> None:
        try:
            self.texts.append(training_text(self.tokenizer, example))
        except Exception as e:  # jinja raises its own errors for conversations a template rejects
            if self.on_error:
                self.on_error(e, row, line)
            return
        self._extra.append(self._image_tokens(example))
        if len(self.texts) >= BATCH:
            self._submit()

    def _submit(self) -> None:
        self._pending.append(self._pool.submit(render_lengths, self.tokenizer, self.texts))
        self.texts = []
        while len(self._pending) > 2:  # bounded: at most two batches of text in flight
            self.lengths.extend(self._pending.pop(0).result())

    def flush(self) -> None:
        if self.texts:
            self._submit()
        for fut in self._pending:
            self.lengths.extend(fut.result())
        self._pending = []
        self._pool.shutdown(wait=True)
        if any(self._extra):  # each image's marker in the text becomes the processor's image tokens
            for i, extra in enumerate(self._extra):
                self.lengths[i] += extra
        self._extra = array("I")


def stats(lengths: Iterable[int], seq_len: int | None, tokenizer: Any = None) -> TokenStats:
    """min / p50 / p95 / max, the truncation count at ``seq_len`` and a 20-bin histogram."""
    import numpy as np

    arr = np.asarray(lengths if isinstance(lengths, array) else list(lengths), dtype=np.int64)
    out = TokenStats(seq_len=seq_len)
    if tokenizer is not None:
        out.template = template_name(tokenizer)
        out.tokenizer = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    if arr.size == 0:
        return out
    out.count = int(arr.size)
    out.min, out.max, out.mean = int(arr.min()), int(arr.max()), round(float(arr.mean()), 1)
    out.total = int(arr.sum())
    out.p50 = int(np.percentile(arr, 50, method="higher"))
    out.p95 = int(np.percentile(arr, 95, method="higher"))
    out.truncated = int((arr > seq_len).sum()) if seq_len else 0
    edges = np.unique(np.linspace(out.min, out.max + 1, BINS + 1).round().astype(np.int64))
    if edges.size < 2:
        edges = np.array([out.min, out.min + 1])
    counts, _ = np.histogram(arr, bins=edges)
    out.histogram = {"edges": [int(x) for x in edges], "counts": [int(c) for c in counts]}
    return out


def mask_view(tokenizer: Any, example: dict, seq_len: int | None = None,
              train_on: str = "assistant") -> list[tuple[str, bool]]:
    """Each token's text and whether it carries the loss; tokens past ``seq_len`` are cut, so never trained."""
    enc = encode_with_offsets(tokenizer, example, train_on)
    text, view = enc["text"], []
    limit = seq_len or len(enc["input_ids"])
    images = _image_spans(tokenizer, example, text)
    shown: set[int] = set()
    for i, (tok, label, (start, end)) in enumerate(zip(enc["input_ids"], enc["labels"], enc["offsets"])):
        k = next((k for k, (a, b, _) in enumerate(images) if start < b and end > a), None)
        if k is not None:  # the tokens of an <image> marker: shown once, as what the processor puts there
            if k not in shown:
                shown.add(k)
                a, b, words = images[k]
                view.append((text[start:a] + words + text[b:end], False))
            continue
        piece = text[start:end] if end > start else tokenizer.decode([tok])
        view.append((piece, label != -100 and i < limit))
    return view


def _image_spans(tokenizer: Any, example: dict, text: str) -> list[tuple[int, int, str]]:
    """Where each image's ``<image>`` marker sits in the rendered text, and how it is shown: its number, size and
    the image tokens the model's processor makes of it (never trained)."""
    import re

    if not example.get("images"):
        return []
    from studio.image_tokens import DEFAULT_MAX_PIXELS, ImageTokens

    folder = getattr(tokenizer, "name_or_path", "") or ""
    rule = ImageTokens.from_folder(folder, DEFAULT_MAX_PIXELS) if folder and Path(folder).is_dir() else None
    sizes = list(example.get("image_sizes") or [])
    spans = []
    for k, m in enumerate(re.finditer(re.escape(IMAGE), text)):
        words = f"[image {k + 1}"
        if k < len(sizes):
            w, h = sizes[k]
            words += f", {w}x{h}"
            if rule is not None:
                try:
                    words += f", {rule.count(int(w), int(h))} tokens"
                except (TypeError, ValueError):
                    pass
        spans.append((m.start(), m.end(), words + "]"))
    return spans


PACK_BOUNDARY = "\n── next example: attention starts again ──\n"


def packed_view(tokenizer: Any, examples: list[dict], seq_len: int | None = None,
                train_on: str = "assistant") -> list[tuple[str, bool]]:
    """train.packing: the first micro-batch as the one sequence it becomes, examples marked apart.

    Each example is cut to ``seq_len`` on its own; its first token never carries the loss (the
    collator's separator), so no example is scored on predicting the next one's start.
    """
    view: list[tuple[str, bool]] = []
    for n, example in enumerate(examples):
        part = mask_view(tokenizer, example, seq_len, train_on)[: seq_len or None]
        if n:
            view.append((PACK_BOUNDARY, False))
        view += [(t, m and i > 0) for i, (t, m) in enumerate(part)]
    return view


def padding(lengths: Any, micro_batch: int, seq_len: int | None = None) -> dict:
    """Padded tokens of micro-batches in file order without packing (each padded to its longest), and with."""
    cut = [min(int(n), seq_len) if seq_len else int(n) for n in lengths]
    padded = sum(max(cut[i:i + micro_batch]) * len(cut[i:i + micro_batch]) - sum(cut[i:i + micro_batch])
                 for i in range(0, len(cut), micro_batch))
    return {"micro_batch": micro_batch, "tokens": sum(cut), "padding_unpacked": padded, "padding_packed": 0,
            "sequences_longest": max((sum(cut[i:i + micro_batch]) for i in range(0, len(cut), micro_batch)), default=0)}


__all__ = ["load_tokenizer", "stats", "mask_view", "packed_view", "padding", "LengthCollector", "render_lengths", "template_name",
           "DEFAULT_TEMPLATE"]
