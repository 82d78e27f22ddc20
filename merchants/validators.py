from django.core.exceptions import ValidationError
from django.core.files import File

LOGO_MAX_BYTES = 1024 * 1024
LOGO_FORMATS = {"PNG", "JPEG", "WEBP"}


def validate_logo(file: File) -> None:
    """Accept only real raster images of a sane size.

    SVG is refused on purpose: it can carry script, and logos end up in pages, emails and PDFs.
    """
    if file.size is not None and file.size > LOGO_MAX_BYTES:
        raise ValidationError("The logo is larger than 1 MB.")
    from PIL import Image, UnidentifiedImageError

    position = file.tell() if hasattr(file, "tell") else 0
    try:
        file.seek(0)
        with Image.open(file) as image:
            image_format = image.format
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ValidationError("The logo is not a PNG, JPEG or WebP image.") from None
    finally:
        file.seek(position)
    if image_format not in LOGO_FORMATS:
        raise ValidationError("The logo must be a PNG, JPEG or WebP image.")
