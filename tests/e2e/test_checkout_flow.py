"""A payer pays an invoice in a real browser against a real chain: Chromium, anvil, the real
watcher task in a background thread, and the page turning Processing then Paid by itself.

Screenshots of every step land in test-artifacts/e2e/ (gitignored).
"""

import re
import threading
from contextlib import nullcontext
from decimal import Decimal

import pytest
from django.db import connection, connections
from playwright.sync_api import Page, expect

from checkout.models import Payment, PaymentStatus
from checkout.tasks import watch_network
from contracts.deploy import PAYER_KEY, load_artifact
from invoices.models import InvoiceStatus
from tests.chain import running_anvil
from tests.conftest import SHARED_SQLITE_CONNECTION
from tests.e2e.test_invoice_flow import shot
from tests.e2e.test_invoice_flow import watched_page as watched_page  # a fixture
from tests.factories import CustomerFactory, MerchantFactory, make_invoice
from tests.wallets.test_addresses import ABANDON_XPUB
from tests.wallets.test_scanner_anvil import Anvil, _register
from wallets.addresses import wallet_set
from wallets.chain import Chain, Signer
from wallets.ledger import account_balance, merchant_account

pytestmark = pytest.mark.e2e
USDC = 10**6
WATCH_EVERY = 0.5  # seconds
ROUND_LIMIT = 600  # the watcher stops by itself after this many rounds (5 minutes)


class Watcher(threading.Thread):
    """What Celery beat and a worker do in production: watch the network every half second."""

    def __init__(self, network_id: int) -> None:
        super().__init__(daemon=True)
        self.network_id = network_id
        self.halt = threading.Event()
        self.rounds = 0
        self.errors: list[BaseException] = []
        # An in-memory SQLite test database lives in one connection, which the live server
        # already shares across threads; this thread joins it. PostgreSQL: its own connection.
        main = connections["default"]  # this thread's wrapper, not the `connection` proxy
        self.shared = main if main.vendor == "sqlite" and main.is_in_memory_db() else None  # type: ignore[attr-defined]

    def run(self) -> None:
        if self.shared is not None:
            self.shared.inc_thread_sharing()
            connections["default"] = self.shared
        try:
            while not self.halt.is_set() and self.rounds < ROUND_LIMIT:
                try:
                    with SHARED_SQLITE_CONNECTION if self.shared else nullcontext():
                        watch_network(self.network_id)
                except BaseException as error:  # reported by the test, never swallowed
                    self.errors.append(error)
                self.rounds += 1
                self.halt.wait(WATCH_EVERY)
        finally:
            if self.shared is None:
                connection.close()
            else:
                self.shared.dec_thread_sharing()

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)


@pytest.fixture
def anvil():
    with running_anvil() as rpc_url:
        yield Anvil(rpc_url)


@pytest.fixture
def shop(transactional_db, anvil):
    merchant = MerchantFactory(name="Acme Tools", brand_colour="#0f766e")
    wallet_set(merchant=merchant, xpub=ABANDON_XPUB)
    network = _register(anvil, confirmations=2)  # seeds the networks a flush removed
    return merchant, network


