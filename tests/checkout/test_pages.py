"""The payer's page /pay/<token>/: modes, live status, bad input, privacy, the QR code."""

import os
import re
import shutil
import subprocess
import tempfile
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone
from PIL import Image, ImageDraw

from checkout.models import Payment, PaymentStatus
from checkout.services import payments_cancel_ended, payments_expire
from checkout.views import eip681
from customers.models import Customer
from invoices.models import InvoiceKind, InvoiceStatus, PricingMode
from invoices.services import invoice_cancel, invoice_close, invoice_void
from tests.factories import make_invoice
from wallets.models import Asset

pytestmark = pytest.mark.django_db
USDC = 10**6
HX = {"HX-Request": "true"}


def page(client, invoice, **headers):
    return client.get(reverse("pay", args=[invoice.public_token]), headers=headers)


def start(client, invoice, asset, **data):
    url = reverse("pay_start", args=[invoice.public_token])
    headers = data.pop("headers", {})
    return client.post(url, {"asset": asset.pk if asset else "", **data}, headers=headers)


def text(response) -> str:
    return response.content.decode()


def found(pattern: str, html: str) -> str:
    match = re.search(pattern, html)
    assert match, f"{pattern} not found"
    return match.group(1)


def status_fragment(html: str) -> str:
    match = re.search(r'<section id="status".*?</section>', html, re.S)
    assert match, "no status section"
    return match.group(0)


# The three pricing modes ----------------------------------------------------------------------


def test_no_timer_page_offers_the_accepted_assets_and_locks_nothing_yet(shop, client):
    invoice = shop.invoice("120.00", description="Spring service")
    html = text(page(client, invoice))
    assert "How would you like to pay?" in html
    offered = re.findall(
        r'name="asset" value="(\d+)".*?asset-symbol">(\w+)</span><span class="muted small">on ([^<]+)<',
        html,
        re.S,
    )
    assert [(symbol, network) for _, symbol, network in offered] == [
        ("ETH", "Local dev chain"),
        ("USDC", "Local dev chain"),
        ("USDT", "Local dev chain"),
    ]
    assert "data-countdown" not in html
    assert "$120.00" in html and "Spring service" in html and invoice.reference in html
    assert Payment.objects.count() == 0


def test_the_picker_offers_only_the_invoices_accepted_assets(shop, client):
    invoice = shop.invoice("10.00", accepted_assets=["USDT", "USDC"])
    html = text(page(client, invoice))
    assert re.findall(r'asset-symbol">(\w+)<', html) == ["USDC", "USDT"]


def test_timer_page_shows_the_seconds_left_from_the_server(shop, client, settings):
    invoice = shop.invoice("10.00", pricing_mode=PricingMode.TIMER)
    html = text(page(client, invoice))
    seconds = int(found(r'data-countdown="(\d+)"', html))
    limit = settings.INVOICE_TIMER_MINUTES * 60
    assert limit - 5 <= seconds <= limit
    # Readable without JavaScript: the server renders m:ss.
    shown = found(r'class="countdown-value">([\d:]+)<', html)
    assert shown == f"{seconds // 60}:{seconds % 60:02d}"
    assert "How would you like to pay?" in html


def test_timer_with_a_fixed_asset_goes_straight_to_the_address(shop, client):
    invoice = shop.invoice(
        "25.00", pricing_mode=PricingMode.TIMER_FIXED_ASSET, accepted_assets=["USDC"]
    )
    html = text(page(client, invoice))
    payment = Payment.objects.get()
    assert (payment.asset, payment.amount_due) == (shop.usdc, 25 * USDC)
    assert "How would you like to pay?" not in html
    assert f'id="pay-address">{payment.deposit_address.address}<' in html
    assert 'id="pay-amount">25<' in html
    assert "data-countdown" in html and "<svg" in html
    page(client, invoice)  # a reload keeps the same order and address
    assert Payment.objects.count() == 1


def test_choosing_an_asset_locks_the_quote_and_shows_address_amount_and_qr(shop, client):
    invoice = shop.invoice("42.50")
    response = start(client, invoice, shop.usdc, note="Order 77")
    assert response.status_code == 302
    assert response["Location"] == reverse("pay", args=[invoice.public_token])
    payment = Payment.objects.get()
    assert (payment.amount_due, payment.rate, payment.rate_source) == (
        42_500_000,
        Decimal(1),
        "static",
    )
    assert payment.payer_note == "Order 77"
    html = text(page(client, invoice))
    assert f"Order {payment.order_number}" in html
    assert 'id="pay-amount">42.5<' in html
    assert payment.deposit_address.address in html
    assert "Send <strong>USDC</strong> on <strong>Local dev chain</strong> only" in html


