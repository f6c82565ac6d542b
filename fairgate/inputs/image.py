"""Image inputs: an audit-set column of file paths or image bytes, turned into a model's tensor.

The pipeline is fixed so a report can say exactly what the model saw: Pillow decode → convert
to the channel mode (RGB, BGR or L; alpha dropped, the first frame of an animation) → resize to
(W, H) with the declared resample (no crop, no EXIF rotation) → uint8 → float32
``(x * scale - mean) / std`` per channel, in the order of ``channels`` → NCHW or NHWC. It is
the torchvision-style preprocessing most image models are exported with, minus the crop: a
crop would be a guess about what the model was trained on.

Files are read in row order, then decoded; large images (:data:`POOL_BYTES` encoded, on
average) in a small thread pool so the models are not starved: Pillow's C decoders and resize
release the GIL. Small ones are mostly Python, where threads only contend for the GIL
(benchmarks/bench_images.py: 10k 32x32 PNGs decode in 2.4 s on one thread, 3.9 s on four).
Rows come out in input order whatever the pool does.

Image data is untrusted input. A path must stay inside the audit set's folder (no absolute
path, no ``..``, no symlink out) and be a regular file of at most :data:`MAX_FILE_BYTES`; only
the formats in :data:`FORMATS` are opened (no EPS, whose plugin runs Ghostscript); Pillow's
decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is kept and an image over it is
refused. Every refusal is a :class:`DataError` naming the column and the row.
"""

from __future__ import annotations

import io
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np
import pyarrow as pa

from fairgate.errors import DataError, PolicyError, UsageError
from fairgate.inputs.files import read_regular_file
from fairgate.report import safe

INSTALL = "pip install 'fairgate[image]'"
MAX_FILE_BYTES = 64 * 1024 * 1024  # one image file; an audit image this large is a mistake
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")  # Pillow format names opened
CHANNELS = {"RGB": 3, "BGR": 3, "L": 1}
WORKERS = 4  # decoding threads for large images
POOL_BYTES = 64 * 1024  # mean encoded size from which decoding goes to the pool
LAYOUTS = ("NCHW", "NHWC")
RESAMPLES = ("bilinear", "bicubic", "nearest", "lanczos")
_SHOWN_CHARS = 200  # of a path in an error message
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:")
_SEPARATORS = re.compile(r"[/\\]")


