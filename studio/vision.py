"""Training and chat of a vision-language model (VLM) on image + text rows: the whole checkpoint, its processor.

A normalised example with images is ``{"messages": [...], "images": [path, ...], "image_sizes": [[w, h], ...]}``
whose content strings hold the literal marker ``<image>`` at each image's place (studio.data). When the base is
a VLM (``is_vlm``: an image-text-to-text architecture with a ``vision_config`` and a processor beside it) and the
rows carry images, a run loads the whole model with ``AutoModelForImageTextToText``: the language model in 4-bit
NF4 (or as the recipe says), the vision tower, the projector and the output layer in the compute dtype
(``skip_modules``). The tower is frozen; LoRA adapts the language model's linear layers (``lora_targets``), and
the tower's too with ``train.vision_lora``. Text rows on a VLM keep the text path (``studio.multimodal``).

Labels (``encode_vision_example``): the processor's own chat template renders the conversation with content
parts (``{"type": "image"}`` where a marker was); the assistant turns are found as character spans by rendering
growing prefixes (as ``studio.data.template`` does for text), carried into the processor's expanded text (each
image placeholder becomes the image's tokens: ``return_text_replacement_offsets``), and the tokens inside them
carry the loss; every image token is -100. A row whose image tokens do not fit train.seq_len is left out, never
cut through an image.

The rows keep token ids and image paths only: the pixels are made again per batch by the collator (memory stays
that of the text; the processor is deterministic, so the image token counts are those the ids were built with).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from studio.data.chat_render import TemplateError, render_chat
from studio.data.images import IMAGE
from studio.errors import LoadError, UserError
from studio.image_tokens import DEFAULT_MAX_PIXELS
from studio.multimodal import folder_config

IGNORE = -100
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
VISION_MODELS = "Qwen2-VL, Qwen2.5-VL, Gemma 3 (4B and up) or a LLaVA model"
# Module names of the towers and projectors of the image-text families transformers 5 loads (Qwen2/2.5/3-VL
# 'visual', LLaVA/Gemma 3/Mistral 3 'vision_tower' + 'multi_modal_projector', Idefics3/SmolVLM 'vision_model' +
# 'connector', Gemma 3n/4 'embed_vision'); under ``model.`` in transformers 5's layout, at the top in the old one.
TOWERS = ("visual", "vision_tower", "vision_model", "vision_encoder", "image_encoder")
# the projectors: their own modules, or inside the tower (Qwen2-VL's visual.merger)
PROJECTORS = ("multi_modal_projector", "connector", "mm_projector", "embed_vision", "merger")
_TOWER_RE = re.compile(r"(?:^|\.)(?:" + "|".join(TOWERS) + r")(?:\.|$)")
_PROJECTOR_RE = re.compile(r"(?:^|\.)(?:" + "|".join(PROJECTORS) + r")(?:\.|$)")
# what the processor gives besides the text's ids: made again per batch from the images
TEXT_KEYS = ("input_ids", "attention_mask", "labels", "token_type_ids", "mm_token_type_ids")


class VisionError(UserError):
    """Images where the studio cannot take them (a text model, an objective without images, a bad file)."""


def _image_text_architecture(config: dict) -> bool:
    """An architecture transformers loads as image-text-to-text (its mapping when importable, else the name)."""
    archs = [str(a) for a in config.get("architectures") or ()]
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as names
    except ImportError:  # pragma: no cover - transformers is a dependency
        names = {}
    if config.get("model_type") in names:
        return True
    return any(a.endswith(("ForConditionalGeneration", "ForImageTextToText")) for a in archs)


def is_vlm(folder: Path | str) -> bool:
    """The checkpoint in ``folder`` takes images: a ``vision_config``, an image-text-to-text architecture, and a
    processor saved beside it (``preprocessor_config.json`` / ``processor_config.json``)."""
    folder = Path(folder)
    config = folder_config(folder)
    return (isinstance(config.get("vision_config"), dict) and _image_text_architecture(config)
            and any((folder / name).is_file() for name in PROCESSOR_FILES))


def takes_images(folder: Path | str) -> bool:
    """What the window can know without transformers or torch: the checkpoint in ``folder`` has a
    ``vision_config`` and a processor saved beside it (``is_vlm`` also asks transformers about the architecture)."""
    folder = Path(folder)
    return (isinstance(folder_config(folder).get("vision_config"), dict)
            and any((folder / name).is_file() for name in PROCESSOR_FILES))


def image_count(example: dict) -> int:
    images = example.get("images") if isinstance(example, dict) else None
    return len(images) if isinstance(images, list) else 0


def has_images(examples: list[dict]) -> bool:
    return any(image_count(ex) for ex in examples)


def text_model_refusal(data_path: str, model: str, n_rows: int) -> VisionError:
    """Image rows given to a text model: name the dataset and the two ways out."""
    return VisionError(f"{data_path}: {n_rows} row(s) carry images, and the model {model} takes text only. Pick a "
                       f"vision model (e.g. {VISION_MODELS}) with its processor files, or drop the images from the "
                       "dataset to train on the text alone")


# ------------------------------------------------------------------ the processor

@contextlib.contextmanager
def _images_only() -> Iterator[None]:
    """Processors that declare a video processor (Qwen2-VL, Qwen2.5-VL, SmolVLM) need torchvision for it even
    when only images are given; without torchvision they load with no video processor (images only)."""
    from transformers import processing_utils as pu

    real_check, real_map = pu.ProcessorMixin.check_argument_for_proper_class, pu.MODALITY_TO_AUTOPROCESSOR_MAPPING

    class _NoVideo:
        @staticmethod
        def from_pretrained(*_a: Any, **_k: Any) -> None:
            return None

    class _Mapping:
        def __getitem__(self, key: str) -> Any:
            return _NoVideo if "video" in key else real_map[key]

        def __contains__(self, key: object) -> bool:
            return key in real_map

        def __getattr__(self, name: str) -> Any:
            return getattr(real_map, name)

    def check(self: Any, name: str, arg: Any) -> Any:
        if arg is None and "video" in name:
            return None
        return real_check(self, name, arg)

    pu.ProcessorMixin.check_argument_for_proper_class = check
    pu.MODALITY_TO_AUTOPROCESSOR_MAPPING = _Mapping()
    try:
        yield
    finally:
        pu.ProcessorMixin.check_argument_for_proper_class = real_check
        pu.MODALITY_TO_AUTOPROCESSOR_MAPPING = real_map


def load_processor(folder: Path, trust_remote_code: bool = False, max_pixels: int | None = None) -> Any:
    """The checkpoint's processor (tokenizer + image processor + chat template), its images bounded by
    ``max_pixels`` where the image processor has such a bound (Qwen2-VL's ``max_pixels``)."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except (ImportError, AttributeError) as e:
        if "torchvision" not in str(e).lower() and "_extra_content" not in str(e):
            raise
        with _images_only():
            processor = AutoProcessor.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    tok = getattr(processor, "tokenizer", None)
    if tok is None or getattr(processor, "image_processor", None) is None:
        raise LoadError(f"{folder}: the processor has no tokenizer or no image processor; this checkpoint cannot "
                        "read images here")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(processor, "chat_template", None):
        processor.chat_template = getattr(tok, "chat_template", None)
    if not processor.chat_template:
        raise LoadError(f"{folder}: the processor has no chat template to render images with")
    if max_pixels:
        bound_pixels(processor, max_pixels)
        processor.studio_max_pixels = pixel_bound(processor, max_pixels)
    return processor


def pixel_bound(processor: Any, max_pixels: int | None) -> int | None:
    """``max_pixels`` as this processor should see it: a family that resizes every image to one fixed size
    (Gemma 3: 896x896, LLaVA: its crop) makes the same tokens from any image, so shrinking below that size would
    only lose detail; its images are bounded at that size instead."""
    if not max_pixels:
        return max_pixels
    ip, native = processor.image_processor, 0
    for size in (getattr(ip, "size", None), getattr(ip, "crop_size", None)):
        get = size.get if isinstance(size, dict) else (lambda k, s=size: getattr(s, k, None))
        h, w = get("height"), get("width")
        if isinstance(h, int) and isinstance(w, int):
            native = max(native, h * w)
    return max(max_pixels, native)


def processor_max_pixels(processor: Any) -> int:
    """The pixel bound the processor was loaded with (``load_processor``'s ``max_pixels``), else the default."""
    loaded = getattr(processor, "studio_max_pixels", None)
    if isinstance(loaded, int) and loaded > 0:
        return loaded
    bound = getattr(processor.image_processor, "max_pixels", None)
    return int(bound) if isinstance(bound, int) and bound > 0 else DEFAULT_MAX_PIXELS


def prompt_inputs(processor: Any, messages: list[dict], max_pixels: int | None = None) -> dict:
    """A conversation to answer as the model's inputs (``input_ids`` and the images' tensors, no attention mask):
    rendered by the processor's chat template with the generation prompt, each message's ``images`` at its
    ``<image>`` markers (a missing or unreadable image: VisionError naming it)."""
    images = [p for m in messages for p in m.get("images") or []]
    text = render(processor, part_messages(messages), add_generation_prompt=True)
    pictures = [load_image(p, max_pixels or processor_max_pixels(processor)) for p in images]
    enc = processor(text=[text], images=pictures or None, return_tensors="pt", add_special_tokens=False)
    return {k: v for k, v in enc.items() if k != "attention_mask"}


def bound_pixels(processor: Any, max_pixels: int) -> None:
    """Lower the image processor's own pixel bound to ``max_pixels`` (Qwen2-VL keeps it as ``max_pixels`` and
    ``size['longest_edge']``, counted in pixels); the rows are also resized before the processor sees them."""
    ip = processor.image_processor
    # Qwen2-VL's image processor (Qwen2.5-VL's and Qwen3-VL's too) counts size in pixels; other families' sizes
    # are side lengths, which the rows' own resizing (load_image) bounds instead
    if type(ip).__name__.startswith("Qwen2VLImageProcessor") or hasattr(ip, "max_pixels"):
        ip.max_pixels = min(int(getattr(ip, "max_pixels", None) or max_pixels), max_pixels)
        size: Any = getattr(ip, "size", None)
        if isinstance(size, dict) and "longest_edge" in size:
            size["longest_edge"] = min(int(size["longest_edge"]), max_pixels)
            if size.get("shortest_edge", 0) > size["longest_edge"]:
                size["shortest_edge"] = size["longest_edge"]
        elif getattr(size, "longest_edge", None) and hasattr(size, "__dataclass_fields__"):  # transformers 5's SizeDict
            longest = min(int(size.longest_edge), max_pixels)
            ip.size = dataclasses.replace(size, longest_edge=longest,
                                          shortest_edge=min(int(size.shortest_edge or longest), longest))


def load_image(path: str | Path, max_pixels: int | None = None) -> Any:
    """An RGB PIL image, shrunk (aspect kept, ``image_tokens.bounded``: the planner counts the same size) to at
    most ``max_pixels``. First checked as the data import checks every image (studio.data.images.check: missing,
    not an image, truncated, or a header claiming more pixels than can be read); a failure is a VisionError
    naming the file and what to do."""
    from PIL import Image

    from studio.data.images import FORMATS, check
    from studio.data.report import RowProblem
    from studio.image_tokens import bounded

    try:
        check(str(path), "image")
        with Image.open(path, formats=FORMATS) as img:
            img.load()
            rgb = img.convert("RGB")
    except RowProblem as e:
        raise VisionError(e.problem.message) from None  # the data import's hint speaks of rows
    except (OSError, ValueError) as e:  # changed on disk since the check
        raise VisionError(f"{path}: not an image that can be read ({type(e).__name__}: {e})") from None
    w, h = rgb.size
    size = bounded(w, h, max_pixels)
    if size != (w, h):
        rgb = rgb.resize(size, Image.Resampling.BICUBIC)
    return rgb


# ------------------------------------------------------------------ rows

def content_parts(text: str) -> list[dict]:
    """A content string with ``<image>`` markers as the processor's content parts."""
    parts: list[dict] = []
    pieces = text.split(IMAGE)
    for i, piece in enumerate(pieces):
        if i:
            parts.append({"type": "image"})
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def part_messages(messages: list[dict]) -> list[dict]:
    """The turns as the processor's template takes them: content as parts (every turn: some templates iterate over
    a turn's parts), the rest of each turn (tool calls, names) kept; the image paths travel beside, not in it."""
    return [{**{k: v for k, v in m.items() if k != "images"}, "content": content_parts(str(m.get("content") or ""))}
            for m in messages]


def render(processor: Any, messages: list[dict], add_generation_prompt: bool = False,
           tools: list | None = None) -> str:
    """Content-part messages rendered by the processor's chat template (the studio's sandbox and deadline), with
    the row's ``tools`` schema as the text path renders it."""
    return render_chat(processor.tokenizer, messages, add_generation_prompt=add_generation_prompt, tools=tools,
                       chat_template=processor.chat_template)


def assistant_spans(processor: Any, messages: list[dict], tools: list | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and each assistant turn's character span (as studio.data.template finds them)."""
    text = render(processor, messages, tools=tools)
    spans = []
    for i, msg in enumerate(messages):
        if msg.get("role") != "assistant":
            continue
        start = len(render(processor, messages[:i], add_generation_prompt=True, tools=tools)) if i else 0
        upto = render(processor, messages[:i + 1], tools=tools)
        if not text.startswith(upto):
            raise TemplateError("the chat template renders a conversation differently from its prefixes; "
                                "train with train_on='all' or pick a model with a standard template")
        end = len(upto)
        while end > start and text[end - 1] in " \n":
            end -= 1
        spans.append((start, end))
    return text, spans


@dataclass
class VisionRow:
    """One encoded example: token lists, its images (paths) and how many image tokens each stands for."""

    row: dict  # input_ids, labels, attention_mask (+ token_type_ids / mm_token_type_ids)
    images: list[str]
    image_tokens: int  # the model's image tokens in input_ids (what the images' features replace)
    truncated: bool = False


class TooLong(Exception):
    """The row's image tokens reach past train.seq_len: left out rather than cut through an image."""


def image_token_ids(processor: Any) -> set[int]:
    tok = processor.tokenizer
    ids = set()
    for attr in ("image_token_id", "boi_token_id", "eoi_token_id"):
        for holder in (processor, tok):
            value = getattr(holder, attr, None)
            if isinstance(value, int):
                ids.add(value)
    for attr in ("image_token", "boi_token", "eoi_token", "fake_image_token", "global_image_token"):
        value = getattr(processor, attr, None) or getattr(tok, attr, None)
        if isinstance(value, str):
            found = tok.convert_tokens_to_ids(value)
            if isinstance(found, int) and found != tok.unk_token_id:
                ids.add(found)
    return ids


def encode_vision_example(processor: Any, example: dict, seq_len: int, train_on: str = "assistant",
                          max_pixels: int | None = DEFAULT_MAX_PIXELS) -> VisionRow:
    """Token ids, labels (assistant turns only unless ``train_on`` is 'all'; image tokens always -100) and the
    processor's text-side extras for one example with images. TooLong when an image does not fit ``seq_len``;
    TemplateError when the template refuses the conversation; VisionError for an unreadable image."""
    messages = part_messages(example["messages"])
    paths = [str(p) for p in example.get("images") or []]
    markers = sum(str(m.get("content") or "").count(IMAGE) for m in example["messages"])
    if markers != len(paths):
        raise TemplateError(f"{markers} {IMAGE} marker(s) for {len(paths)} image(s)")
    text, spans = assistant_spans(processor, messages, example.get("tools"))
    if train_on == "all":
        spans = [(0, len(text))]
    images = [load_image(p, pixel_bound(processor, max_pixels)) for p in paths]
    enc = processor(text=[text], images=images or None, return_offsets_mapping=True,
                    return_text_replacement_offsets=True, add_special_tokens=False)
    ids = list(_first(enc["input_ids"]))
    offsets = [tuple(o) for o in _first(enc["offset_mapping"])]
    replaced = list(_first(enc.get("text_replacement_offsets") or [[]]))
    ends = [r["span"][1] for r in replaced]
    gained = [0] + [r["new_span"][1] - r["span"][1] for r in replaced]
    import bisect

    moved = [tuple(c + gained[bisect.bisect_right(ends, c)] for c in span) for span in spans]
    image_spans = [tuple(r["new_span"]) for r in replaced if r.get("type", "image") == "image"]
    special = image_token_ids(processor)
    soft = getattr(processor.tokenizer, "image_token_id", None)
    soft = soft if isinstance(soft, int) else getattr(processor, "image_token_id", None)
    labels, image_positions = [], []
    for i, (tid, (s, e)) in enumerate(zip(ids, offsets)):
        in_image = tid in special or any(a <= s and (e if e > s else s + 1) <= b for a, b in image_spans)
        if in_image:
            image_positions.append(i)
            labels.append(IGNORE)
            continue
        end = e if e > s else s + 1
        labels.append(tid if any(a <= s and end <= b for a, b in moved) else IGNORE)
    truncated = len(ids) > seq_len
    if truncated and image_positions and image_positions[-1] >= seq_len:
        raise TooLong(f"the image tokens reach token {image_positions[-1] + 1}, past train.seq_len={seq_len}")
    row = {"input_ids": ids[:seq_len], "labels": labels[:seq_len], "attention_mask": [1] * min(len(ids), seq_len)}
    for key in ("token_type_ids", "mm_token_type_ids"):
        if key in enc:
            row[key] = list(_first(enc[key]))[:seq_len]
    return VisionRow(row, paths, sum(1 for t in ids if t == soft), truncated)


def _first(value: Any) -> Any:
    """The first (only) sample of a batched processor output, as a list."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    return value[0] if value and isinstance(value[0], (list, tuple)) else value


class VisionDataset:
    """Encoded rows for the Trainer: ``__getitem__`` gives the token lists and the image paths; the collator
    makes the pixels."""

    def __init__(self, rows: list[VisionRow]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        r = self.rows[i]
        return {**r.row, "studio_images": r.images}

    def lengths(self) -> list[int]:
        """Tokens per row, image tokens included."""
        return [len(r.row["input_ids"]) for r in self.rows]


class VisionCollator:
    """Pads the token lists (labels with -100) and adds the images' tensors as the family takes them: the image
    processor's output for all the batch's images at once (Qwen2-VL: patch rows concatenated and
    ``image_grid_thw``; Gemma 3, LLaVA: pixel_values stacked per image)."""

    def __init__(self, processor: Any, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.processor = processor
        self.max_pixels = max_pixels
        tok = processor.tokenizer
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.left = getattr(tok, "padding_side", "right") == "left"

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        out: dict[str, Any] = {}
        fill = {"input_ids": self.pad, "labels": IGNORE, "attention_mask": 0}
        for key in TEXT_KEYS:
            if key not in features[0]:
                continue
            pad = fill.get(key, 0)
            rows = [list(f[key]) for f in features]
            out[key] = torch.tensor([[pad] * (width - len(r)) + r if self.left else r + [pad] * (width - len(r))
                                     for r in rows], dtype=torch.long)
        bound = pixel_bound(self.processor, self.max_pixels)
        images = [load_image(p, bound) for f in features for p in f.get("studio_images") or []]
        if images:
            pixels = self.processor.image_processor(images=images, return_tensors="pt")
            for key, value in pixels.items():
                out[key] = value
        return out


# ------------------------------------------------------------------ the model

def skip_modules() -> list[str]:
    """Patterns (transformers' ``llm_int8_skip_modules``: matched from the start at a module boundary, or as a
    suffix) of what stays in the compute dtype: the towers, the projectors and the output layer."""
    return [rf"(?:model\.)?(?:{'|'.join(TOWERS + PROJECTORS)})", "lm_head"]


def in_tower(name: str) -> bool:
    return bool(_TOWER_RE.search(name))


def in_language_model(name: str) -> bool:
    return not in_tower(name) and not _PROJECTOR_RE.search(name) and "lm_head" not in name.split(".")


def lora_targets(model: Any, targets: Any, vision_lora: bool = False) -> str:
    """peft's ``target_modules`` as one regex of full module names: the language model's linear layers (the
    recipe's names, or every one for 'all-linear'), and the tower's too with ``vision_lora``; never the
    projector or the output layer."""
    import torch

    all_linear = targets == ["all-linear"] or targets == "all-linear"
    wanted = set() if all_linear else {str(t) for t in targets}
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) and type(module).__name__ not in ("Linear4bit", "Linear8bitLt"):
            continue
        if not (in_language_model(name) or (vision_lora and in_tower(name) and not _PROJECTOR_RE.search(name))):
            continue
        if wanted and name.rsplit(".", 1)[-1] not in wanted:
            continue
        names.append(name)
    if not names:
        raise LoadError(f"lora.targets {targets}: no linear layer of this model's language model has that name. "
                        "Use ['all-linear'] or names such as q_proj, v_proj")
    return "^(?:" + "|".join(re.escape(n) for n in names) + ")$"


def load_vlm(folder: Path, kwargs: dict, vision_lora: bool = False) -> Any:
    """The whole VLM with ``AutoModelForImageTextToText`` (``from_pretrained`` keyword arguments ``kwargs``; a
    4-bit config gets the towers, projectors and output layer skipped), the tower frozen unless ``vision_lora``
    (LoRA then adapts it; its own weights stay frozen either way)."""
    from transformers import AutoModelForImageTextToText

    qconf = kwargs.get("quantization_config")
    if qconf is not None and (getattr(qconf, "load_in_4bit", False) or getattr(qconf, "load_in_8bit", False)):
        qconf.llm_int8_skip_modules = sorted(set(qconf.llm_int8_skip_modules or []) | set(skip_modules()))
    model = AutoModelForImageTextToText.from_pretrained(str(folder), **kwargs)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def validation_loss(model: Any, dataset: VisionDataset, collator: VisionCollator,
                    batch_size: int = 4) -> tuple[float | None, int]:
    """Mean cross-entropy per label token with the images (studio.evalreport's loop, the collator's batches)."""
    from studio.losses import summed_loss

    return summed_loss(model, (collator([dataset[i] for i in range(start, min(len(dataset), start + batch_size))])
                               for start in range(0, len(dataset), batch_size)))


def adapter_on_whole_vlm(path: Path) -> bool:
    """The adapter in ``path`` was trained on a whole vision-language model (rows with images): its target
    modules are the full names ``lora_targets`` writes, under the language model."""
    try:
        config = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    targets = config.get("target_modules") if isinstance(config, dict) else None
    return isinstance(targets, str) and "language_model" in targets


def training_note(vision_lora: bool, quant: str) -> str:
    held = {"4bit": "in 4-bit NF4", "8bit": "in 8-bit", "none": "in 16-bit"}.get(quant, quant)
    return (f"vision-language model: the whole model loads, the language model {held}, the vision tower and "
            "projector in the compute dtype; LoRA adapts the language model's linear layers"
            + (" and the vision tower's (train.vision_lora)" if vision_lora else "; the vision tower is frozen"))
