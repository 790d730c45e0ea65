"""The images a dataset row carries (vision-language fine-tuning): where each one is, and that it is whole.

A usable example that carries images has ``example["images"]``, absolute paths in order of appearance,
``example["image_sizes"]``, ``[width, height]`` of each, and the literal marker ``<image>`` at each image's
place in its turns' text: the markers over all ``messages`` are exactly ``len(example["images"])``.
Text-only examples have neither key.

Where an image is found (``resolve``): a path (relative to the dataset file's folder), a ``file://`` URL, a
``data:image/...;base64,`` URI, raw bytes or a Hugging Face image struct ``{"bytes", "path"}``. Bytes are
written once, atomically, to a content-addressed cache in the studio's data folder
(``image_cache/<sha256>.<ext>``), never beside the user's files. Network URLs are refused: nothing enters
or leaves the machine over the network.

Each image is opened with Pillow (imported when the first image is checked) and decoded in full
(``check``): a missing file, a file that is not an image, a truncated one and one whose header claims
more than ``MAX_PIXELS`` (checked before decoding) are row problems naming the file. Checks are cached
per (path, size, mtime), so a dataset that repeats an image decodes it once per process.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import stat
import threading
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from studio import paths
from studio.data.report import RowProblem
from studio.data.sources import DataError
from studio.fsutil import atomic_write_bytes

IMAGE = "<image>"
MAX_PIXELS = 8192 * 8192  # 64 megapixels: larger headers are refused before any pixel is decoded
# The formats an image may be in, whatever its name or a data: URI says: Pillow picks a decoder from the bytes, and
# some it knows run an outside program (EPS: Ghostscript) or decode slowly into a lot of memory (JPEG 2000, TIFF)
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
MAX_EMBEDDED = 64 << 20  # bytes of one image carried in a row (a data: URI's text, a Parquet struct's bytes)
_VERIFY_LOCK = threading.Lock()  # _verify flips Pillow's global LOAD_TRUNCATED_IMAGES for its decode
CACHE_FOLDER = "image_cache"
CHECK_CACHE = 100_000  # checked files remembered per process (oldest forgotten first)
# Columns that hold a row's images (LLaVA 'image', ShareGPT/LLaMA-Factory 'images', HF 'image' structs).
IMAGE_COLUMNS = ("images", "image", "image_path", "image_paths", "image_url", "image_urls", "image_file",
                 "image_files")
# Keys of a content part (or of an object in an images column) that name its image, in the order tried.
PART_KEYS = ("image", "image_url", "url", "path", "bytes", "src", "file")
IMAGE_PARTS = frozenset({"image", "image_url", "input_image"})  # content part types that are images
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]+)://")
_MARKER = re.compile(re.escape(IMAGE) + r"\n?")
# Pillow format -> file extension of the cache file.
_EXT = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tiff",
        "ICO": "ico", "PPM": "ppm", "TGA": "tga", "JPEG2000": "jp2"}
_FIX_PATH = "fix the path in this row (a relative path is read from the dataset file's folder)"


@dataclass(frozen=True)
class _Failed:
    message: str
    hint: str
    code: str


_checked: dict[tuple, tuple[int, int] | _Failed] = {}
_written: dict[tuple[str, str], str] = {}  # (cache folder, sha256) -> the cache file, this process


# ------------------------------------------------------------------ where an image is

def resolve(value: Any, base: Path | None, field: str) -> str:
    """The absolute path of the image ``value`` names (bytes go to the cache); RowProblem when it names none."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _cached(bytes(value), field)
    if isinstance(value, dict):
        if value.get("bytes") not in (None, b"", ""):
            data = value["bytes"]
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise RowProblem(f"'{field}' holds 'bytes' that are {type(data).__name__}, not bytes",
                                 "give the image as a file path, or as bytes in a Parquet/Arrow column", field,
                                 code="image_value")
            return _cached(bytes(data), field)
        inner = next((value[k] for k in PART_KEYS if k != "bytes" and value.get(k) not in (None, "")), None)
        if inner is None:
            raise RowProblem(f"'{field}' is an object without an image path or bytes (keys: "
                             f"{', '.join(map(str, list(value)[:6])) or 'none'})",
                             "give each image as a path, or as {\"path\": ...} or {\"bytes\": ...}", field,
                             code="image_value")
        return resolve(inner, base, field)
    if not isinstance(value, str):
        raise RowProblem(f"'{field}' holds {type(value).__name__}, not an image path",
                         "give each image as a file path (text)", field, code="image_value")
    text = value.strip()
    if not text:
        raise RowProblem(f"'{field}' holds an empty image path", "give the image's file path or remove it", field,
                         code="image_value")
    if text[:5].lower() == "data:":
        return _cached(_data_uri(text, field), field)
    scheme = _SCHEME.match(text)
    if scheme and scheme.group(1).lower() == "file":
        url = urlparse(text)
        text = url2pathname(unquote(url.path))
    elif scheme:
        raise RowProblem(f"the image in '{field}' is a network address ({_short(text)}); nothing enters or leaves "
                         "this machine over the network", "download the image and give the file's path instead",
                         field, code="image_remote")
    if text[:2] in ("\\\\", "//") and text[2:3] not in ("", "/", "\\", ".", "?"):
        raise RowProblem(f"the image in '{field}' is on a network share ({_short(text)}); nothing enters or leaves "
                         "this machine over the network", "copy the image to this computer and give that path",
                         field, code="image_remote")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return os.path.normpath(path)


