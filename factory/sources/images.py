"""Images: read an image's original bytes, prove they decode, and name them by their SHA-256."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlfactory.recipe import MAX_IMAGE_BYTES, Source
from vlfactory.sources.columns import Reject


@dataclass


class CheckedImage:
    image_id: str
    data: bytes
    width: int
    height: int
    format: str


def _check_image(data: bytes, full_decode: bool) -> tuple[int, int, str]:
    """Prove the bytes are one whole image; return its size and format.

    Every byte is checked and every image decoded: a PNG's chunks are verified
    against their CRCs through IEND (truncation or a flipped bit fails) and its
    pixel stream inflated to the last row its header promises (`_png_rows`), a
    JPEG's entropy-coded data is fully decoded at 1/8 scale, other formats are
    decoded in full. `full_decode` also unfilters every PNG pixel (about 50x
    slower on PNG).
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        width, height, fmt = im.size[0], im.size[1], im.format or "unknown"
        if full_decode or fmt not in ("PNG", "JPEG"):
            im.load()
        elif fmt == "PNG":
            im.verify()
        else:
            im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
            im.load()
    if fmt == "PNG":
        _png_rows(data)
    return width, height, fmt


# Adam7's seven passes: (dx, dy, x0, y0), every dx-th pixel of every dy-th row from (x0, y0)
ADAM7 = ((8, 8, 0, 0), (8, 8, 4, 0), (4, 8, 0, 4), (4, 4, 2, 0), (2, 4, 0, 2), (2, 2, 1, 0), (1, 2, 0, 1))


def _png_rows(data: bytes) -> None:
    """Raise unless the PNG's IDAT stream inflates to every row its header promises.

    A PNG cut and re-wrapped with valid CRCs and a clean zlib end passes PIL's verify(), and PIL's load()
    zero-fills some of those without a word: they reached sft, report, vlfactory.load and training, and broke
    there (issue 18 item 8). Inflating costs what decoding costs, without unfiltering; memory holds 1 MiB.
    """
    import struct
    import zlib

    pos, header, stream = 8, None, []
    while pos + 8 <= len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", data[pos + 8:pos + 21])
        elif kind == b"IDAT":
            stream.append(data[pos + 8:pos + 8 + n])
        elif kind == b"IEND":
            break
        pos += 12 + n
    width, height, depth, color, _, _, interlace = header
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color]

    def size(w: int, h: int) -> int:  # a filter byte, then the row's packed samples
        return h * (1 + (w * channels * depth + 7) // 8) if w > 0 and h > 0 else 0

    passes = ADAM7 if interlace else ((1, 1, 0, 0),)
    want = sum(size(-(-(width - x0) // dx), -(-(height - y0) // dy)) for dx, dy, x0, y0 in passes)
    inflate, got, rest = zlib.decompressobj(), 0, b"".join(stream)
    while rest and got < want:
        got += len(inflate.decompress(rest, 1 << 20))
        rest = inflate.unconsumed_tail
    if got < want:
        raise ValueError(f"the pixel data ends early: {got:,} of {want:,} bytes of rows")


def load_image(value: Any, root: Path, full_decode: bool = False, max_bytes: int = MAX_IMAGE_BYTES) -> CheckedImage:
    """Read an image's original bytes (at most `max_bytes`), prove they decode, and hash them."""
    from PIL import Image

    path = None
    if isinstance(value, dict):  # datasets' Image(decode=False): {"bytes": ..., "path": ...}
        data, path = value.get("bytes"), value.get("path")
        if data is None and path:
            value = path
        elif data is None:
            raise Reject("missing_image", "the image field is empty")
        else:
            value = data
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    elif isinstance(value, (str, os.PathLike)):
        path = os.path.join(root, os.path.expanduser(value))  # an absolute path stays as it is
        data = _read_image_file(path, max_bytes)
    elif isinstance(value, Image.Image):
        # Already decoded upstream (no original bytes): store a lossless PNG of it.
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        data = buf.getvalue()
    else:
        raise Reject("missing_image" if value is None else "bad_image",
                     "no image in this row" if value is None else f"unsupported image value {type(value).__name__}")
    if not data:
        raise Reject("bad_image", f"empty image file{f': {path}' if path else ''}")
    if len(data) > max_bytes:
        raise Reject("image_too_large", f"{len(data)} bytes, over max_image_bytes ({max_bytes})")
    try:
        width, height, fmt = _check_image(data, full_decode)
    except Exception as e:  # PIL raises many types for bad data
        where = f"{path}: " if path else ""
        raise Reject("bad_image", f"{where}not a readable image ({type(e).__name__}: {str(e)[:120]})")
    return CheckedImage(hashlib.sha256(data).hexdigest(), data, width, height, fmt)


def _read_image_file(path: str, max_bytes: int) -> bytes:
    """A regular file's bytes, refused unread when it is larger than `max_bytes`.

    Opened non-blocking and checked on the open descriptor, so a FIFO (which would block until a
    writer came) or a device (/dev/zero never ends) is rejected, not read, and a file swapped in
    after a check is still the file checked.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise Reject("missing_image", f"image file not found: {path}")
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        raise Reject("missing_image", f"cannot read image {path}: {getattr(e, 'strerror', None) or e}")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a file")
            raise Reject("bad_image", f"{path} is {kind}, not a regular file")
        if st.st_size > max_bytes:
            raise Reject("image_too_large", f"{path}: {st.st_size} bytes, over max_image_bytes ({max_bytes})")
        chunks, size = [], 0
        # Ask for the size fstat gave (plus one, to see the end); a file that grows stops at the cap.
        while chunk := os.read(fd, min(st.st_size + 1, max_bytes + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:
                raise Reject("image_too_large", f"{path}: over max_image_bytes ({max_bytes})")
    except OSError as e:
        raise Reject("missing_image", f"cannot read image {path}: {e.strerror or e}")
    finally:
        os.close(fd)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def images_root(src: Source) -> Path:
    if src.images_root:
        return Path(src.images_root)
    if src.path and os.path.exists(src.path):
        p = Path(src.path)
        return p if p.is_dir() else p.parent
    return Path.cwd()
