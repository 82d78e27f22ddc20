"""A refund end to end in a real browser against a real chain: the merchant cancels an invoice
that had received money, the payer gets the email and gives an address on the refund page,
the merchant sends the refund from a browser wallet (an EIP-1193 provider injected into the
page that forwards to anvil, whose dev accounts sign), and the watcher confirms it.

Screenshots of every step land in test-artifacts/e2e/ (gitignored).
"""

import re
from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect

from checkout.models import Payment, RefundRequest, RefundStatus
from checkout.tasks import end_payments
from contracts.deploy import DEPLOYER_KEY, PAYER_KEY, load_artifact
from invoices.models import InvoiceStatus, RefundState
from merchants.models import Role
from tests.e2e.injected_wallet import InjectedWallet
from tests.e2e.test_checkout_flow import Watcher
from tests.e2e.test_checkout_flow import anvil as anvil  # a fixture
from tests.e2e.test_checkout_flow import shop as shop  # a fixture
from tests.e2e.test_invoice_flow import shot
from tests.e2e.test_invoice_flow import watched_page as watched_page  # a fixture
from tests.factories import PASSWORD, CustomerFactory, MembershipFactory, UserFactory, make_invoice
from wallets.chain import Chain, Signer
from wallets.ledger import account_balance, holdings_account, merchant_account

pytestmark = pytest.mark.e2e
USDC = 10**6
# anvil's default accounts: #3 is the merchant's own wallet, #2 the payer's refund address.
MERCHANT_WALLET = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
PAYER_REFUND_ADDRESS = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"


def pay_from_payer(anvil, to: str, units: int) -> str:
    payer = Signer(Chain(anvil.rpc_url), PAYER_KEY)
    tx = payer.call(
        anvil.deployed["USDC"],
        load_artifact()["abi"],
        "transfer",
        [to, units],
        nonce=payer.next_nonce(),
    )
    payer.wait(tx)
    return tx


def fund_merchant_wallet(anvil, units: int) -> None:
    deployer = Signer(Chain(anvil.rpc_url), DEPLOYER_KEY)
    tx = deployer.call(
        anvil.deployed["USDC"],
        load_artifact()["abi"],
        "mint",
        [MERCHANT_WALLET, units],
        nonce=deployer.next_nonce(),
    )
    deployer.wait(tx)


