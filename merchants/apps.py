from django.apps import AppConfig


class MerchantsConfig(AppConfig):
    name = "merchants"
    verbose_name = "Merchants"

    def ready(self) -> None:
        from PIL import Image

        from merchants.validators import LOGO_MAX_PIXELS

        # Every image this process decodes (logos in pages and PDFs) is one we accepted under
        # this cap; anything bigger is refused by Pillow rather than decoded.
        Image.MAX_IMAGE_PIXELS = LOGO_MAX_PIXELS
