import io
import warnings
from pathlib import PurePath

from django import forms
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, UnidentifiedImageError

LOGO_MAX_BYTES = 1024 * 1024
LOGO_FORMATS = {"PNG", "JPEG", "WEBP"}
# A logo is drawn a few centimetres wide; 16.8 megapixels is far more than any needs, and the
# cap keeps a tiny, highly compressed file from expanding to gigabytes when decoded.
LOGO_MAX_SIDE = 4096
LOGO_MAX_PIXELS = LOGO_MAX_SIDE * LOGO_MAX_SIDE
TOO_MANY_PIXELS = (
    f"The logo has more than {LOGO_MAX_PIXELS / 1e6:.1f} megapixels; "
    f"use at most {LOGO_MAX_SIDE} x {LOGO_MAX_SIDE} pixels."
)
NOT_AN_IMAGE = "The logo is not a PNG, JPEG or WebP image."

# The largest id a row can have: a signed 64-bit integer (PostgreSQL's bigint, SQLite's INTEGER).
MAX_ID = 2**63 - 1


def without_nul(text: str) -> str:
    """Free text as it may be stored: without NUL characters, which PostgreSQL refuses in any
    text column (a 500 at the write). Django's form fields refuse them; this is for text a
    view reads straight from the request (a search, a reason, a reference, a note)."""
    return text.replace("\x00", "")


def one_line(text: str) -> str:
    """Text for one line (a name, an email subject): its whitespace runs, line breaks
    included, as single spaces. A line break in a business name made every email whose
    subject names it fail ("Header values may not contain linefeed")."""
    return " ".join(without_nul(text).split())


def parse_id(raw: str | None, *, limit: int = MAX_ID) -> int | None:
    """A positive whole number as a person or a client typed it (a query parameter, a form
    field), or None for anything else.

    ASCII digits only: `str.isdigit()` also takes '²' and '①', which `int()` then refuses,
    and `int()` alone takes ' 7', '+7' and '7_0'. At most `limit`: an id past 64 bits would
    reach SQLite as an OverflowError rather than find nothing."""
    if not raw or len(raw) > 19 or not (raw.isascii() and raw.isdigit()):
        return None
    number = int(raw)
    return number if 0 < number <= limit else None


def validate_logo(file: File | bool | None) -> None:
    """Accept only real raster images of a sane size.

    SVG is refused on purpose: it can carry script, and logos end up in pages, emails and PDFs.
    A cleared logo (the form's "Clear" box gives False) or none at all has nothing to check.
    """
    if not file:
        return
    assert isinstance(file, File)
    if file.size is not None and file.size > LOGO_MAX_BYTES:
        raise ValidationError("The logo is larger than 1 MB.")
    position = file.tell() if hasattr(file, "tell") else 0
    try:
        file.seek(0)
        with _open_capped(io.BytesIO(file.read())) as image:
            image_format = image.format
            try:
                image.verify()
            except (OSError, SyntaxError, ValueError):
                raise ValidationError(NOT_AN_IMAGE) from None
    finally:
        file.seek(position)
    if image_format not in LOGO_FORMATS:
        raise ValidationError("The logo must be a PNG, JPEG or WebP image.")


def _open_capped(file: File | io.BytesIO) -> Image.Image:
    """Open an image (headers only) and refuse it by its pixel count before anything decodes
    its pixels. Pillow's own bomb guard only warns below twice its limit, so the count is
    checked here, and the warning is turned into the same refusal."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(file)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ValidationError(TOO_MANY_PIXELS) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise ValidationError(NOT_AN_IMAGE) from None
    width, height = image.size
    if width * height > LOGO_MAX_PIXELS or max(width, height) > LOGO_MAX_SIDE:
        image.close()
        raise ValidationError(TOO_MANY_PIXELS)
    return image


def logo_reencode(upload: File) -> SimpleUploadedFile:
    """The upload's pixels, and nothing else, as a fresh PNG.

    Re-encoding drops EXIF (camera, GPS), ICC profiles, comments and anything appended to the
    file, and means no decoder ever sees the uploaded bytes again (PDF renders, emails).
    """
    if upload.size is not None and upload.size > LOGO_MAX_BYTES:
        raise ValidationError("The logo is larger than 1 MB.")
    upload.seek(0)
    with _open_capped(io.BytesIO(upload.read())) as image:
        if image.format not in LOGO_FORMATS:
            raise ValidationError("The logo must be a PNG, JPEG or WebP image.")
        try:
            image.load()
            pixels = image.convert("RGBA" if _has_alpha(image) else "RGB")
        except (OSError, SyntaxError, ValueError):
            raise ValidationError(NOT_AN_IMAGE) from None
    buffer = io.BytesIO()
    pixels.save(buffer, format="PNG", optimize=True)
    stem = PurePath(upload.name or "logo").stem or "logo"
    return SimpleUploadedFile(f"{stem}.png", buffer.getvalue(), content_type="image/png")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


class LogoField(forms.ImageField):
    """An image upload checked by pixel count first, then re-encoded (see `logo_reencode`)."""

    def to_python(self, data):  # type: ignore[no-untyped-def]
        if data in self.empty_values:
            return None
        if getattr(data, "size", None) and data.size > LOGO_MAX_BYTES:
            raise ValidationError("The logo is larger than 1 MB.")
        if hasattr(data, "read"):
            # Before Django's ImageField decodes anything to verify it. A copy, because
            # closing a Pillow image may close the file it was opened from.
            data.seek(0)
            _open_capped(io.BytesIO(data.read())).close()
            data.seek(0)
        checked = super().to_python(data)
        if checked is None:
            return None
        return logo_reencode(checked)