def test_the_payer_note_is_trimmed_and_cleaned_of_nul_bytes(shop, client):
    invoice = shop.invoice("10.00")
    assert start(client, invoice, shop.usdc, note="  ref\x00 42 " + "x" * 600).status_code == 302
    note = Payment.objects.get().payer_note
    assert note.startswith("ref 42 x") and len(note) == 500 and "\x00" not in note


def test_choosing_an_asset_with_htmx_answers_with_the_status_fragment(shop, client):
    invoice = shop.invoice("10.00")
    response = start(client, invoice, shop.usdc, headers=HX)
    assert response.status_code == 200
    html = text(response)
    assert html.lstrip().startswith('<section id="status"')
    assert "<html" not in html
    assert Payment.objects.get().deposit_address.address in html


def test_the_fee_paid_by_the_payer_is_shown_in_the_amount(shop, client, settings):
    settings.FEE_PERCENT = Decimal("1")
    invoice = shop.invoice("100.00", fee_payer="payer")
    start(client, invoice, shop.usdc)
    html = text(page(client, invoice))
    assert 'id="pay-amount">101<' in html
    assert "includes a $1.00 fee" in html


def test_an_open_amount_invoice_asks_the_payer_for_the_amount(shop, client):
    invoice = shop.invoice(None, kind=InvoiceKind.PERMANENT)
    assert 'name="amount"' in text(page(client, invoice))
    assert start(client, invoice, shop.usdc, amount="12.34").status_code == 302
    assert Payment.objects.get().amount_due == 12_340_000


@pytest.mark.parametrize("amount", ["-5", "0", "0.001", "abc", "NaN", "Infinity", "1e40"])
def test_a_bad_open_amount_is_refused_with_a_message(shop, client, amount):
    invoice = shop.invoice(None, kind=InvoiceKind.PERMANENT)
    response = start(client, invoice, shop.usdc, amount=amount)
    assert response.status_code == 400
    assert "Enter the amount to pay: above zero, at most a trillion." in text(response)
    assert Payment.objects.count() == 0


def test_an_amount_on_a_fixed_price_invoice_is_refused(shop, client):
    invoice = shop.invoice("10.00")
    response = start(client, invoice, shop.usdc, amount="5")
    assert response.status_code == 400
    assert "Only open-amount invoices take an amount from the payer." in text(response)


# Live status ---------------------------------------------------------------------------------


def test_the_status_fragment_polls_while_open_and_stops_once_final(shop, client):
    invoice = shop.invoice("10.00")
    start(client, invoice, shop.usdc)
    payment = Payment.objects.get()

    full = page(client, invoice)
    assert "HX-Request" in [v.strip() for v in full["Vary"].split(",")]
    assert "<html" in text(full)

    polled = page(client, invoice, **HX)
    html = text(polled)
    assert "<html" not in html and "pay-invoice" not in html
    assert html.lstrip().startswith('<section id="status"') and html.rstrip().endswith("</section>")
    # The test client runs one request at a time, like a sync worker: nothing waits, the
    # page asks again in 3 s, as it did before push.
    assert 'hx-trigger="load delay:3s, retry"' in html
    url = reverse("pay", args=[invoice.public_token])
    assert f'hx-get="{url}?v=' in html
    assert "HX-Request" in [v.strip() for v in polled["Vary"].split(",")]

    shop.send(payment, 10 * USDC)
    shop.watch()
    html = text(page(client, invoice, **HX))
    assert "Payment seen on chain." in html
    assert 'hx-trigger="load delay:3s, retry"' in html
    assert "<svg" not in html  # all of it is on its way: no code asking for more

    shop.confirm()
    html = text(page(client, invoice, **HX))
    assert "<h2>Paid</h2>" in html
    assert f"received 10 USDC for order {payment.order_number}" in html
    assert "hx-trigger" not in html and "hx-get" not in html
    assert "<svg" not in html  # no QR code to pay again


