"""Invoice and receipt PDFs. The only module that imports WeasyPrint.

A document is a Django template rendered to an HTML string, then laid out by WeasyPrint. The
HTML holds everything the page shows (the CSS is inlined, the QR code is inline SVG), so a hash
of it plus the bytes of the embedded assets names the PDF exactly: the cache is keyed by that
hash, and any change to the invoice, its customer or the merchant's branding renders anew.

Rendering never touches the network or the file system: the fetcher serves our own embedded
assets (the logo) and refuses every other URL. A deadline stops a render that runs too long.
"""

import ctypes
import gc
import hashlib
import io
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache as once
from functools import lru_cache
from importlib.metadata import version
from typing import Any

import segno
from django.conf import settings
from django.core.cache import cache
from django.template.loader import render_to_string
from django.utils import timezone

from invoices.document import document_of
from invoices.models import CreditNote, Invoice, InvoiceStatus, LineItem, PricingMode, Receipt
from merchants.models import Merchant, PaperSize
from merchants.money import PAYMENT_ASSETS, format_amount

logger = logging.getLogger(__name__)
# WeasyPrint reports every step of every render at INFO: noise in the web and worker logs.
logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)

# Part of every cache key: a new WeasyPrint or a change of this module's output renders anew.
RENDERER = f"weasyprint-{version('weasyprint')}/1"
ASSET_PREFIX = "stablebill-asset:"
LOGO_URL = ASSET_PREFIX + "logo"
QR_URL = ASSET_PREFIX + "qr"
LOGO_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}
HEX_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
DEFAULT_BRAND = "#4f46e5"

STAMPS = {
    InvoiceStatus.DRAFT: "Draft",
    InvoiceStatus.PAID: "Paid",
    InvoiceStatus.VOID: "Void",
    InvoiceStatus.CLOSED: "Closed",
    InvoiceStatus.FAILED: "Void",
}
# Statuses whose PDF still asks to be paid, with the link and QR code.
PAYABLE = frozenset({InvoiceStatus.DRAFT, InvoiceStatus.OPEN, InvoiceStatus.PROCESSING})


class PdfError(Exception):
    """The PDF could not be made."""


class RenderTimeout(PdfError):
    """The render ran past PDF_RENDER_TIMEOUT_SECONDS and was stopped."""


# How long the deadline waits for a delivered stop to take effect before delivering it again.
RETRY_SECONDS = 0.25


class _Deadline(BaseException):
    # A BaseException, so WeasyPrint's own `except Exception` handlers cannot swallow it.
    pass


@dataclass(frozen=True)
class Pdf:
    content: bytes
    filename: str
    # The content hash: the cache key, and the download's ETag.
    digest: str
    cached: bool = False


@dataclass(frozen=True)
class _Asset:
    body: bytes
    media_type: str


@dataclass
class _Document:
    html: str
    assets: dict[str, _Asset] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        sha = hashlib.sha256(RENDERER.encode())
        sha.update(_stylesheet_text().encode())
        sha.update(self.html.encode())
        for url in sorted(self.assets):
            sha.update(url.encode())
            sha.update(hashlib.sha256(self.assets[url].body).digest())
        return sha.hexdigest()


# Public entry points --------------------------------------------------------------------------


def invoice_pdf(
    invoice: Invoice, *, items: Sequence[LineItem] | None = None, use_cache: bool = True
) -> Pdf:
    """The invoice as the customer gets it. `items` lets the editor preview an unsaved draft."""
    document = _Document(html="")
    context = _invoice_context(invoice, items, document)
    document.html = render_to_string("invoices/pdf/invoice.html", context)
    return _pdf(document, filename=f"{_safe_filename(invoice.reference)}.pdf", use_cache=use_cache)


def receipt_pdf(receipt: Receipt, *, use_cache: bool = True) -> Pdf:
    invoice = receipt.invoice
    document = _Document(html="")
    context = _invoice_context(invoice, None, document)
    context.update(receipt=receipt, stamp="Paid", pay=None, total_label="Invoice total")
    document.html = render_to_string("invoices/pdf/receipt.html", context)
    filename = f"{_safe_filename(receipt.reference_display)}-receipt.pdf"
    return _pdf(document, filename=filename, use_cache=use_cache)