def _data_uri(text: str, field: str) -> bytes:
    head, comma, payload = text.partition(",")
    if not comma or ";base64" not in head.lower() or not head[5:].lower().startswith("image/"):
        raise RowProblem(f"'{field}' is a data: URI that is not a base64 image ({_short(text)})",
                         "write it as data:image/png;base64,... or give the image's file path", field,
                         code="image_value")
    if len(payload) > MAX_EMBEDDED * 4 // 3 + 1024:
        raise RowProblem(f"'{field}' is a data: URI of {len(payload):,} characters; an image carried in a row is "
                         f"read up to {MAX_EMBEDDED >> 20} MiB", "save the image as a file and give its path", field,
                         code="image_too_large")
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RowProblem(f"'{field}' is a data: URI whose base64 text is damaged",
                         "export the image again, or give the image's file path", field,
                         code="image_invalid") from None


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def cache_dir() -> Path:
    """Where image bytes from the datasets are kept, one file per content (the studio's data folder)."""
    return paths.data_dir() / CACHE_FOLDER


def _cached(data: bytes, field: str) -> str:
    """The cache file holding ``data``: checked in full first, then written once, atomically."""
    if len(data) > MAX_EMBEDDED:
        raise RowProblem(f"the image bytes in '{field}' are {len(data):,} bytes; an image carried in a row is read up "
                         f"to {MAX_EMBEDDED >> 20} MiB", "save the image as a file and give its path", field,
                         code="image_too_large")
    digest = hashlib.sha256(data).hexdigest()
    folder = cache_dir()
    known = _written.get((str(folder), digest))
    if known is not None and os.path.isfile(known):
        return known
    result = _verify(lambda: io.BytesIO(data), f"the image bytes in '{field}'")
    if isinstance(result, _Failed):
        raise RowProblem(result.message, result.hint, field, code=result.code)
    width, height, fmt = result
    target = folder / f"{digest}.{_EXT.get(fmt, fmt.lower() or 'img')}"
    try:
        if not target.is_file() or target.stat().st_size != len(data):
            atomic_write_bytes(target, data)
        st = target.stat()
    except OSError as e:
        raise DataError(f"cannot write the image cache {folder} ({e.strerror or e}); free some disk space or "
                        "set LORA_STUDIO_HOME to a folder you can write") from None
    _remember((str(target), st.st_size, st.st_mtime_ns), (width, height))
    if len(_written) >= CHECK_CACHE:
        _written.pop(next(iter(_written)))
    _written[(str(folder), digest)] = str(target)
    return str(target)


# ------------------------------------------------------------------ is it a whole image

