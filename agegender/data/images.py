"""The file check every image goes through before TensorFlow sees it: :func:`check_images`.

It skips, with the file and the reason, what it can see without decoding: a missing, unreadable
or empty file, an HTML page or any non-image signature, a truncated JPEG (no end-of-image
marker) or PNG (no ``IEND`` chunk), a header that does not parse, and an image over
:data:`MAX_PIXELS` (a decompression bomb: decoding it would need gigabytes). The training
pipeline (:mod:`agegender.data.pipeline`), the audit, the TFDS builders and ``predict`` use it;
this module imports nothing else of the package, so none of them depends on another for it.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np

MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png", b"GIF8": "gif", b"BM": "bmp"}
MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb limit; an RGB decode of this size takes 268 MB


@dataclasses.dataclass
class CheckedFiles:
    ok: np.ndarray
    skipped: list[dict]


def check_images(paths, *, workers: int | None = None) -> CheckedFiles:
    """Cheap structural check of every file, done before TensorFlow sees it.

    Reads the first bytes (a known image signature), for JPEG and PNG the last bytes (an
    end-of-image marker or ``IEND`` chunk: a truncated download has none), and the image size
    from the header (JPEG frame header, PNG ``IHDR`` and GIF screen descriptor parsed here,
    other formats by Pillow). Returns the mask of usable files and ``{file, reason}`` for each
    skipped one. ``workers`` > 1 checks in threads (worth it on network storage; on a local
    disk the files are in the page cache and one thread is fastest).
    """
    paths = [str(p) for p in paths]
    if workers and workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            reasons = list(pool.map(_image_problem, paths, chunksize=64))
    else:
        reasons = [_image_problem(p) for p in paths]
    ok = np.array([r is None for r in reasons], dtype=bool)
    return CheckedFiles(ok, [{"file": p, "reason": r} for p, r in zip(paths, reasons) if r is not None])


HEAD_BYTES = 65_536  # a JPEG's frame header follows its APP segments, which fit here in all but odd files


def _image_problem(path: str) -> str | None:
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return "empty file (0 bytes)"
            head = handle.read(HEAD_BYTES)
            kind = next((k for magic, k in MAGIC.items() if head.startswith(magic)), None)
            if kind is None and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                kind = "webp"
            if kind is None:
                snippet = head[:64].lstrip()[:15].lower()
                return "an HTML page, not an image" if snippet.startswith((b"<!doctype", b"<html")) else \
                    "not a JPEG/PNG/GIF/BMP/WebP image (unknown file signature)"
            if kind in ("jpeg", "png"):
                if size <= len(head):
                    tail = head[-4096:]
                else:
                    handle.seek(max(0, size - 4096))
                    tail = handle.read()
                if kind == "jpeg" and b"\xff\xd9" not in tail:
                    return "truncated JPEG (no end-of-image marker)"
                if kind == "png" and b"IEND" not in tail[-64:]:
                    return "truncated PNG (no IEND chunk)"
            dims = _header_size(kind, head)
            if dims is None:
                handle.seek(0)
                return _header_problem(handle)
            return _size_problem(*dims)
    except IsADirectoryError:
        return "a folder, not an image file"
    except FileNotFoundError:
        return "file not found"
    except PermissionError:
        return "permission denied"
    except OSError as err:
        return f"unreadable ({err.strerror or err})"


JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0-SOF15 less DHT, JPG, DAC


def _header_size(kind: str, head: bytes) -> tuple[int, int] | str | None:
    """(width, height) read from the header bytes, a problem text, or None to let Pillow judge."""
    if kind == "png" and len(head) >= 24 and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if kind == "gif" and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    if kind != "jpeg":
        return None
    i = 2
    while i + 4 <= len(head):
        if head[i] != 0xFF:
            return None  # not at a marker: an unusual layout, Pillow decides
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        if marker in (0xD9, 0xDA):
            return "image header does not parse (no JPEG frame header before the image data)"
        length = int.from_bytes(head[i + 2:i + 4], "big")
        if marker in JPEG_FRAME_MARKERS:
            if i + 9 > len(head):
                return None
            return int.from_bytes(head[i + 7:i + 9], "big"), int.from_bytes(head[i + 5:i + 7], "big")
        if length < 2:
            return "image header does not parse (a JPEG segment of impossible length)"
        i += 2 + length
    return None


def _size_problem(width: int, height: int) -> str | None:
    if width < 1 or height < 1:
        return f"image has no pixels ({width}x{height})"
    if width * height > MAX_PIXELS:
        return (f"image too large to decode safely ({width}x{height} = {width * height:,} pixels, limit "
                f"{MAX_PIXELS:,}): a decompression bomb or a broken header")
    return None


def _header_problem(handle) -> str | None:
    """Parse the image header with Pillow (no pixel decoding): dimensions within :data:`MAX_PIXELS`."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: judged below
            with Image.open(handle) as image:
                width, height = image.size
    except Image.DecompressionBombError as err:
        import re

        pixels = re.search(r"\((\d+) pixels\)", str(err))
        count = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        return (f"image too large to decode safely ({count}, limit {MAX_PIXELS:,}): a decompression bomb or a "
                "broken header")
    except Exception as err:  # noqa: BLE001 - any parser failure means TensorFlow cannot use the file either
        return f"image header does not parse ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    return _size_problem(width, height)
