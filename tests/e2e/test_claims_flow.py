"""A merchant claims two invoices' deposits in a real browser: Chromium, anvil, an injected
EIP-1193 wallet (tests/e2e/injected_wallet.py) forwarding to anvil's unlocked account, the
real watcher task. Screenshots land in test-artifacts/e2e/ (gitignored)."""

from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect

from tests.chain import running_anvil
from tests.claims.helpers import ACCOUNT, ClaimShop
from tests.e2e.injected_wallet import InjectedWallet
from tests.e2e.test_invoice_flow import shot
from tests.e2e.test_invoice_flow import watched_page as watched_page  # a fixture
from tests.factories import PASSWORD, MembershipFactory, UserFactory
from wallets.ledger import account_balance, claimed_account
from wallets.models import Claim, ClaimStatus

pytestmark = pytest.mark.e2e
USDC = 10**6


@pytest.fixture
def owner(transactional_db):
    user = UserFactory(email="olivia@acme.test", first_name="Olivia", last_name="Owner")
    MembershipFactory(user=user, role="owner", merchant__name="Acme Tools")
    return user


@pytest.fixture
def shop(owner):
    with running_anvil() as rpc_url:
        yield ClaimShop(owner.memberships.get().merchant, rpc_url)


def sign_in(page: Page, live_server, owner) -> None:
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Email").fill(owner.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Good to see you")


def test_merchant_claims_two_invoices_with_the_browser_wallet(
    chromium_path, live_server, owner, shop, watched_page
):
    page: Page = watched_page
    first, second = shop.invoice("100.00"), shop.invoice("40.00")
    for invoice, units in ((first, 100 * USDC), (second, 40 * USDC)):
        payment = shop.start(invoice)
        shop.pay(payment.deposit_address.address, units)
    shop.watch(), shop.confirm()
    wallet = InjectedWallet(shop.rpc_url, account=ACCOUNT)
    wallet.install(page)
    before = shop.balance("USDC")

    sign_in(page, live_server, owner)
    expect(page.get_by_text("Claim all")).to_be_visible()  # the dashboard's uncollected card
    shot(page, "claims-01-dashboard")
    page.get_by_role("link", name="Claim all").click()
    cards = page.locator("tr.claim-card")
    expect(cards).to_have_count(2)
    expect(page.locator(".claim-group .card-head")).to_contain_text("140 USDC")
    shot(page, "claims-02-page")

    page.get_by_role("button", name="Claim selected").click()
    dialog = page.locator("#claim-dialog")
    expect(dialog.get_by_role("heading", name="Sign claim")).to_be_visible()
    expect(dialog).to_contain_text("Moves 140 USDC from 2 deposit addresses")
    expect(dialog).to_contain_text("Estimated gas")
    shot(page, "claims-03-sign")
    dialog.get_by_role("button", name="Sign claim").click()
    # The page records the transaction and reloads: the cards say the claim is on its way.
    expect(page.locator("tr.claim-card").first).to_contain_text("Claim on its way")
    assert len(wallet.sent) == 1
    claim = Claim.objects.get()
    assert (claim.status, claim.tx_hash) == (ClaimStatus.PENDING, wallet.sent[0])
    shot(page, "claims-04-pending")

    shop.watch(), shop.confirm()
    page.reload()
    expect(page.locator("tr.claim-card")).to_have_count(0)
    expect(page.get_by_text("Nothing to claim")).to_be_visible()
    expect(page.locator("table").last).to_contain_text("Confirmed")
    shot(page, "claims-05-claimed")
    assert shop.balance("USDC") == before + 140 * USDC

    page.get_by_role("link", name="Balances").first.click()
    split = page.locator("section", has_text="Forwarder holdings")
    expect(split).to_contain_text("140")
    shot(page, "claims-06-balances")
    assert account_balance(claimed_account("anvil", shop.merchant), "USDC") == Decimal(-140)

    page.goto(f"{live_server.url}/invoices/{first.pk}/?tab=payments")
    expect(page.locator("tr.claim-transfer")).to_contain_text("Claim")
    expect(page.locator("tr.claim-transfer")).to_contain_text("ETH")  # its blockchain fee
    shot(page, "claims-07-transfers-tab")
    page.goto(f"{live_server.url}/wallet/")
    expect(page.get_by_role("heading", name="Account address + forwarders").first).to_be_visible()
    expect(page.get_by_text("affects new deposit addresses only").first).to_be_visible()
    shot(page, "claims-09-wallet")
    assert page.problems == [], "\n".join(page.problems)  # type: ignore[attr-defined]


def test_a_wallet_on_another_chain_is_refused_and_the_calldata_offered(
    chromium_path, live_server, owner, shop, watched_page
):
    page: Page = watched_page
    invoice = shop.invoice("10.00")
    payment = shop.start(invoice)
    shop.pay(payment.deposit_address.address, 10 * USDC)
    shop.watch(), shop.confirm()
    wallet = InjectedWallet(shop.rpc_url, account=ACCOUNT, chain_id=1)
    wallet.install(page)
    sign_in(page, live_server, owner)
    page.goto(f"{live_server.url}/invoices/{invoice.pk}/?tab=claims")
    page.locator("#claims-tab").get_by_role("button", name="Claim").click()
    dialog = page.locator("#claim-dialog")
    dialog.get_by_role("button", name="Sign claim").click()
    expect(dialog.locator("[data-claim-status]")).to_contain_text("Your wallet is on chain 1")
    assert wallet.sent == []
    dialog.get_by_text("No browser wallet? Send this call from any wallet").click()
    expect(dialog.get_by_label("Data")).to_have_value(Claim.objects.get().calldata)
    shot(page, "claims-08-wrong-chain")
    assert Claim.objects.get().status == ClaimStatus.PREPARED
    assert page.problems == [], "\n".join(page.problems)  # type: ignore[attr-defined]
