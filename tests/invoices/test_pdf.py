"""Invoice and receipt PDFs: what they say, the QR code on them, what rendering may touch."""

import io
import logging
import re
import shutil
import subprocess
from datetime import date, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from PIL import Image
from pypdf import PdfReader

from invoices import pdf
from invoices.delivery import ReceiptInput, TransferRef, invoice_paid_deliver
from invoices.models import Invoice, PaymentMethod, TaxRate
from invoices.rules import LineItemInput
from invoices.services import InvoiceInput, invoice_create, invoice_mark_paid, invoice_void
from tests.factories import CustomerFactory, make_invoice
from tests.local_http import serve_in_background

pytestmark = pytest.mark.django_db

INJECTION = '<script>alert("x")</script><b>bold</b>'


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()


@pytest.fixture
def customer(acme):
    return CustomerFactory(
        merchant=acme,
        name="Ada Lovelace",
        email="ada@example.org",
        company="Analytical Engines Ltd",
        address_line1="12 St James's Square",
        city="London",
        postal_code="SW1Y 4JH",
        country="GB",
        tax_id="GB123456789",
    )


@pytest.fixture
def invoice(acme, customer):
    return make_invoice(
        acme,
        customer=customer,
        issue=True,
        description="Work in November",
        due_date=timezone.localdate() + timedelta(days=14),
        items=[
            ("Design workshop", "2", "150.00"),
            ("Hosting (12 months)", "12", "9.99"),
            ("Setup", "0.5", "80"),
        ],
    )


def text_of(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


def pdftotext(content: bytes, tmp_path) -> str:
    path = tmp_path / "doc.pdf"
    path.write_bytes(content)
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout


def require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} is missing: apt-get install poppler-utils zbar-tools")


# What the invoice says ---------------------------------------------------------------------------


def test_invoice_pdf_has_the_numbers_items_and_totals(invoice, tmp_path):
    require("pdftotext")
    document = pdf.invoice_pdf(invoice)

    assert document.content.startswith(b"%PDF-")
    assert document.filename == f"{invoice.reference}.pdf"
    text = pdftotext(document.content, tmp_path)
    for expected in (
        "Acme Tools",
        "INVOICE",
        invoice.reference,
        "Ada Lovelace",
        "Analytical Engines Ltd",
        "12 St James's Square",
        "London SW1Y 4JH",
        "ada@example.org",
        "Tax ID GB123456789",
        "Work in November",
        f"Issue date {timezone.localdate():%b} {timezone.localdate().day}, {timezone.localdate().year}",
        f"Due date {invoice.due_date:%b} {invoice.due_date.day}, {invoice.due_date.year}",
        "Amount due $459.88",
        "Subtotal $459.88",
        "Pay online in USDT, USDC or ETH",
        invoice.pay_url,
        "Page 1 of 1",
    ):
        assert expected in " ".join(text.split()), expected
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "1 Design workshop 2 150.00 300.00" in lines
    assert "2 Hosting (12 months) 12 9.99 119.88" in lines
    assert "3 Setup 0.5 80.00 40.00" in lines


def test_pypdf_reads_the_same_text(invoice):
    text = text_of(pdf.invoice_pdf(invoice).content)
    assert invoice.reference in text
    assert "Design workshop" in text
    assert "$459.88" in text