def test_cancel_email_address_wallet_refund_confirmed(
    chromium_path,
    live_server,
    anvil,
    shop,
    watched_page,
    mailoutbox,
):
    page: Page = watched_page
    merchant, network = shop
    owner = UserFactory(email="olivia@acme.test", first_name="Olivia", last_name="Owner")
    MembershipFactory(user=owner, merchant=merchant, role=Role.OWNER)
    customer = CustomerFactory(merchant=merchant, name="Marie Curie", email="marie@example.org")
    invoice = make_invoice(
        merchant,
        customer=customer,
        items=[("Radium sample", "1", "100.00")],
        issue=True,
        accepted_assets=["USDC"],
    )
    wallet = InjectedWallet(anvil.rpc_url, account=MERCHANT_WALLET)
    wallet.install(page)
    fund_merchant_wallet(anvil, 40 * USDC)

    # Waits on the chain are bounded at 60 s (never timing assertions): this 2-core machine
    # runs the rest of the suite beside it. The watcher runs only while the test itself leaves
    # the database alone: an in-memory
    # SQLite test database is one connection shared by the threads.
    watcher = Watcher(network.pk)
    watcher.start()
    try:
        # The payer starts paying and sends 40 of the 100 USDC; it confirms.
        page.goto(f"{live_server.url}/pay/{invoice.public_token}/")
        page.get_by_role("button", name="Continue").click()
        address = page.locator("#pay-address")
        expect(address).to_be_visible()
        pay_from_payer(anvil, address.inner_text(), 40 * USDC)
        anvil.mine(2)
        expect(page.locator("#status")).to_contain_text("60 USDC still to send", timeout=60_000)
    finally:
        watcher.stop()
    assert watcher.errors == []
    payment = Payment.objects.get(invoice=invoice)
    assert payment.confirmed == 40 * USDC

    # The merchant signs in and cancels the invoice.
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Email").fill(owner.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{live_server.url}/invoices/{invoice.pk}/")
    page.get_by_role("button", name="Cancel invoice").click()
    expect(page.locator("h1 .badge")).to_contain_text("Failed · cancelled")
    shot(page, "refund-01-cancelled")

    # Beat's sweep opens the refund and emails the payer the link.
    end_payments()
    refund = RefundRequest.objects.get(invoice=invoice)
    assert refund.amount == 40 * USDC
    [email] = [m for m in mailoutbox if m.to == ["marie@example.org"]]
    assert "was cancelled after your payment of 40 USDC on Local dev chain arrived" in (
        " ".join(email.body.split())
    )
    link = re.search(r"http://\S+/refund/[A-Za-z0-9_-]+/", email.body)
    assert link is not None
    claim = link.group(0).replace("http://testserver", live_server.url)

    # The payment page links the refund too.
    page.goto(f"{live_server.url}/pay/{invoice.public_token}/")
    banner = page.locator(".refund-link")
    expect(banner).to_contain_text("A refund of 40 USDC is waiting for your address.")
    expect(page.locator("#status")).to_contain_text("This invoice was cancelled.")
    expect(page.locator("#pay-address")).to_have_count(0)  # nothing more to send
    assert banner.get_by_role("link", name="Claim your refund").get_attribute("href") == (
        claim.removeprefix(live_server.url)
    )
    shot(page, "refund-02a-pay-page-link")

    # The payer opens the link, gives the address twice, confirms it needs no memo.
    page.goto(claim)
    expect(page.locator("#refund-amount")).to_have_text("40 USDC")
    shot(page, "refund-02-payer-page")
    page.get_by_label("Refund address").fill("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293Bc")
    page.get_by_label("The same address again").fill(PAYER_REFUND_ADDRESS)
    page.get_by_label("This address needs no memo or tag").check()
    page.get_by_role("button", name="Send my refund here").click()
    expect(page.locator("#refund-address-error")).to_contain_text("checksum")
    shot(page, "refund-03-bad-checksum")
    page.get_by_label("Refund address").fill(PAYER_REFUND_ADDRESS)
    page.get_by_label("This address needs no memo or tag").check()
    page.get_by_role("button", name="Send my refund here").click()
    expect(page.locator(".pay-banner")).to_contain_text("Address received")
    shot(page, "refund-04-address-given")

    # The merchant sends it from the browser wallet on the invoice's refunds tab.
    page.goto(f"{live_server.url}/invoices/{invoice.pk}/?tab=refunds")
    send = page.get_by_role("button", name="Send with browser wallet")
    expect(send).to_be_visible()
    shot(page, "refund-05-merchant-tab")
    send.click()
    expect(page.locator("#refunds-tab .badge-refund-sent")).to_be_visible(timeout=60_000)
    assert wallet.sent, wallet.calls
    refund.refresh_from_db()
    assert refund.status == RefundStatus.SENT and refund.tx_hash

    watcher = Watcher(network.pk)
    watcher.start()
    try:
        anvil.mine(2)
        expect(page.locator("#refunds-tab .badge-refund-confirmed")).to_be_visible(timeout=60_000)
        expect(page.locator("#refunds-tab")).to_contain_text("Refunded")
        shot(page, "refund-06-confirmed")

        page.goto(claim)
        expect(page.get_by_role("heading", name="Refunded")).to_be_visible()
        shot(page, "refund-07-payer-refunded")
    finally:
        watcher.stop()

    assert watcher.errors == []
    refund.refresh_from_db()
    invoice.refresh_from_db()
    assert refund.status == RefundStatus.CONFIRMED
    assert refund.from_address == MERCHANT_WALLET.lower()
    assert refund.address == PAYER_REFUND_ADDRESS.lower()
    assert invoice.status == InvoiceStatus.FAILED
    assert invoice.refund_state == RefundState.FULL
    assert (
        payment.order_number
        in refund.invoice.events.get(type="refund.confirmed").data["refund"]["order_number"]
    )
    assert account_balance(merchant_account(merchant), "USD") == Decimal(0)
    assert account_balance(holdings_account("anvil"), "USDC") == Decimal(0)
    # The one 400 the browser logs is the refused checksum above, on purpose.
    problems = [p for p in page.problems if "status of 400" not in p]  # type: ignore[attr-defined]
    assert len(page.problems) - len(problems) == 1  # type: ignore[attr-defined]
    assert problems == [], "\n".join(problems)