def check(path: str, field: str) -> tuple[int, int]:
    """(width, height) of the image file at ``path``, decoded in full once per (path, size, mtime)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise RowProblem(f"image file {path} does not exist", f"put the image there, or {_FIX_PATH}", field,
                         code="image_missing") from None
    except OSError as e:
        raise RowProblem(f"image file {path} cannot be read ({e.strerror or e})",
                         f"check the file's permissions, or {_FIX_PATH}", field, code="image_missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise RowProblem(f"image path {path} is not a file", f"point to the image file itself, or {_FIX_PATH}",
                         field, code="image_missing")
    key = (path, st.st_size, st.st_mtime_ns)
    found = _checked.get(key)
    if found is None:
        verdict = _verify(lambda: open(path, "rb"), f"image file {path}")
        found = verdict if isinstance(verdict, _Failed) else (verdict[0], verdict[1])
        _remember(key, found)
    if isinstance(found, _Failed):
        raise RowProblem(found.message, found.hint, field, code=found.code)
    return found


def _remember(key: tuple, value: tuple[int, int] | _Failed) -> None:
    if len(_checked) >= CHECK_CACHE:
        _checked.pop(next(iter(_checked)))
    _checked[key] = value


def _verify(opener: Callable[[], Any], what: str) -> tuple[int, int, str] | _Failed:
    """Open and decode the whole image: (width, height, format), or why it cannot be used."""

    with _VERIFY_LOCK:  # the Data page's inspect thread and the Playground check images at the same time
        return _decode(opener, what)


def _decode(opener: Callable[[], Any], what: str) -> tuple[int, int, str] | _Failed:
    from PIL import Image, ImageFile

    truncated = ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        ImageFile.LOAD_TRUNCATED_IMAGES = False  # a cut file is an error, never grey pixels
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with opener() as fh, Image.open(fh, formats=FORMATS) as img:
                width, height = img.size
                if width * height > MAX_PIXELS:
                    return _bomb(what, f"{width}x{height}")
                img.load()
                return width, height, str(img.format or "")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        size = re.search(r"\((\d+) pixels\)", str(e))
        return _bomb(what, f"{int(size.group(1)):,} pixels" if size else "too many pixels")
    except Image.UnidentifiedImageError:
        return _Failed(f"{what} is not a PNG, JPEG, WebP, GIF or BMP image (the formats the studio reads)",
                       "convert it to PNG or JPEG, or remove this row", "image_invalid")
    except MemoryError:
        return _bomb(what, "more pixels than fit in memory")
    except Exception as e:  # Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError, ...
        reason = str(e) or type(e).__name__
        if "truncated" in reason.lower() or isinstance(e, EOFError):
            return _Failed(f"{what} is truncated (it ends before the image does: {reason})",
                           "copy or export the image again in full, or remove this row", "image_truncated")
        return _Failed(f"{what} is damaged ({reason})", "export the image again, or remove this row",
                       "image_invalid")
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated


def _bomb(what: str, size: str) -> _Failed:
    return _Failed(f"{what} is too large ({size}; at most {MAX_PIXELS:,} pixels are read, checked before "
                   "decoding so a small file cannot fill the memory)",
                   "scale the image down (8192x8192 at most), or remove this row", "image_too_large")


# ------------------------------------------------------------------ a row's images

def is_image_part(part: dict, kind: str) -> bool:
    """A content part that is an image: typed image/image_url/input_image, or untyped with an image key."""
    return kind in IMAGE_PARTS or (kind == "unknown" and ("image" in part or "image_url" in part))


def part_ref(part: dict) -> Any:
    """What an image content part names (a path, URL, bytes or a struct), or None for a part that only marks
    the image's place (TRL style: the images are in the row's image column)."""
    if part.get("bytes") not in (None, b"", ""):
        return part
    return next((part[k] for k in PART_KEYS if part.get(k) not in (None, "")), None)


def count_markers(messages: list[dict]) -> int:
    return sum(m["content"].count(IMAGE) for m in messages if isinstance(m.get("content"), str))


def column_images(value: Any, field: str) -> list:
    """The images an image column holds: one value, a list, or a JSON list written as text (CSV cells)."""
    if value is None or value == "" or value == [] or value == {}:
        return []
    if isinstance(value, str) and value.lstrip().startswith("["):
        import json

        try:
            value = json.loads(value)
        except ValueError:
            raise RowProblem(f"'{field}' holds text that is not valid JSON", "write the list of image paths as "
                             "[\"a.png\", \"b.png\"], or give one path", field, code="image_value") from None
    if isinstance(value, (list, tuple)):
        return [v for v in value if v is not None]
    return [value]


def attach(example: dict, part_refs: list, column: Any, column_name: str | None, base: Path | None) -> bool:
    """Give ``example`` its ``images`` and ``image_sizes``, checking every image; True when a lone image's
    marker was placed at the start of the first user turn (the file had none).

    ``part_refs``: ``(what the part names, its field)`` for each image content part, in order (None for a
    part that only marks a place, TRL style, whose image comes from the column); ``column``: the row's image
    column value."""
    msgs = example["messages"]
    markers = count_markers(msgs)
    for side in example.get("rejected") or ():
        if count_markers(side):
            raise RowProblem("a rejected answer holds an image", "images may stand in the prompt and the chosen "
                             "conversation only; remove the image from the rejected answer", "rejected",
                             code="image_count")
    named = [(ref, where) for ref, where in part_refs if ref is not None]
    from_column = column_images(column, column_name) if column_name else []
    placed = False
    if named:
        if from_column:
            raise RowProblem(f"the turns name {len(named)} image(s) and column '{column_name}' lists "
                             f"{len(from_column)} more", "give each image once: in the content parts or in the "
                             "column", column_name, code="image_count")
        if markers != len(named):
            raise RowProblem(f"the turns hold {markers} <image> place(s) but name {len(named)} image(s)",
                             "give every image part its image, and write no literal <image> text beside image "
                             "parts", "content", code="image_count")
        refs = named
    else:
        refs = [(ref, column_name if len(from_column) == 1 else f"{column_name}[{i}]")
                for i, ref in enumerate(from_column)]
        if markers == 0 and len(refs) == 1:
            user = next((m for m in msgs if m["role"] == "user"), None)
            if user is None:
                raise RowProblem("the row has an image but no user turn to put it in",
                                 "add a user turn, or remove the image", column_name, code="image_count")
            user["content"] = IMAGE + ("\n" + user["content"] if user["content"] else "")
            placed = True
        elif markers != len(refs):
            source = f"column '{column_name}' lists" if column_name else "the row gives"
            raise RowProblem(f"the text holds {markers} <image> marker(s) but {source} {len(refs)} image(s)",
                             "make the counts match: one <image> in the text where each image belongs, and one "
                             "image per marker in the list", column_name or "content", code="image_count")
    if not refs:
        return False
    elsewhere = sorted({m["role"] for m in msgs if m["role"] != "user" and IMAGE in str(m.get("content") or "")})
    if elsewhere:  # chat templates render a system turn's text only, and the answer is what the model writes
        raise RowProblem(f"an image stands in a {' and a '.join(elsewhere)} turn; images are read in user turns only",
                         "move the image into the user turn it belongs to", "content", code="image_count")
    images, sizes = [], []
    for ref, where in refs:
        path = resolve(ref, base, where)
        width, height = check(path, where)
        images.append(path)
        sizes.append([width, height])
    example["images"], example["image_sizes"] = images, sizes
    return placed


def per_message(messages: list[dict], images: list[str]) -> list[dict]:
    """Copies of ``messages`` each carrying the images of its own ``<image>`` markers (``images`` in order of
    appearance), as a chat turn does (``{"role", "content", "images"}``); turns without markers are kept as
    they are."""
    out, at = [], 0
    for m in messages:
        n = m["content"].count(IMAGE) if isinstance(m.get("content"), str) else 0
        out.append({**m, "images": list(images[at:at + n])} if n else m)
        at += n
    return out


def strip_images(example: dict) -> dict:
    """A copy of ``example`` for a text-only model: no ``images``/``image_sizes``, no ``<image>`` markers.

    Turns are copied, the original is left as it is. A turn that held only images is left empty; the
    caller decides whether such an example can be trained."""
    if "images" not in example and not any(IMAGE in (m.get("content") or "") for m in example.get("messages", ())):
        return example
    out = {k: v for k, v in example.items() if k not in ("images", "image_sizes")}
    if "messages" in out:
        out["messages"] = [_unmarked(m) for m in out["messages"]]
    if out.get("rejected"):
        out["rejected"] = [[_unmarked(m) for m in side] for side in out["rejected"]]
    return out


def _unmarked(message: dict) -> dict:
    content = message.get("content")
    if not isinstance(content, str) or IMAGE not in content:
        return message
    return {**message, "content": _MARKER.sub("", content).strip()}


# ------------------------------------------------------------------ what the report says

@dataclass
class ImageTally:
    """Images of the usable rows: how many, where a lone image's marker was placed, sizes (for the planner)."""

    images: int = 0
    rows: int = 0
    placed: int = 0  # rows whose single image had no marker: it went to the start of the first user turn
    widths: Counter = field(default_factory=Counter)
    heights: Counter = field(default_factory=Counter)

    def add(self, sizes: list) -> None:
        self.images += len(sizes)
        self.rows += 1
        for w, h in sizes:
            self.widths[w] += 1
            self.heights[h] += 1

    def merge(self, other: ImageTally) -> None:
        self.images += other.images
        self.rows += other.rows
        self.placed += other.placed
        self.widths.update(other.widths)
        self.heights.update(other.heights)

    def summary(self) -> dict | None:
        """``count``, ``min``/``median``/``max`` width and height; None without images."""
        if not self.images:
            return None
        return {"count": self.images, "rows": self.rows,
                "min_width": min(self.widths), "median_width": _median(self.widths), "max_width": max(self.widths),
                "min_height": min(self.heights), "median_height": _median(self.heights),
                "max_height": max(self.heights)}

    def notes(self) -> list[str]:
        out = []
        if self.images:
            s = self.summary() or {}
            out.append(f"{self.images} image(s) in {self.rows} row(s), checked (largest {s['max_width']}x"
                       f"{s['max_height']}, median {s['median_width']}x{s['median_height']}); each stands at its "
                       "<image> marker in the text")
        if self.placed:
            out.append(f"{self.placed} row(s) have one image and no <image> marker: it is placed at the start of "
                       "the first user turn, as LLaVA-style trainers do")
        return out


def _median(counts: Counter) -> int:
    """The lower median of the values counted (exact, memory bounded by the distinct sizes)."""
    total = sum(counts.values())
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen * 2 >= total:
            return int(value)
    return 0