def test_qr_code_on_the_pdf_decodes_to_the_pay_link(invoice, tmp_path):
    require("pdftoppm")
    require("zbarimg")
    (tmp_path / "invoice.pdf").write_bytes(pdf.invoice_pdf(invoice).content)
    subprocess.run(
        ["pdftoppm", "-r", "150", "-png", "-f", "1", "-l", "1", "invoice.pdf", "page"],
        cwd=tmp_path,
        check=True,
    )
    [page] = tmp_path.glob("page*.png")
    decoded = subprocess.run(
        ["zbarimg", "--quiet", "--raw", str(page)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert decoded == [invoice.pay_url]


def test_hundred_items_flow_over_pages_with_the_total_at_the_end(acme, customer):
    items = [(f"Line {n:03d}", "1", "2.50") for n in range(1, 101)]
    invoice = make_invoice(acme, customer=customer, issue=True, items=items)
    reader = PdfReader(io.BytesIO(pdf.invoice_pdf(invoice).content))
    pages = [page.extract_text() for page in reader.pages]

    assert len(pages) > 2
    text = "\n".join(pages)
    assert all(f"Line {n:03d}" in text for n in range(1, 101))
    assert "$250.00" in pages[-1]
    assert f"Page {len(pages)} of {len(pages)}" in pages[-1]


def test_open_amount_permanent_invoice(acme, customer):
    invoice = make_invoice(acme, customer=customer, issue=True, kind="permanent", items=[])
    text = " ".join(text_of(pdf.invoice_pdf(invoice).content).split())
    assert "Open amount" in text
    assert "Reusable" in text


@pytest.mark.parametrize(
    ("paper", "size"), [("A4", (595, 842)), ("letter", (612, 792))], ids=["a4", "letter"]
)
def test_paper_size_follows_the_merchant(acme, invoice, paper, size):
    acme.paper_size = paper
    acme.save()
    invoice.refresh_from_db()
    page = PdfReader(io.BytesIO(pdf.invoice_pdf(invoice).content)).pages[0]
    assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == size


# Stamps -------------------------------------------------------------------------------------------


def test_paid_invoice_is_stamped_and_no_longer_asks_for_payment(invoice, alice):
    paid = invoice_mark_paid(invoice=invoice, reference="WIRE-7", by=alice)
    text = " ".join(text_of(pdf.invoice_pdf(paid).content).split())
    assert "PAID" in text
    assert "Total paid $459.88" in text
    assert "Pay online" not in text
    assert invoice.pay_url not in text


def test_void_and_draft_are_stamped(acme, customer):
    draft = make_invoice(acme, customer=customer)
    assert "DRAFT" in text_of(pdf.invoice_pdf(draft).content)
    void = invoice_void(invoice=draft)
    text = text_of(pdf.invoice_pdf(void).content)
    assert "VOID" in text
    assert "Pay online" not in text


def test_open_invoice_has_no_stamp(invoice):
    text = text_of(pdf.invoice_pdf(invoice).content)
    assert not {"PAID", "VOID", "DRAFT"} & set(text.split())


# Receipt -------------------------------------------------------------------------------------------


def test_receipt_pdf_has_the_payment_and_its_transactions(invoice, tmp_path):
    tx = "0x" + "5e" * 32
    receipt = invoice_paid_deliver(
        invoice=invoice,
        receipt=ReceiptInput(
            key="order-1",
            order_number=f"{invoice.reference}-1",
            paid_at=timezone.now(),
            amount=Decimal("459.88"),
            method="USDT on Ethereum",
            transfers=[
                TransferRef(
                    tx_hash=tx,
                    network="Ethereum",
                    asset="USDT",
                    amount=Decimal("459.880000"),
                    explorer_url=f"https://etherscan.io/tx/{tx}",
                )
            ],
        ),
    )
    document = pdf.receipt_pdf(receipt)

    assert document.filename == f"{invoice.reference}-R1-receipt.pdf"
    text = " ".join(pdftotext(document.content, tmp_path).split())
    for expected in (
        "RECEIPT",
        f"{invoice.reference}-R1",
        f"Order {invoice.reference}-1",
        "Amount paid $459.88",
        "USDT on Ethereum",
        "459.88 USDT",
        "Design workshop",
        "Thank you for your payment.",
    ):
        assert expected in text, expected
    assert tx in text.replace(" ", "")
    assert "PAID" in text_of(document.content).split()
    annotations = PdfReader(io.BytesIO(document.content)).pages[0].get("/Annots") or []
    links = [annotation.get_object()["/A"]["/URI"] for annotation in annotations]  # type: ignore[attr-defined]
    assert f"https://etherscan.io/tx/{tx}" in links


# Escaping ------------------------------------------------------------------------------------------


def test_html_in_merchant_and_customer_text_is_printed_as_text(acme, tmp_path):
    acme.name = INJECTION
    acme.save()
    customer = CustomerFactory(
        merchant=acme, name=INJECTION, company=INJECTION, address_line1=INJECTION, email="e@x.org"
    )
    invoice = make_invoice(
        acme,
        customer=customer,
        issue=True,
        description=INJECTION,
        items=[(INJECTION, "1", "10.00")],
    )
    html = pdf.invoice_html(invoice)
    assert "<script>" not in html
    assert "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in html

    text = pdftotext(pdf.invoice_pdf(invoice).content, tmp_path)
    # Printed literally, as many times as it was typed: merchant name twice (header, footer),
    # customer name, company, address, description, item.
    assert " ".join(text.split()).count('<script>alert("x")</script><b>bold</b>') >= 6


def test_a_name_without_spaces_wraps_instead_of_running_off_the_page(acme):
    customer = CustomerFactory(merchant=acme, name="A" * 200, email="a@x.org")
    invoice = make_invoice(acme, customer=customer, issue=True, items=[("B" * 200, "1", "1.00")])
    reader = PdfReader(io.BytesIO(pdf.invoice_pdf(invoice).content))
    text = "".join(page.extract_text() for page in reader.pages).replace("\n", "")
    assert "A" * 200 in text
    assert "B" * 200 in text


# No network, no files, a time limit ------------------------------------------------------------------


@pytest.fixture
def local_server():
    """A web server that records every request made to it."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/css")
            self.end_headers()
            self.wfile.write(b"body { color: red }")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    serve_in_background(server)
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


def test_rendering_fetches_nothing_from_the_network_or_the_disk(local_server, tmp_path, caplog):
    url, hits = local_server
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    html = f"""<html><head>
      <link rel="stylesheet" href="{url}/style.css">
      <style>@import url("{url}/import.css"); body {{ background: url("{url}/bg.png") }}</style>
      </head><body>
      <img src="{url}/pixel.png"><img src="file://{tmp_path}/pixel.png">
      <object data="file://{secret}"></object><iframe src="file://{secret}"></iframe>
      <p>Body text</p></body></html>"""

    # The level this test reads at, whatever an earlier test in the process left the root
    # logger at: in the full suite it was once found past WARNING, in Celery's log format,
    # so the warning never reached caplog.
    caplog.set_level(logging.WARNING, logger="invoices.pdf")
    content = pdf.render_html(html)

    assert hits == []
    assert "TOP SECRET" not in text_of(content)
    assert "Body text" in text_of(content)
    refused = [r.getMessage() for r in caplog.records if "refused to fetch" in r.getMessage()]
    assert any(f"{url}/style.css" in message for message in refused)
    assert any("file://" in message for message in refused)


def test_a_logo_in_the_merchants_storage_is_embedded(acme, invoice):
    buffer = io.BytesIO()
    Image.new("RGB", (120, 40), (79, 70, 229)).save(buffer, format="PNG")
    acme.logo.save("logo.png", SimpleUploadedFile("logo.png", buffer.getvalue()))
    invoice.refresh_from_db()

    content = pdf.invoice_pdf(invoice).content
    page = PdfReader(io.BytesIO(content)).pages[0]
    # The logo, and the QR code (a PNG of one pixel per module).
    sizes = sorted(image.image.size for image in page.images if image.image is not None)
    assert len(sizes) == 2
    assert (120, 40) in sizes
    (qr,) = [size for size in sizes if size != (120, 40)]
    assert qr[0] == qr[1]


def test_a_large_transparent_logo_is_embedded_opaque_at_print_size(acme, invoice):
    # WeasyPrint encodes an embedded PNG again on every render, in time that grows with its
    # pixels (twice for a transparent one): the PDF gets the logo flattened onto the page's
    # white and no larger than twice 300 dpi in its 55 x 16 mm box.
    buffer = io.BytesIO()
    Image.new("RGBA", (2600, 760), (79, 70, 229, 128)).save(buffer, format="PNG")
    acme.logo.save("logo.png", SimpleUploadedFile("logo.png", buffer.getvalue()))
    invoice.refresh_from_db()

    page = PdfReader(io.BytesIO(pdf.invoice_pdf(invoice).content)).pages[0]
    [logo] = [image.image for image in page.images if image.image.size[0] != image.image.size[1]]
    assert logo.size == (1300, 380)
    assert logo.mode == "RGB"
    # Half-transparent indigo over white, as it showed on the page before.
    assert all(
        abs(a - b) <= 1 for a, b in zip(logo.getpixel((650, 190)), (167, 162, 242), strict=True)
    )


def test_a_logo_missing_from_storage_does_not_stop_the_invoice(acme, invoice):
    acme.logo.name = "logos/gone.png"
    acme.save()
    invoice.refresh_from_db()
    assert invoice.reference in text_of(pdf.invoice_pdf(invoice).content)


def test_render_stops_at_the_time_limit_and_the_next_render_works(acme, customer, settings):
    items = [(f"Line {n}", "1", "1.00") for n in range(200)]
    big = make_invoice(acme, customer=customer, issue=True, items=items)
    settings.PDF_RENDER_TIMEOUT_SECONDS = 0.05

    with pytest.raises(pdf.RenderTimeout):
        pdf.invoice_pdf(big, use_cache=False)

    settings.PDF_RENDER_TIMEOUT_SECONDS = 20
    small = make_invoice(acme, customer=customer, issue=True)
    assert small.reference in text_of(pdf.invoice_pdf(small).content)


def test_deadline_never_fires_after_the_block(settings):
    # A deadline that expires right after a quick block must not hit later code.
    import time

    with pdf._deadline(0.05):
        pass
    time.sleep(0.1)  # the timer would have fired here


# The cache -----------------------------------------------------------------------------------------


def test_same_invoice_is_rendered_once_and_served_from_the_cache(invoice, monkeypatch):
    renders = []
    real = pdf._render

    def counted(document):
        renders.append(document)
        return real(document)

    monkeypatch.setattr(pdf, "_render", counted)

    first = pdf.invoice_pdf(invoice)
    again = pdf.invoice_pdf(Invoice.objects.get(pk=invoice.pk))

    assert len(renders) == 1
    assert (first.cached, again.cached) == (False, True)
    assert again.content == first.content
    assert again.digest == first.digest


@pytest.mark.parametrize(
    "change",
    ["status", "merchant", "due_date"],
)
def test_any_change_renders_anew(invoice, customer, acme, change):
    before = pdf.invoice_pdf(invoice)
    if change == "status":
        Invoice.objects.filter(pk=invoice.pk).update(status="paid")
    elif change == "merchant":
        acme.brand_colour = "#0f766e"
        acme.save()
    else:
        Invoice.objects.filter(pk=invoice.pk).update(due_date=date(2030, 1, 1))
    after = pdf.invoice_pdf(
        Invoice.objects.select_related("merchant", "customer").get(pk=invoice.pk)
    )

    assert after.cached is False
    assert after.digest != before.digest


def test_long_unbroken_text_wraps_inside_the_page(acme, tmp_path):
    # Found by fuzzing the API: a customer made of one 200-character "word" pushed the
    # "Bill to" block past the page's right edge, and with it the dates beside it.
    long = {key: key[0].upper() * 200 for key in ("name", "company", "address_line1")}
    customer = CustomerFactory(merchant=acme, email="long@example.org", country="GB", **long)
    acme.legal_name = "L" * 200
    acme.address_line1 = "S" * 200
    acme.save()
    invoice = make_invoice(
        acme,
        customer=customer,
        issue=True,
        notes="N" * 600,
        terms="T" * 600,
        items=[("I" * 200, "1", "10.00")],
    )
    content = pdf.invoice_pdf(invoice, use_cache=False).content
    text = "".join(text_of(content).split())
    for run in ("N" * 600, "T" * 600, "I" * 200, *long.values(), "L" * 200, "S" * 200):
        assert run in text
    require("pdftotext")
    path = tmp_path / "long.pdf"
    path.write_bytes(content)
    boxes = subprocess.run(
        ["pdftotext", "-bbox", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout
    page_width = float(re.search(r'<page width="([0-9.]+)"', boxes).group(1))
    right_edges = [
        float(x) for x in re.findall(r'<word xMin="[0-9.]+" yMin="[0-9.]+" xMax="([0-9.]+)"', boxes)
    ]
    assert right_edges and max(right_edges) <= page_width
    # The wrapped header, notes, payment box and terms fill two pages, as laid out by hand.
    assert len(PdfReader(io.BytesIO(content)).pages) == 2


def word_right_edges(content: bytes, tmp_path) -> tuple[float, list[tuple[str, float]]]:
    """The page width and every word's right edge, in PDF points, as pdftotext places them."""
    require("pdftotext")
    path = tmp_path / "edges.pdf"
    path.write_bytes(content)
    boxes = subprocess.run(
        ["pdftotext", "-bbox", str(path), "-"], check=True, capture_output=True, text=True
    ).stdout
    page_width = float(re.search(r'<page width="([0-9.]+)"', boxes).group(1))
    words = re.findall(r'<word xMin="[0-9.]+" yMin="[0-9.]+" xMax="([0-9.]+)"[^>]*>([^<]*)<', boxes)
    return page_width, [(word, float(x)) for x, word in words]


def test_long_unbroken_text_in_every_field_stays_inside_the_right_margin(acme, tmp_path):
    # Only the fields that may hold it break long words (document.css): in the tables sized by
    # their content (the facts beside "Bill to", the totals, a payment method's facts) a word
    # that may not break anywhere widens the table past the margin and the page.
    acme.invoice_prefix = "V" * 12
    acme.save()
    rate = TaxRate.objects.create(merchant=acme, name="X" * 64, percent=Decimal("10"))
    method = PaymentMethod.objects.create(
        merchant=acme,
        name="M" * 80,
        account_holder="H" * 200,
        bank_name="K" * 200,
        iban="Z" * 64,
        bic="Q" * 32,
        instructions="R" * 300,
    )
    customer = CustomerFactory(merchant=acme, name="C" * 200, email="c@example.org")
    invoice = invoice_create(
        merchant=acme,
        issue=True,
        data=InvoiceInput(
            currency="USD",
            customer=customer,
            items=[LineItemInput("I" * 200, Decimal("1"), Decimal("10"), "D" * 300, tax=rate.spec)],
            description="E" * 300,
            po_number="P" * 64,
            foreign_id="F" * 128,
            footer="W" * 300,
            payment_methods=[method],
        ),
    )
    content = pdf.invoice_pdf(invoice, use_cache=False).content
    text = "".join(text_of(content).split())
    for run in ("X" * 64, "H" * 200, "K" * 200, "Z" * 64, "P" * 64, "F" * 128, "D" * 300):
        assert run in text
    receipt = invoice_paid_deliver(
        invoice=invoice,
        receipt=ReceiptInput(
            key="order-1",
            order_number="O" * 48,
            paid_at=timezone.now(),
            amount=invoice.total,
            method="Y" * 200,
        ),
    )
    right_margin = 18 / 25.4 * 72  # document.css: @page margin, 18 mm left and right
    for document in (content, pdf.receipt_pdf(receipt, use_cache=False).content):
        page_width, words = word_right_edges(document, tmp_path)
        beyond = [(word[:12], x) for word, x in words if x > page_width - right_margin + 1]
        assert words and not beyond