def test_the_page_shows_what_is_still_due_after_a_partial_deposit(shop, client):
    invoice = shop.invoice("100.00")
    start(client, invoice, shop.usdc)
    payment = Payment.objects.get()
    shop.send(payment, 40 * USDC)
    shop.watch()
    html = text(page(client, invoice))
    assert "60 USDC still to send" in html
    assert 'id="pay-amount">60<' in html
    assert decode_qr(qr_svg(html), tmp_name="partial") == eip681(Payment.objects.get())
    assert eip681(Payment.objects.get()).endswith("&uint256=60000000")


def test_the_receipt_offers_the_way_back_to_the_merchant(shop, client):
    invoice = shop.invoice(
        "10.00",
        payment_page_url="https://shop.example/thanks",
        payment_page_button="Back to Acme",
    )
    start(client, invoice, shop.usdc)
    shop.send(Payment.objects.get(), 10 * USDC)
    shop.confirm()
    html = text(page(client, invoice))
    assert 'href="https://shop.example/thanks"' in html and "Back to Acme" in html


# Bad input -----------------------------------------------------------------------------------


MALFORMED = [
    "x",
    "a" * 200,
    "../../etc/passwd",
    "%00",
    "abc%00def",
    "'; DROP TABLE invoices_invoice; --",
    "ünïcødé",
    "<script>",
]


@pytest.mark.parametrize("token", ["A" * 43, *MALFORMED])
def test_unknown_and_malformed_tokens_are_404_for_page_fragment_and_start(shop, client, token):
    shop.invoice("10.00")
    for response in (
        client.get(f"/pay/{token}/"),
        client.get(f"/pay/{token}/", headers=HX),
        client.post(f"/pay/{token}/start/", {"asset": shop.usdc.pk}),
    ):
        assert response.status_code == 404
    assert Payment.objects.count() == 0


def test_a_draft_invoice_is_404_like_an_unknown_token(shop, client):
    draft = make_invoice(shop.merchant, items=[("Audit", "1", "90.00")])
    assert draft.status == InvoiceStatus.DRAFT
    unknown = client.get(f"/pay/{'B' * 43}/")
    response = client.get(reverse("pay", args=[draft.public_token]))
    assert response.status_code == unknown.status_code == 404
    assert response.content == unknown.content
    assert client.post(reverse("pay_start", args=[draft.public_token]), {}).status_code == 404


def test_refusing_a_token_costs_the_same_queries_whatever_it_looks_like(
    shop, client, django_assert_num_queries
):
    draft = make_invoice(shop.merchant, items=[("Audit", "1", "90.00")])
    tokens = ["C" * 43, "short", "z" * 500, draft.public_token]
    counts = []
    for token in tokens:
        with django_assert_num_queries(1) as captured:
            assert client.get(f"/pay/{token}/").status_code == 404
        counts.append(len(captured.captured_queries))
    assert counts == [1, 1, 1, 1]


def test_an_asset_the_invoice_does_not_accept_is_400_with_a_message(shop, client):
    invoice = shop.invoice("10.00", accepted_assets=["USDC"])
    usdt = Asset.objects.get(network=shop.network, symbol="USDT")
    response = start(client, invoice, usdt)
    assert response.status_code == 400
    assert "This invoice does not accept USDT on Local dev chain." in text(response)
    fragment = start(client, invoice, usdt, headers=HX)
    assert fragment.status_code == 400
    assert fragment["HX-Reswap"] == "outerHTML"
    assert "This invoice does not accept USDT" in text(fragment)
    assert Payment.objects.count() == 0


@pytest.mark.parametrize("raw", ["", "abc", "-1", "999999", "1.5"])
def test_a_missing_or_unknown_asset_is_400(shop, client, raw):
    invoice = shop.invoice("10.00")
    response = client.post(reverse("pay_start", args=[invoice.public_token]), {"asset": raw})
    assert response.status_code == 400
    assert "Choose one of the currencies offered." in text(response)


def test_a_disabled_asset_is_neither_offered_nor_accepted(shop, client):
    invoice = shop.invoice("10.00")
    usdt = Asset.objects.get(network=shop.network, symbol="USDT")
    usdt.enabled = False
    usdt.save()
    assert 'asset-symbol">USDT<' not in text(page(client, invoice))
    assert start(client, invoice, usdt).status_code == 400


def _paid(shop):
    invoice = shop.invoice("10.00")
    payment = shop.start(invoice)
    shop.send(payment, 10 * USDC)
    shop.confirm()
    return invoice