def test_payer_pays_in_usdc_and_watches_the_page_turn_paid(
    chromium_path, live_server, anvil, shop, watched_page
):
    page: Page = watched_page
    merchant, network = shop
    customer = CustomerFactory(merchant=merchant, name="Marie Curie", email="marie@example.org")
    invoice = make_invoice(
        merchant,
        customer=customer,
        items=[("Radium sample", "2", "37.50"), ("Shipping", "1", "25.00")],
        issue=True,
        description="Order #1898",
        accepted_assets=["USDC", "USDT"],
        payment_page_url="https://shop.example/thanks",
        payment_page_button="Back to Acme",
    )
    assert invoice.total == Decimal("100.00")

    # The payer opens the link from the email.
    page.goto(f"{live_server.url}/pay/{invoice.public_token}/")
    expect(page.locator(".pay-merchant")).to_have_text("Acme Tools")
    expect(page.locator(".doc-total")).to_have_text("$100.00")
    expect(page.get_by_role("heading", name="How would you like to pay?")).to_be_visible()
    page.evaluate("window.__samePage = true")  # gone if anything reloads the page
    shot(page, "checkout-01-invoice")

    # Picks USDC; the address comes in without a reload.
    page.locator("label.asset-choice", has_text="USDC").click()
    page.get_by_label("Note to Acme Tools (optional)").fill("Paid from the lab wallet")
    page.get_by_role("button", name="Continue").click()
    address = page.locator("#pay-address")
    expect(address).to_be_visible()
    expect(page.locator("#pay-amount")).to_have_text("100")
    expect(page.locator(".qr svg")).to_be_visible()
    payment = Payment.objects.get(invoice=invoice)
    assert payment.asset.symbol == "USDC"
    assert payment.payer_note == "Paid from the lab wallet"
    assert address.inner_text() == payment.deposit_address.address
    shot(page, "checkout-02-address")

    watcher = Watcher(network.pk)
    watcher.start()
    try:
        # The test pays from the funded demo account, as the payer's wallet would.
        chain = Chain(anvil.rpc_url)
        payer = Signer(chain, PAYER_KEY)
        tx = payer.call(
            anvil.deployed["USDC"],
            load_artifact()["abi"],
            "transfer",
            [address.inner_text(), 100 * USDC],
            nonce=payer.next_nonce(),
        )
        payer.wait(tx)

        # Mined but not yet confirmed (2 needed): Processing.
        status = page.locator("#status")
        expect(status).to_contain_text("Payment seen on chain.", timeout=20_000)
        expect(status).to_contain_text("Waiting for confirmations")
        shot(page, "checkout-03-processing")

        anvil.mine(2)
        expect(status.get_by_role("heading", name="Paid")).to_be_visible(timeout=20_000)
        expect(status).to_contain_text(f"received 100 USDC for order {payment.order_number}")
        expect(status.get_by_role("link", name="Back to Acme")).to_have_attribute(
            "href", "https://shop.example/thanks"
        )
        expect(status).not_to_have_attribute("hx-trigger", re.compile("load"))  # asks no more
        shot(page, "checkout-04-paid")
    finally:
        watcher.stop()

    assert watcher.errors == []
    assert watcher.rounds >= 2
    assert page.evaluate("window.__samePage") is True, "the page reloaded"
    assert tx[:19] in page.locator("#status table").inner_text()  # the receipt's transfer
    payment.refresh_from_db()
    invoice.refresh_from_db()
    assert (payment.status, payment.confirmed) == (PaymentStatus.PAID, 100 * USDC)
    assert invoice.status == InvoiceStatus.PAID
    assert account_balance(merchant_account(merchant), "USD") == Decimal("100.00")
    assert page.problems == [], "\n".join(page.problems)  # type: ignore[attr-defined]


def test_a_refused_choice_shows_its_message_in_place(
    chromium_path, live_server, shop, watched_page
):
    """A currency that went off offer between the page load and the click (here: a value the
    page never offered) is refused with 400: the message shows in the payment section, and
    the rest of the page stays as it was."""
    page: Page = watched_page
    merchant, _ = shop
    invoice = make_invoice(merchant, items=[("Item", "1", "10.00")], issue=True)
    page.goto(f"{live_server.url}/pay/{invoice.public_token}/")
    page.evaluate("window.__samePage = true")
    page.locator("label.asset-choice", has_text="USDC").click()
    page.locator("input[name=asset]:checked").evaluate("input => { input.value = '999999'; }")
    page.get_by_role("button", name="Continue").click()

    expect(page.locator("#status")).to_contain_text("Choose one of the currencies offered.")
    expect(page.locator(".pay-merchant")).to_have_text("Acme Tools")  # the page is still whole
    expect(page.get_by_role("button", name="Continue")).to_be_visible()  # and may try again
    shot(page, "checkout-05-refused-choice")
    assert page.evaluate("window.__samePage") is True, "the page reloaded"
    assert not Payment.objects.filter(invoice=invoice).exists()
    # Chromium logs the 400 itself as a failed resource; anything else is a problem.
    others = [p for p in page.problems if "status of 400" not in p]  # type: ignore[attr-defined]
    assert others == [], "\n".join(others)
