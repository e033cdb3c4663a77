"""Profile photos: decode an upload, keep only its pixels, re-encode small.

A JPEG, PNG or WebP body is decoded by Pillow and drawn into a brand-new image, so
nothing of the original file survives but pixels: no EXIF (GPS, camera, time), XMP,
ICC profile, comments or text chunks. The result is a JPEG of at most 512x512.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PHOTO_BYTES = 5 * 1024 * 1024
MAX_SIDE = 512
MAX_PIXELS = 40_000_000
"""Largest decoded image accepted (width x height): above it an upload is refused as a
decompression bomb before any pixel is decoded (40 MP: any phone camera's photo)."""
TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
JPEG_QUALITY = 85


class PhotoError(Exception):
    """An upload refused; `status` and `code` are the API's answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def clean_photo(data: bytes, content_type: str) -> tuple[bytes, int, int]:
    """(jpeg, width, height) from an upload declared as `content_type`.

    Raises:
        PhotoError: 415 for a type other than JPEG/PNG/WebP or a body that is not the
            declared type; 422 bad_image for a truncated or corrupt file; 422
            image_too_large for a decompression bomb.
    """
    fmt = TYPES.get(content_type)
    if fmt is None:
        raise PhotoError(415, "unsupported_media_type", "send image/jpeg, image/png or image/webp")
    if not data:
        raise PhotoError(422, "bad_image", "the body is empty")
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that: make it an error
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            opened = Image.open(io.BytesIO(data), formats=[fmt])
        except UnidentifiedImageError:
            raise _wrong_type(data, content_type) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _bomb() from None
        except (OSError, SyntaxError, ValueError, EOFError):
            raise PhotoError(422, "bad_image", "the image is corrupt") from None
        width, height = opened.size
        if width < 1 or height < 1 or width * height > MAX_PIXELS:
            raise _bomb()
        try:
            if fmt == "JPEG":
                # libjpeg decodes straight at 1/2..1/8 scale: less memory and time
                opened.draft("RGB", (MAX_SIDE * 2, MAX_SIDE * 2))
            opened.load()  # a truncated file fails here (LOAD_TRUNCATED_IMAGES is off)
            ImageOps.exif_transpose(opened, in_place=True)  # upright before the EXIF goes
            # scale down before anything else: a 40 MP PNG or WebP decodes to 120-160 MB
            # and each full-size copy (upright, flattened) would cost as much again
            if opened.mode in ("RGB", "RGBA", "L", "LA"):
                opened.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            image = _flatten(opened)
            image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            # pixels only: a new image carries none of the original's info/metadata
            clean = Image.frombytes("RGB", image.size, image.tobytes())
            out = io.BytesIO()
            clean.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _bomb() from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError):
            raise PhotoError(422, "bad_image", "the image is truncated or corrupt") from None
    return out.getvalue(), clean.width, clean.height


def _flatten(image: Image.Image) -> Image.Image:
    """RGB; transparency composited onto white."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale PNG: scale down to 8 bits before going to RGB
        return image.point(lambda v: v / 256).convert("L").convert("RGB")
    return image.convert("RGB")


def _bomb() -> PhotoError:
    return PhotoError(
        422, "image_too_large",
        f"the image decodes to more than {MAX_PIXELS:,} pixels (a decompression bomb?)",
    )


def _wrong_type(data: bytes, content_type: str) -> PhotoError:
    try:
        actual = Image.open(io.BytesIO(data)).format
    except Exception:  # noqa: BLE001 - anything unreadable is simply "not an image"
        actual = None
    if actual in TYPES.values():
        return PhotoError(415, "unsupported_media_type",
                          f"the body is {actual}, not {content_type}")
    if actual is not None:
        return PhotoError(415, "unsupported_media_type",
                          f"the body is {actual}: send a JPEG, PNG or WebP image")
    return PhotoError(422, "bad_image", f"the body is not a readable {content_type} image")