def credit_note_pdf(note: CreditNote, *, use_cache: bool = True) -> Pdf:
    invoice = note.invoice
    document = _Document(html="")
    context = _invoice_context(invoice, None, document)
    doc = document_of(invoice) if not note.document else _with_lines(note.document)
    context.update(
        note=note,
        seller=doc["seller"],
        buyer=doc["buyer"],
        stamp="",
        pay=None,
        credit_lines=[{**line, "amount": Decimal(line["amount"])} for line in note.lines],
    )
    document.html = render_to_string("invoices/pdf/credit_note.html", context)
    return _pdf(document, filename=f"{_safe_filename(note.reference)}.pdf", use_cache=use_cache)


def _with_lines(snapshot: dict[str, Any]) -> dict[str, Any]:
    # The credit note's own copy of the parties, read like an issued invoice's.
    probe = Invoice(document=snapshot)
    return document_of(probe)


def invoice_html(invoice: Invoice, *, items: Sequence[LineItem] | None = None) -> str:
    """The HTML the invoice PDF is made from (for tests and debugging)."""
    document = _Document(html="")
    return render_to_string("invoices/pdf/invoice.html", _invoice_context(invoice, items, document))


def render_html(html: str, *, assets: dict[str, tuple[bytes, str]] | None = None) -> bytes:
    """Lay out an HTML string with the same fetcher and deadline as every document."""
    document = _Document(
        html=html, assets={url: _Asset(*asset) for url, asset in (assets or {}).items()}
    )
    return _render(document)


@lru_cache(maxsize=256)
def qr_png(data: str) -> bytes:
    """A QR code as a PNG of one pixel per module, drawn without smoothing (`image-rendering:
    pixelated` in document.css), so it prints as sharp as vector art. An inline SVG looked
    the same but cost a sixth of a render: WeasyPrint parses its path of a thousand modules
    on every render, where a PNG of a few hundred bytes is embedded as it is. Opaque white
    (the page's colour) rather than transparent: WeasyPrint splits a transparent image into
    colour and alpha and encodes both again on every render."""
    buffer = io.BytesIO()
    segno.make(data, error="m").save(
        buffer, kind="png", scale=1, border=0, dark="#000", light="#fff"
    )
    return buffer.getvalue()


# Internals ------------------------------------------------------------------------------------


def _pdf(document: _Document, *, filename: str, use_cache: bool) -> Pdf:
    digest = document.digest
    key = f"pdf:{digest}"
    if use_cache:
        content = cache.get(key)
        if content is not None:
            return Pdf(content=content, filename=filename, digest=digest, cached=True)
    content = _render(document)
    cache.set(key, content, timeout=settings.PDF_CACHE_SECONDS)
    return Pdf(content=content, filename=filename, digest=digest)


@dataclass(frozen=True)
class _Engine:
    html: Any  # weasyprint.HTML
    fetcher: Any  # a weasyprint.urls.URLFetcher that serves embedded assets only
    stylesheet: Any  # document.css, parsed once per process rather than once per render
    fonts: threading.local  # .config: this thread's weasyprint FontConfiguration


@once
def _stylesheet_text() -> str:
    # The documents' shared CSS; each document adds only its page size and brand colour.
    return render_to_string("invoices/pdf/document.css")