@dataclass(frozen=True)
class ImageSettings:
    """One model's image input, as the policy declares it (``model.inputs.image``).

    ``mean`` and ``std`` are per channel, in the order of ``channels`` (B, G, R for BGR).
    Checked on construction: a setting that cannot describe an image input is a PolicyError.
    """

    column: str
    size: tuple[int, int]  # (H, W)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channels: Literal["RGB", "BGR", "L"] = "RGB"
    scale: float = 1 / 255
    resample: Literal["bilinear", "bicubic", "nearest", "lanczos"] = "bilinear"
    input: str | None = None

    def __post_init__(self) -> None:
        where = f"image input of column {_shown(self.column)}"
        if self.channels not in CHANNELS:
            raise PolicyError(f"{where}: channels must be one of RGB, BGR, L, not {self.channels!r}")
        if self.layout not in LAYOUTS:
            raise PolicyError(f"{where}: layout must be NCHW or NHWC, not {self.layout!r}")
        if self.resample not in RESAMPLES:
            raise PolicyError(f"{where}: resample must be one of {', '.join(RESAMPLES)}, "
                              f"not {self.resample!r}")
        if (len(self.size) != 2
                or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in self.size)):
            raise PolicyError(f"{where}: size must be [H, W], two positive integers, not {list(self.size)}")
        c = CHANNELS[self.channels]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != c:
                raise PolicyError(f"{where}: {name} has {len(values)} value(s); channels "
                                  f"{self.channels} has {c}")
            if not all(math.isfinite(v) for v in values):
                raise PolicyError(f"{where}: {name} must be finite numbers, not {list(values)}")
        if any(v == 0 for v in self.std):
            raise PolicyError(f"{where}: std must not be 0 (it divides), not {list(self.std)}")
        if not math.isfinite(self.scale) or self.scale == 0:
            raise PolicyError(f"{where}: scale must be a finite non-zero number, not {self.scale!r}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image's shape in the model's layout: (C, H, W) or (H, W, C)."""
        h, w = self.size
        c = CHANNELS[self.channels]
        return (c, h, w) if self.layout == "NCHW" else (h, w, c)


def require_pillow() -> ModuleType:
    """``PIL.Image``, or a UsageError (exit 2) with the command that installs it."""
    try:
        from PIL import Image
    except ImportError:
        raise UsageError(f"image inputs (model.inputs.image) need Pillow, which is not installed "
                         f"here: {INSTALL}") from None
    return Image


def decode_images(values: pa.Array | pa.ChunkedArray, settings: ImageSettings, *,
                  root: Path | None, offset: int, workers: int | None = None) -> np.ndarray:
    """The batch as float32 [N, C, H, W] (NCHW) or [N, H, W, C] (NHWC), rows in input order.

    ``values`` holds paths relative to ``root`` (string) or encoded images (binary); ``offset``
    is the row number of ``values[0]`` in the audit set, for error messages. Raises DataError
    naming ``settings.column`` and the row (offset + i) for a null, a path outside ``root``,
    a path column with ``root`` None, a missing file or data that does not decode; when several
    rows are bad the first is named, whatever ``workers`` is. ``workers``: decoding threads;
    None decodes on :data:`WORKERS` threads when the images average :data:`POOL_BYTES` or more
    encoded, else on this one.
    """
    image = require_pillow()
    column = _shown(settings.column)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    typ = values.type
    is_path = pa.types.is_string(typ) or pa.types.is_large_string(typ)
    is_bytes = pa.types.is_binary(typ) or pa.types.is_large_binary(typ) or pa.types.is_fixed_size_binary(typ)
    if not (is_path or is_bytes):
        raise DataError(f"image column {column} has type {typ}; it must hold file paths (string) "
                        "or image bytes (binary)")
    if values.null_count:
        first = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"image column {column}: row {offset + first} is null")
    if is_path and root is None:
        raise DataError(f"image column {column} holds file paths, but this audit set has no "
                        "folder to resolve them in (it is in memory): give the images as bytes "
                        "(a binary column) or read the audit set from a file")
    rows = values.to_pylist()
    blobs, read_error = rows, None
    if root is not None:  # files in row order; the first that cannot be read stops here
        blobs, read_error = _read_files(os.path.realpath(root), rows, column, offset)
    h, w = settings.size
    pixels = np.empty((len(rows), h, w, CHANNELS[settings.channels]), dtype=np.uint8)

    def decode_span(start: int, stop: int) -> DataError | None:
        """Rows [start, stop) into ``pixels``; the first bad row's error, returned."""
        for i in range(start, stop):
            try:
                pixels[i] = _decode(image, blobs[i], settings)
            except _Undecodable as e:  # the row's name is made only for the error
                where = f"image column {column}: row {offset + i}"
                if root is not None:
                    where = f"{where}: {_shown(rows[i])}"
                return DataError(f"{where}: {e}")
        return None

    n = len(blobs)  # the rows before the first unreadable file
    if workers is None:
        workers = WORKERS if n and sum(map(len, blobs)) >= POOL_BYTES * n else 1
    k = max(1, min(workers, n))
    bounds = [(n * j // k, n * (j + 1) // k) for j in range(k)]
    if k == 1:
        errors = [decode_span(0, n)]
    else:
        with ThreadPoolExecutor(max_workers=k, thread_name_prefix="fairgate-image") as pool:
            errors = list(pool.map(lambda span: decode_span(*span), bounds))
    first_error = next((e for e in errors if e is not None), read_error)  # spans in row order
    if first_error is not None:
        raise first_error
    return _normalise(pixels, settings)


def _shown(text: str) -> str:
    """Untrusted text quoted for an error message: escaped, clipped, no CI command."""
    return safe.terminal(repr(safe.clip(text, _SHOWN_CHARS)), None)


def _read_files(base: str, rows: list[str], column: str,
                offset: int) -> tuple[list[bytes], DataError | None]:
    """The bytes of each file up to the first that cannot be read, and that one's error."""
    out: list[bytes] = []
    folders: dict[str, str] = {}
    for i, raw in enumerate(rows):
        try:
            out.append(_read_inside(base, raw, f"image column {column}: row {offset + i}: "
                                    f"{_shown(raw)}", folders))
        except DataError as e:
            return out, e
    return out, None


def _inside(base: str, target: str, where: str) -> str:
    if target != base and not target.startswith(base.rstrip(os.sep) + os.sep):
        raise DataError(f"{where}: the path leaves the audit set's folder (a symlink out)")
    return target


def _read_inside(base: str, raw: str, where: str, folders: dict[str, str]) -> bytes:
    """The bytes of ``raw`` (relative to the folder ``base``, itself resolved), refusing any
    way out of ``base``. Strings, not Path objects: this runs once an image. ``folders``
    caches each folder's resolved path (most audit sets keep their images in a few), so a
    file costs one lstat of its own beyond the read."""
    if not raw:
        raise DataError(f"{where}: an empty path")
    if "\x00" in raw:
        raise DataError(f"{where}: a path with a NUL character")
    if raw.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(raw):  # POSIX, UNC or drive paths
        raise DataError(f"{where}: an absolute path; image paths are relative to the audit "
                        "set's folder")
    if ".." in _SEPARATORS.split(raw):
        raise DataError(f"{where}: the path leaves the audit set's folder ('..')")
    folder, name = os.path.split(raw)
    parent = folders.get(folder)
    if parent is None:  # every symlink on the way followed
        parent = folders[folder] = _inside(base, os.path.realpath(os.path.join(base, folder)),
                                           where)
    target = os.path.join(parent, name)
    if os.path.islink(target):
        target = _inside(base, os.path.realpath(target), where)
    # the resolved path is opened, so a link swapped after the check cannot lead out
    return read_regular_file(Path(target), MAX_FILE_BYTES, DataError, where=where,
                             what="image file", expected="an image file")


class _Undecodable(Exception):
    """Why one image does not decode (decode_span adds its row)."""


def _decode(image: ModuleType, data: bytes, settings: ImageSettings) -> np.ndarray:
    """One image as uint8 [H, W, C]: decode, convert, resize."""
    h, w = settings.size
    try:
        with image.open(io.BytesIO(data), formats=FORMATS) as img:
            if image.MAX_IMAGE_PIXELS is not None and img.width * img.height > image.MAX_IMAGE_PIXELS:
                raise _Undecodable(f"over Pillow's decompression-bomb limit of "
                                   f"{image.MAX_IMAGE_PIXELS:,} pixels ({img.width} x {img.height})")
            mode = "L" if settings.channels == "L" else "RGB"
            resample = getattr(image.Resampling, settings.resample.upper())
            out = img.convert(mode).resize((w, h), resample=resample)
    except _Undecodable:
        raise
    except (image.DecompressionBombError, image.DecompressionBombWarning) as e:
        raise _Undecodable(f"over Pillow's decompression-bomb limit of "
                           f"{image.MAX_IMAGE_PIXELS:,} pixels ({e})") from None
    except image.UnidentifiedImageError:
        raise _Undecodable(f"not an image Pillow can open as one of {', '.join(FORMATS)}"
                           ) from None
    except Exception as e:  # a truncated or corrupt file fails in decode, as OSError or worse
        raise _Undecodable(f"the image does not decode: {safe.terminal(e, _SHOWN_CHARS)}") from None
    arr = np.asarray(out, dtype=np.uint8).reshape(h, w, -1)
    return arr[:, :, ::-1] if settings.channels == "BGR" else arr


def _normalise(pixels: np.ndarray, settings: ImageSettings) -> np.ndarray:
    """uint8 [N, H, W, C] → float32 ``(x * scale - mean) / std`` in the declared layout."""
    mean = np.asarray(settings.mean, dtype=np.float32)
    std = np.asarray(settings.std, dtype=np.float32)
    scale = np.float32(settings.scale)
    if settings.layout == "NCHW":
        pixels = pixels.transpose(0, 3, 1, 2)
        mean, std = mean.reshape(-1, 1, 1), std.reshape(-1, 1, 1)
    out = np.empty(pixels.shape, dtype=np.float32)  # C-contiguous in the target layout
    np.multiply(pixels, scale, out=out, dtype=np.float32)
    np.subtract(out, mean, out=out)
    np.divide(out, std, out=out)
    return out