def _cancelled(shop):
    return invoice_cancel(invoice=shop.invoice("10.00"))


def _expired(shop):
    invoice = shop.invoice("10.00", pricing_mode=PricingMode.TIMER)
    payments_expire(now=timezone.now() + timedelta(minutes=16))
    # The page reads the real clock: move the timer into the past too.
    type(invoice).objects.filter(pk=invoice.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    return invoice


def _closed(shop):
    return invoice_close(invoice=shop.invoice("10.00", kind=InvoiceKind.PERMANENT))


def _void(shop):
    return invoice_void(invoice=make_invoice(shop.merchant, items=[("Audit", "1", "9.00")]))


@pytest.mark.parametrize(
    "make, shown",
    [
        (_paid, "<h2>Paid</h2>"),
        (_cancelled, "This invoice was cancelled</strong> and takes no payment."),
        (_expired, "The time to pay this invoice has run out."),
        (_closed, "This invoice is closed</strong> and takes no more payments."),
        (_void, "This invoice was voided."),
    ],
    ids=["paid", "cancelled", "expired", "closed", "void"],
)
def test_a_final_invoice_shows_its_state_and_takes_no_new_payment(shop, client, make, shown):
    invoice = make(shop)
    invoice.refresh_from_db()
    before = Payment.objects.count()
    html = text(page(client, invoice))
    assert shown in html
    assert "How would you like to pay?" not in html and 'name="asset"' not in html
    assert "hx-trigger" not in status_fragment(html)
    response = start(client, invoice, shop.usdc)
    assert response.status_code == 400
    assert Payment.objects.count() == before


def test_a_cancelled_invoice_stops_showing_its_address_once_housekeeping_ran(shop, client):
    invoice = shop.invoice("10.00")
    start(client, invoice, shop.usdc)
    payment = Payment.objects.get()
    invoice_cancel(invoice=invoice)
    payments_cancel_ended()
    html = text(page(client, invoice))
    assert "This payment was cancelled." in html
    assert payment.deposit_address.address not in html
    assert "<svg" not in html and "hx-trigger" not in status_fragment(html)


def test_too_many_attempts_in_a_minute_are_refused_with_429(shop, client, settings):
    settings.PAYMENT_ATTEMPTS_PER_MINUTE = 3
    # The limit counts per calendar minute: keep the burst inside one.
    if time.time() % 60 > 55:
        time.sleep(60 - time.time() % 60 + 0.1)
    invoice = shop.invoice("10.00")
    usdt = Asset.objects.get(network=shop.network, symbol="USDT")
    for asset in (shop.usdc, usdt, shop.usdc):  # switching asset is an attempt too
        assert start(client, invoice, asset).status_code == 302
    response = start(client, invoice, usdt)
    assert response.status_code == 429
    assert "Too many payment attempts on this invoice." in text(response)
    assert Payment.objects.get().asset == shop.usdc
    # Another invoice has its own allowance.
    assert start(client, shop.invoice("5.00"), shop.usdc).status_code == 302


# Privacy and escaping ------------------------------------------------------------------------


def test_the_page_shows_none_of_the_merchants_private_data(shop, client, alice, acme_customer):
    acme_customer.notes = "Owes us for March; VIP discount"
    acme_customer.tax_id = "DE-TAX-4711"
    acme_customer.address_line1 = "1 Secret Lane"
    acme_customer.save()
    other_customer = Customer.objects.create(
        merchant=shop.merchant, name="Grace Hopper", email="grace@example.org"
    )
    other = shop.invoice("777.00", customer=other_customer, description="Other deal")
    other_payment = shop.start(other)
    invoice = shop.invoice("10.00", customer=acme_customer)
    start(client, invoice, shop.usdc)
    shop.send(other_payment, 777 * USDC)
    shop.confirm()  # the merchant now has a balance of 777

    for response in (page(client, invoice), page(client, invoice, **HX)):
        html = text(response)
        for secret in (
            alice.email,
            acme_customer.email,
            "Owes us for March",
            "DE-TAX-4711",
            "1 Secret Lane",
            "Grace Hopper",
            other.reference,
            other.public_token,
            "$777.00",
            "777 USDC",
            "Other deal",
            other_payment.deposit_address.address,
            shop.merchant.wallet.xpub,
            "xpub",
        ):
            assert secret not in html, secret
    assert "Ada Lovelace" in text(page(client, invoice))  # the payer's own name is fine


def test_user_text_is_escaped(shop, client, client_for, alice):
    evil = '<script>alert("x")</script>'
    customer = Customer.objects.create(
        merchant=shop.merchant, name=evil, email="e@example.org", company=evil
    )
    invoice = make_invoice(
        shop.merchant,
        customer=customer,
        items=[(evil, "1", "10.00")],
        issue=True,
        description=evil,
        payment_page_url="https://shop.example/?q=<b>",
        payment_page_button=evil[:40],
    )
    shop.merchant.name = evil[:120]
    shop.merchant.save()
    start(client, invoice, shop.usdc, note=evil)
    html = text(page(client, invoice))
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    # The note reaches the merchant's payments tab, escaped there too.
    tab = client_for(alice).get(reverse("invoice_payments", args=[invoice.pk]))
    assert tab.status_code == 200
    assert "<script>alert" not in text(tab)
    assert "&lt;script&gt;" in text(tab)


# The QR code ---------------------------------------------------------------------------------


def qr_svg(html: str) -> str:
    match = re.search(r'<div class="qr"[^>]*>(<svg.*?</svg>)</div>', html, re.S)
    assert match, "no QR code on the page"
    return match.group(1)


def _modules(svg: str) -> tuple[int, set[tuple[int, int]]]:
    """The dark modules of segno's inline SVG: one path of horizontal runs (M, m, h)."""
    size = int(found(r'viewBox="0 0 (\d+) \d+"', svg))
    scale = int(found(r'transform="scale\((\d+)\)"', svg))
    path = found(r' d="([^"]+)"', svg)
    x = y = 0.0
    dark: set[tuple[int, int]] = set()
    for command, args in re.findall(r"([A-Za-z])([^A-Za-z]*)", path):
        numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", args)]
        if command == "M":
            x, y = numbers
        elif command == "m":
            x, y = x + numbers[0], y + numbers[1]
        elif command == "h":
            dark.update((int(x) + i, int(y)) for i in range(int(numbers[0])))
            x += numbers[0]
        else:
            raise AssertionError(f"unexpected SVG path command {command}")
    return size // scale, dark


def decode_qr(svg: str, *, tmp_name: str) -> str:
    """Rasterise the page's own SVG and let zbarimg (an outside decoder) read it."""
    zbarimg = shutil.which("zbarimg")
    if zbarimg is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have zbarimg installed (apt-get install zbar-tools).")
        pytest.skip("zbarimg is not installed (apt-get install zbar-tools)")
    modules, dark = _modules(svg)
    pixel = 6
    image = Image.new("L", (modules * pixel, modules * pixel), 255)
    draw = ImageDraw.Draw(image)
    for mx, my in dark:
        draw.rectangle([mx * pixel, my * pixel, (mx + 1) * pixel - 1, (my + 1) * pixel - 1], fill=0)
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/{tmp_name}.png"
        image.save(path)
        result = subprocess.run(
            [zbarimg, "--raw", "-q", path], capture_output=True, text=True, timeout=30
        )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_qr_code_on_the_page_decodes_to_the_eip681_payment_request(shop, client):
    invoice = shop.invoice("100.00")
    start(client, invoice, shop.usdc)
    payment = Payment.objects.get()
    decoded = decode_qr(qr_svg(text(page(client, invoice))), tmp_name="full")
    assert decoded == (
        f"ethereum:{shop.tester.token_address}@31337/transfer"
        f"?address={payment.deposit_address.address}&uint256=100000000"
    )
    assert decoded == eip681(payment)
    # The "open in wallet" link carries the same request.
    assert f'href="{decoded.replace("&", "&amp;")}"' in text(page(client, invoice))


def test_a_native_coin_payment_request_uses_value_in_wei(shop, client):
    invoice = shop.invoice("30.00")  # at the static 3,000 USD an ETH: 0.01 ETH
    eth = Asset.objects.get(network=shop.network, symbol="ETH")
    start(client, invoice, eth)
    payment = Payment.objects.get()
    assert payment.status == PaymentStatus.AWAITING
    decoded = decode_qr(qr_svg(text(page(client, invoice))), tmp_name="eth")
    assert decoded == f"ethereum:{payment.deposit_address.address}@31337?value={10**16}"