@once
def _engine() -> _Engine:
    """WeasyPrint, imported on first use: the import alone takes seconds, which every process
    (migrations, beat, pages without PDFs) would otherwise pay at start-up."""
    from urllib.request import OpenerDirector

    import weasyprint
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class EmbeddedOnly(URLFetcher):
        """Serves the document's own assets; every other URL (http, file, data…) is refused."""

        def __init__(self, assets: dict[str, _Asset]) -> None:
            # No URL handlers at all (URLFetcher's own set up HTTP, FTP, files and an SSL
            # context, which alone costs a tenth of a render): nothing here opens a URL.
            OpenerDirector.__init__(self)
            self._fail_on_errors = False
            self._assets = assets

        def fetch(self, url: str, headers: Any = None) -> URLFetcherResponse:
            asset = self._assets.get(url)
            if asset is None:
                logger.warning("PDF render refused to fetch %.200s", url)
                raise ValueError("Only embedded assets may be loaded while rendering a PDF.")
            return URLFetcherResponse(url, asset.body, {"Content-Type": asset.media_type})

    stylesheet = weasyprint.CSS(string=_stylesheet_text(), url_fetcher=EmbeddedOnly({}))
    return _Engine(
        html=weasyprint.HTML, fetcher=EmbeddedOnly, stylesheet=stylesheet, fonts=threading.local()
    )


def _font_config(engine: _Engine) -> Any:
    """This thread's FontConfiguration, kept from render to render.

    A new one per render (WeasyPrint's default) loads Fontconfig's configuration and starts
    Pango with empty caches: every font is opened and measured again, which was a third of a
    one-page render. Our documents declare no @font-face, so nothing is ever added to it. One
    per thread, because Pango's font maps are not safe to share between threads.
    """
    config = getattr(engine.fonts, "config", None)
    if config is None:
        from weasyprint.text.fonts import FontConfiguration

        config = engine.fonts.config = FontConfiguration()
    return config


class _CollectorPause:
    """Python's cyclic garbage collector off while any render runs in this process.

    A render makes tens of thousands of linked objects (boxes point at their parents), so
    the collector keeps running during it, and each full pass walks every object of the
    process (all of Django, all of WeasyPrint), not just the render's: with 100 line items
    that was a third of the render, and it grew faster than the page count. The objects are
    freed by reference counting as usual; the cycles among them wait for the next pass after
    the render, which the deadline keeps short. Counted, so overlapping renders in threads
    turn it back on only when the last one ends, and only if it was on before.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._was_enabled = False

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._running == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if self._running == 0 and self._was_enabled:
                    gc.enable()


_collector_paused = _CollectorPause()


def _render(document: _Document) -> bytes:
    engine = _engine()  # outside the deadline: the first import is slow, not the render
    seconds = settings.PDF_RENDER_TIMEOUT_SECONDS
    try:
        with _collector_paused(), _deadline(seconds):
            html = engine.html(
                string=document.html, base_url=None, url_fetcher=engine.fetcher(document.assets)
            )
            pdf = html.write_pdf(stylesheets=[engine.stylesheet], font_config=_font_config(engine))
    except _Deadline:
        raise RenderTimeout(f"The PDF took longer than {seconds} s to render.") from None
    if pdf is None:  # only when writing to a target, which we never do
        raise PdfError("WeasyPrint returned no PDF.")
    return pdf


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise `_Deadline` in the calling thread if the block runs longer than `seconds`.

    WeasyPrint has no time limit and a thread cannot be killed. An asynchronous exception is
    delivered between two bytecodes of the rendering thread, which stops the (pure Python)
    layout wherever it is; unlike SIGALRM it also works outside the main thread, e.g. in the
    threaded development server. The lock makes sure it never lands after the block is done.
    """
    target = threading.get_ident()
    lock = threading.Lock()
    finished = threading.Event()

    def expire() -> None:
        # Delivered again while the block still runs: an asynchronous exception that lands in
        # a callback the interpreter shields (a gc callback, a C library's callback) is
        # swallowed there. The pause is far longer than the block needs to unwind once hit.
        while not finished.wait(0 if not delivered else RETRY_SECONDS):
            with lock:
                if finished.is_set():
                    return
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(target), ctypes.py_object(_Deadline)
                )
                delivered.append(True)

    delivered: list[bool] = []
    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            finished.set()
        timer.cancel()


def _invoice_context(
    invoice: Invoice, items: Sequence[LineItem] | None, document: _Document
) -> dict[str, Any]:
    merchant = invoice.merchant
    logo = _logo(merchant)
    if logo is not None:
        document.assets[LOGO_URL] = logo
    rows = list(invoice.items.all()) if items is None else list(items)
    status = InvoiceStatus(invoice.status)
    pay = None
    if status in PAYABLE:
        document.assets[QR_URL] = _Asset(body=qr_png(invoice.pay_url), media_type="image/png")
        pay = {
            "url": invoice.pay_url,
            "qr_url": QR_URL,
            "assets": assets_phrase(invoice.accepted_assets),
            "timed": invoice.pricing_mode != PricingMode.NO_TIMER,
            "timer_minutes": settings.INVOICE_TIMER_MINUTES,
        }
    issued = invoice.issued_at or invoice.created_at or timezone.now()
    doc = document_of(invoice)
    show_quantities = any(row.quantity != 1 for row in rows) or any(
        row.discount_amount for row in rows
    )
    show_taxes = any(row.tax_percent is not None for row in rows)
    return {
        "invoice": invoice,
        "merchant": merchant,
        "customer": invoice.customer,
        "seller": doc["seller"],
        "buyer": doc["buyer"],
        "methods": doc["payment_methods"],
        "taxes": invoice.taxes,
        "items": rows,
        "show_quantities": show_quantities,
        "show_taxes": show_taxes,
        "empty_span": 2 + 2 * show_quantities + show_taxes,
        "issue_date": timezone.localtime(issued).date(),
        "brand": merchant.brand_colour
        if HEX_COLOUR.fullmatch(merchant.brand_colour)
        else DEFAULT_BRAND,
        "logo_url": LOGO_URL if logo is not None else "",
        "page_size": "letter" if merchant.paper_size == PaperSize.LETTER else "A4",
        "stamp": STAMPS.get(status, ""),
        "pay": pay,
        "total": format_amount(invoice.total, invoice.currency),
    }


def _logo(merchant: Merchant) -> _Asset | None:
    if not merchant.logo:
        return None
    extension = (merchant.logo.name or "").rsplit(".", 1)[-1].lower()
    media_type = LOGO_TYPES.get(extension)
    if media_type is None:
        return None
    try:
        with merchant.logo.open("rb") as file:
            body = file.read()
    except OSError:
        # A logo lost from storage must not stop the invoice from going out.
        logger.warning("Logo %s of merchant %s is missing", merchant.logo.name, merchant.pk)
        return None
    return _print_logo(body, media_type)


# Twice the pixels of the largest box a logo is drawn in (.logo in document.css, 55 x 16 mm)
# at 300 dpi: more cannot show on paper.
LOGO_PRINT_PIXELS = (1300, 380)


# Keyed by the stored bytes: at most 16 MB of them (a logo is at most 1 MB, merchants.validators).
@lru_cache(maxsize=16)
def _print_logo(body: bytes, media_type: str) -> _Asset:
    """The logo as WeasyPrint embeds it cheapest: opaque on the page's white and no larger than
    print needs, worked out once per logo and process.

    WeasyPrint decodes and encodes a PNG again on every render, a transparent one twice (colour,
    then alpha), in time that grows with its pixels: 7 ms for 600 x 200, 21 ms for 1200 x 400,
    most of a render for the largest logo we accept. A JPEG is embedded as it is, so it stays.
    """
    if media_type == "image/jpeg":
        return _Asset(body=body, media_type=media_type)
    from PIL import Image

    try:
        with Image.open(io.BytesIO(body)) as image:
            image.load()
            pixels = image.convert("RGBA")
    except (OSError, SyntaxError, ValueError):
        # Not ours to judge here: WeasyPrint leaves out an image it cannot read, as before.
        return _Asset(body=body, media_type=media_type)
    opaque = Image.new("RGB", pixels.size, "white")
    opaque.paste(pixels, mask=pixels.getchannel("A"))
    opaque.thumbnail(LOGO_PRINT_PIXELS, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    opaque.save(buffer, format="PNG")
    return _Asset(body=buffer.getvalue(), media_type="image/png")


def assets_phrase(codes: list[str]) -> str:
    """["USDT", "USDC"] → "USDT or USDC"; no codes means every asset we accept."""
    names = list(codes or PAYMENT_ASSETS)
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "invoice"
