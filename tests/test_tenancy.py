"""Every merchant page tried from inside and outside the tenant.

alice owns Acme, bob is Acme staff, victor an Acme viewer, charlie owns Globex and has no
business with Acme. An object of Acme's must be "not found" for charlie, exactly as if it did
not exist, whatever the method, and nothing of Acme's may change or show.

To cover a new URL add one `Case` line to CASES; `test_every_merchant_url_has_a_tenancy_case`
fails until you do.
"""

import copy
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.cache import cache
from django.db import connection, transaction
from django.test import override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from checkout.models import Payment, RefundKind, RefundRequest
from checkout.refunds import refund_give_address, refund_request
from config.celery import app as celery_app
from customers.models import Customer
from invoices import views as invoice_views
from invoices.models import (
    CallbackDelivery,
    CreditNote,
    EmailDelivery,
    Invoice,
    InvoiceEvent,
    LineItem,
    PaymentMethod,
    Receipt,
    TaxRate,
)
from invoices.services import credit_note_issue, invoice_mark_paid
from merchants.access import SESSION_KEY
from merchants.integrations import api_key_create, webhook_endpoint_create
from merchants.models import (
    ApiKey,
    InvoiceCallbackSigner,
    Membership,
    Merchant,
    Role,
    User,
    WebhookEndpoint,
)
from tests.conftest import _client_for
from tests.evm import seed_networks
from tests.factories import (
    PASSWORD,
    CustomerFactory,
    MembershipFactory,
    MerchantFactory,
    make_invoice,
)
from wallets.addresses import deposit_address_allocate, wallet_set
from wallets.models import Asset, Claim, DepositAddress, Network, Transfer, Wallet

TENANT_URLCONFS = (
    "merchants.urls",
    "customers.urls",
    "invoices.urls",
    "wallets.urls",
    "checkout.urls",
)
# Pages outside the tenant door (`merchant_view`); each has its own test below, the payer's
# downloads by token in tests/invoices/test_delivery_views.py.
NOT_TENANT_SCOPED = {
    "merchant_create",
    "merchant_switch",
    "public_invoice_pdf",
    "public_receipt_pdf",
    # The payer's payment page and its start action: public by design, reached by the
    # invoice's unguessable token, never by a merchant's session. Tried below and in depth
    # in tests/checkout/test_pages.py.
    "pay",
    "pay_start",
    # The payer's refund page, by the refund's token: tests/checkout/test_refund_pages.py.
    "refund_page",
}


@dataclass
class World:
    acme: Merchant
    customer: Customer
    draft: Invoice
    open: Invoice
    permanent: Invoice
    paid: Invoice
    unresolved: Invoice
    failed_email: EmailDelivery
    membership: Membership
    api_key: ApiKey
    endpoint: WebhookEndpoint
    delivery: CallbackDelivery
    deposit: DepositAddress
    tax_rate: TaxRate
    payment_method: PaymentMethod
    credit_note: CreditNote
    refund: RefundRequest
    claim: Claim


def _refund(open_invoice: Invoice, deposit: DepositAddress) -> RefundRequest:
    """A refund of 1 of the 5 USDT that reached the open invoice's payment, with an address."""
    usdt = Asset.objects.get(network__slug="ethereum", symbol="USDT")
    payment = Payment.objects.create(
        invoice=open_invoice,
        number=1,
        order_number=f"{open_invoice.reference}-01",
        asset=usdt,
        network=usdt.network,
        deposit_address=deposit,
        status="processing",
        invoice_amount="300.00",
        fee_payer="merchant",
        rate="1",
        rate_source="static",
        rate_at=timezone.now(),
        amount_due=300_000_000,
        received=5_000_000,
        confirmed=5_000_000,
    )
    refund = refund_request(
        payment=payment, kind=RefundKind.MANUAL, reason="Returned", amount=Decimal(1_000_000)
    )
    address = "0x" + "5" * 40
    return refund_give_address(refund=refund, address=address, again=address, no_memo_needed=True)


def _funded_deposit(acme: Merchant) -> DepositAddress:
    """An Acme deposit address that received money, for the pages that list addresses."""
    from tests.wallets.test_addresses import ABANDON_ACCOUNT_1_XPUB

    seed_networks()
    wallet_set(merchant=acme, xpub=ABANDON_ACCOUNT_1_XPUB)
    deposit = deposit_address_allocate(merchant=acme)
    network = Network.objects.get(slug="ethereum")
    Transfer.objects.create(
        network=network,
        asset=Asset.objects.get(network=network, symbol="USDT"),
        deposit_address=deposit,
        tx_hash="0x" + "ab" * 32,
        log_index=0,
        block_number=1,
        block_hash="0x" + "cd" * 32,
        from_address="0x" + "1" * 40,
        to_address=deposit.address,
        amount=5_000_000,
        status="confirmed",
    )
    return deposit


def _build_world() -> World:
    """Acme with one object of every kind a merchant page can name, alice, bob and victor in
    it, and charlie owning Globex: the people and shops of tests/conftest.py's fixtures."""
    acme = MerchantFactory(name="Acme Tools")
    globex = MerchantFactory(name="Globex")
    alice = MembershipFactory(merchant=acme, role=Role.OWNER, user__email="alice@acme.test").user
    bob = MembershipFactory(merchant=acme, role=Role.STAFF, user__email="bob@acme.test").user
    MembershipFactory(merchant=acme, role=Role.VIEWER, user__email="victor@acme.test")
    MembershipFactory(merchant=globex, role=Role.OWNER, user__email="charlie@globex.test")
    acme_customer = CustomerFactory(merchant=acme, name="Ada Lovelace", email="ada@example.org")
    endpoint = webhook_endpoint_create(merchant=acme, url="https://hooks.acme.example/in")
    open_invoice = make_invoice(acme, customer=acme_customer, issue=True)
    paid = invoice_mark_paid(
        invoice=make_invoice(acme, customer=acme_customer, issue=True), reference="WIRE-1"
    )
    unresolved = make_invoice(acme, customer=acme_customer, issue=True)
    Invoice.objects.filter(pk=unresolved.pk).update(status="unresolved")
    deposit = _funded_deposit(acme)
    return World(
        refund=_refund(open_invoice, deposit),
        acme=acme,
        unresolved=unresolved,
        customer=acme_customer,
        draft=make_invoice(acme, customer=acme_customer, items=[("Audit", "1", "90.00")]),
        open=open_invoice,
        permanent=make_invoice(acme, customer=acme_customer, issue=True, kind="permanent"),
        paid=paid,
        failed_email=EmailDelivery.objects.create(
            invoice=open_invoice,
            kind="invoice",
            key="invoice:world",
            recipients=[acme_customer.email],
            status="failed",
            error="The provider is down.",
        ),
        membership=Membership.objects.get(user=bob, merchant=acme),
        api_key=api_key_create(merchant=acme, name="Shop", by=alice).key,
        endpoint=endpoint,
        delivery=CallbackDelivery.objects.filter(invoice=open_invoice).first(),
        deposit=deposit,
        tax_rate=TaxRate.objects.create(merchant=acme, name="VAT", percent="20"),
        payment_method=PaymentMethod.objects.create(
            merchant=acme, name="SEPA", iban="DE89370400440532013000"
        ),
        credit_note=credit_note_issue(
            invoice=make_invoice(acme, customer=acme_customer, issue=True), reason="Returned"
        ),
        claim=Claim.objects.create(
            merchant=acme,
            network=Network.objects.get(slug="ethereum"),
            factory="0x" + "f" * 40,
            destination="0x" + "d" * 40,
            calldata="0x",
        ),
    )


@dataclass
class _Built:
    world: World
    media: Path
    # Each person's session cookie from a real sign-in, and when it was made (see `client_for`).
    sessions: dict[str, tuple[float, str]] = field(default_factory=dict)
    # What Acme owns in this world (`_acme_state`), taken once: every test starts from it.
    acme_state: dict | None = None


# The settings the world is built under and its people sign in under: tests/conftest.py's.
def _module_settings(media: Path):
    return override_settings(
        MEDIA_ROOT=media,
        SITE_URL="http://testserver",
        RATE_STATIC_APPROVED=["*"],
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    )


# A kept sign-in is lent for this long, well inside ACCOUNT_REAUTHENTICATION_TIMEOUT (5 min),
# so a money change in a test still finds a recent sign-in; an older one is signed in anew.
SIGN_IN_KEPT_SECONDS = 60


@pytest.fixture(scope="module")
def _built_world(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[_Built]:
    """The world, built once for this module's ~500 tests instead of once for each (it
    was most of their time). It is written inside a transaction left open for the module; each
    test's own transaction (the `db` fixture) nests in it as a savepoint and is rolled back as
    usual, so every test still starts from exactly this world, and the module's transaction is
    rolled back at its end. Built under the settings tests/conftest.py gives every test."""
    media = tmp_path_factory.mktemp("tenancy-media")
    celery_app.conf.task_always_eager = True
    with django_db_blocker.unblock():
        cache.clear()
        outer = transaction.atomic()
        outer.__enter__()
        try:
            with _module_settings(media):
                world = _build_world()
        except BaseException:
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)
            raise
    try:
        yield _Built(world=world, media=media)
    finally:
        with django_db_blocker.unblock():
            transaction.set_rollback(True)
            outer.__exit__(None, None, None)


@pytest.fixture
def _signed_in(_built_world, django_db_blocker) -> dict[str, str]:
    """Session cookies of alice, bob, victor and charlie, each from a real POST to the sign-in
    page made in the module's transaction (so every test's rollback returns to it), at most
    SIGN_IN_KEPT_SECONDS old. Signing in was a quarter of these tests' time. Requested before
    `db`, so a stale one is renewed in the module's transaction, not in a test's."""
    from django.conf import settings as django_settings
    from django.db import connection
    from django.test import Client

    sessions = _built_world.sessions
    if connection.in_atomic_block and len(connection.savepoint_ids) > 0:
        return {}  # a test's transaction is already open: `client_for` signs in each time
    now = time.monotonic()
    for email in ("alice@acme.test", "bob@acme.test", "victor@acme.test", "charlie@globex.test"):
        if email in sessions and now - sessions[email][0] < SIGN_IN_KEPT_SECONDS:
            continue
        with django_db_blocker.unblock(), _module_settings(_built_world.media):
            cache.clear()
            client = Client()
            response = client.post("/login/", {"login": email, "password": PASSWORD})
            assert response.status_code == 302, response.content[:2000]
            cookie = client.cookies[django_settings.SESSION_COOKIE_NAME].value
        sessions[email] = (now, cookie)
    return {email: cookie for email, (_at, cookie) in sessions.items()}


@pytest.fixture
def world(_built_world, _signed_in, db, settings) -> World:
    """This test's copy of the module's world (a test may change the objects it is given)."""
    settings.MEDIA_ROOT = _built_world.media
    return copy.deepcopy(_built_world.world)


@pytest.fixture
def acme_at_start(_built_world, world) -> dict:
    """Everything Acme owns as the test starts, which is the module's world for every test
    (each rolls back what it did), so it is read once per module rather than twice a test. A
    test that changed Acme before its request would find it differs, and fail."""
    if _built_world.acme_state is None:
        _built_world.acme_state = _acme_state(world.acme)
    return _built_world.acme_state


@pytest.fixture
def client_for(_signed_in):
    """A browser signed in as tests/conftest.py's `client_for` signs in, through the real
    sign-in page: for the world's people, a new browser holding the session cookie of a
    sign-in kept from the module's transaction (each test changes that session only inside its
    own rollback); anyone else signs in now."""
    from django.conf import settings as django_settings
    from django.test import Client

    def make(user):
        cookie = _signed_in.get(user.email)
        if cookie is None:
            return _client_for(Client, user)
        client = Client()
        client.cookies[django_settings.SESSION_COOKIE_NAME] = cookie
        return client

    return make


# The people of tests/conftest.py, the ones in the world.
@pytest.fixture
def acme(world):
    return world.acme


@pytest.fixture
def globex(world):
    return Merchant.objects.get(name="Globex")


@pytest.fixture
def acme_customer(world):
    return world.customer


@pytest.fixture
def alice(world):
    return User.objects.get(email="alice@acme.test")


@pytest.fixture
def bob(world):
    return User.objects.get(email="bob@acme.test")


@pytest.fixture
def victor(world):
    return User.objects.get(email="victor@acme.test")


@pytest.fixture
def charlie(world):
    return User.objects.get(email="charlie@globex.test")


def _invoice_form(w: World) -> dict:
    return {
        "customer": w.customer.pk,
        "currency": "USD",
        "kind": "one_time",
        "pricing_mode": "no_timer",
        "fee_payer": "merchant",
        "items-0-name": "Review",
        "items-0-quantity": "3",
        "items-0-unit_price": "40.00",
        "action": "save",
    }


def _settings_form(w: World) -> dict:
    return {
        "name": "Renamed",
        "default_currency": "EUR",
        "default_fee_payer": "payer",
        "invoice_prefix": "R-",
        "brand_colour": "#112233",
        "paper_size": "letter",
        "send_reminders": "on",
    }


def _customer_form(w: World) -> dict:
    return {"name": "Zed Shaw", "email": "zed@example.org"}


def _inline_form(w: World) -> dict:
    return {"new_customer-name": "Zed Shaw", "new_customer-email": "zed@example.org"}


def _invite_form(w: World) -> dict:
    return {"email": "new@acme.test", "role": "staff"}


def _demote_form(w: World) -> dict:
    return {"role": "viewer"}


def _remove_form(w: World) -> dict:
    return {"remove": "1"}


def _mark_paid_form(w: World) -> dict:
    return {"reference": "WIRE-7"}


def _xpub_form(w: World) -> dict:
    from tests.wallets.test_addresses import ABANDON_XPUB

    return {"xpub": ABANDON_XPUB}


def _claim_form(w: World) -> dict:
    return {"network": w.deposit.transfers.first().network_id, "deposit": w.deposit.pk}


def _claim_sent_form(w: World) -> dict:
    return {"tx_hash": "0x" + "9" * 64, "sender": "0x" + "d" * 40, "chain_id": "1"}


def _tracking_form(w: World) -> dict:
    return {"tracking_id": "trk-1", "callback_url": "https://shop.example/cb"}


def _endpoint_form(w: World) -> dict:
    return {"url": "https://erp.example/hooks", "events": ["invoice.paid"], "enabled": "on"}


def _credit_form(w: World) -> dict:
    return {"reason": "Returned"}


def _tax_rate_form(w: World) -> dict:
    return {"name": "GST", "percent": "10"}


def _payment_method_form(w: World) -> dict:
    return {"name": "Wire", "kind": "bank_transfer", "iban": "GB33BUKB20201555555555"}


def _key_form(w: World) -> dict:
    return {"name": "ERP"}


@dataclass(frozen=True)
class Case:
    url: str
    method: str
    min_role: str
    ok: int  # what a member whose role suffices gets
    obj: str = ""  # the World attribute whose pk the URL names: an object of Acme's
    action: str = ""
    data: Callable[[World], dict] = field(default=lambda w: {})
    outsider: int | None = None  # URLs without an object: what charlie gets in his own business
    writes: bool = False  # the member's request changes Acme's data
    shows_acme: bool = False  # the member's page lists Acme's customer or deposit address

    @property
    def id(self) -> str:
        return " ".join(filter(None, [self.method, self.url, self.action]))

    def kwargs(self, w: World, pk: int | None = None) -> dict | None:
        if not self.obj:
            return None
        kwargs = {"pk": getattr(w, self.obj).pk if pk is None else pk}
        return {**kwargs, "action": self.action} if self.action else kwargs


VIEWER, STAFF, OWNER = Role.VIEWER, Role.STAFF, Role.OWNER
GET, POST = "GET", "POST"
INVOICE, CUSTOMER = _invoice_form, _customer_form

CASES = [
    Case("dashboard", GET, VIEWER, 200, outsider=200, shows_acme=True),
    Case("invoice_list", GET, VIEWER, 200, outsider=200, shows_acme=True),
    Case("invoice_new", GET, STAFF, 200, outsider=200, shows_acme=True),
    Case("invoice_new", POST, STAFF, 302, data=INVOICE, outsider=422, writes=True),
    Case("invoice_item_row", GET, STAFF, 200, outsider=200),
    Case("invoice_totals", POST, STAFF, 200, data=INVOICE, outsider=200),
    Case("invoice_detail", GET, VIEWER, 200, obj="draft"),
    Case("invoice_detail", POST, VIEWER, 200, obj="draft"),
    Case("invoice_edit", GET, STAFF, 200, obj="draft"),
    Case("invoice_edit", POST, STAFF, 302, obj="draft", data=INVOICE, writes=True),
    Case("invoice_action", POST, STAFF, 302, obj="draft", action="issue", writes=True),
    Case("invoice_action", POST, STAFF, 302, obj="draft", action="void", writes=True),
    Case("invoice_action", POST, STAFF, 302, obj="permanent", action="close", writes=True),
    Case("invoice_action", POST, STAFF, 302, obj="open", action="cancel", writes=True),
    Case("invoice_mark_paid", POST, STAFF, 302, obj="open", data=_mark_paid_form, writes=True),
    Case("invoice_integration", POST, STAFF, 302, obj="open", data=_tracking_form, writes=True),
    Case(
        "invoice_accept",
        POST,
        STAFF,
        302,
        obj="unresolved",
        data=lambda w: {"note": "tip"},
        writes=True,
    ),
    Case("invoice_preview", POST, STAFF, 200, data=INVOICE, outsider=200),
    Case("invoice_pdf", GET, VIEWER, 200, obj="open"),
    Case("invoice_pdf", POST, VIEWER, 200, obj="open"),
    Case("invoice_receipt", GET, VIEWER, 200, obj="paid"),
    Case("invoice_receipt", POST, VIEWER, 200, obj="paid"),
    Case("invoice_email_preview", GET, VIEWER, 200, obj="open"),
    Case("invoice_email_preview", POST, VIEWER, 200, obj="open"),
    Case("invoice_send", POST, STAFF, 302, obj="open", writes=True),
    Case("email_retry", POST, STAFF, 302, obj="failed_email", writes=True),
    Case("customer_list", GET, VIEWER, 200, outsider=200, shows_acme=True),
    Case("customer_new", GET, STAFF, 200, outsider=200),
    Case("customer_new", POST, STAFF, 302, data=CUSTOMER, outsider=302, writes=True),
    Case("customer_inline_new", GET, STAFF, 200, outsider=200),
    Case("customer_inline_new", POST, STAFF, 200, data=_inline_form, outsider=200, writes=True),
    Case("customer_edit", GET, STAFF, 200, obj="customer"),
    Case("customer_edit", POST, STAFF, 302, obj="customer", data=CUSTOMER, writes=True),
    Case("customer_archive", POST, STAFF, 302, obj="customer", writes=True),
    Case("merchant_settings", GET, OWNER, 200, outsider=200),
    Case("merchant_settings", POST, OWNER, 302, data=_settings_form, outsider=302, writes=True),
    Case("member_list", GET, OWNER, 200, outsider=200),
    Case("member_list", POST, OWNER, 302, data=_invite_form, outsider=302, writes=True),
    Case("member_update", POST, OWNER, 302, obj="membership", data=_demote_form, writes=True),
    Case("member_update", POST, OWNER, 302, obj="membership", data=_remove_form, writes=True),
    Case("wallet_settings", GET, VIEWER, 200, outsider=200),
    Case("wallet_settings", POST, OWNER, 302, data=_xpub_form, outsider=302, writes=True),
    Case("wallet_addresses_csv", GET, VIEWER, 200, outsider=200, shows_acme=True),
    Case("balances", GET, VIEWER, 200, outsider=200),
    Case("ledger", GET, VIEWER, 200, outsider=200),
    Case("transfer_list", GET, VIEWER, 200, outsider=200),
    Case("invoice_payments", GET, VIEWER, 200, obj="open"),
    Case("invoice_payments", POST, VIEWER, 200, obj="open"),
    Case("claims", GET, VIEWER, 200, outsider=200),
    Case("claims_summary", GET, VIEWER, 200, outsider=200),
    Case("invoice_claims", GET, VIEWER, 200, obj="open"),
    Case("invoice_claims", POST, VIEWER, 200, obj="open"),
    # Acme's deposit is not a forwarder of a deployed factory: refused with a message, for
    # Acme's staff and (as "not yours") for charlie alike.
    Case("claim_prepare", POST, STAFF, 400, data=_claim_form, outsider=400),
    Case("claim_sent", POST, STAFF, 200, obj="claim", data=_claim_sent_form, writes=True),
    Case("security_log", GET, OWNER, 200, outsider=200),
    Case(
        "security_log",
        POST,
        OWNER,
        302,
        data=lambda w: {"require_two_factor": "on"},
        outsider=302,
        writes=True,
    ),
    Case("api_key_list", GET, OWNER, 200, outsider=200),
    Case("api_key_list", POST, OWNER, 200, data=_key_form, outsider=200, writes=True),
    Case("api_key_revoke", POST, OWNER, 302, obj="api_key", writes=True),
    Case("webhook_list", GET, OWNER, 200, outsider=200),
    Case("webhook_list", POST, OWNER, 302, data=_endpoint_form, outsider=302, writes=True),
    Case("webhook_detail", GET, OWNER, 200, obj="endpoint"),
    Case("webhook_detail", POST, OWNER, 302, obj="endpoint", data=_endpoint_form, writes=True),
    Case("webhook_rotate", POST, OWNER, 302, obj="endpoint", writes=True),
    Case("webhook_test", POST, OWNER, 302, obj="endpoint", writes=True),
    Case("invoice_signer_rotate", POST, OWNER, 302, outsider=302, writes=True),
    Case("callback_redeliver", POST, STAFF, 302, obj="delivery", writes=True),
    Case("tax_rate_list", GET, OWNER, 200, outsider=200),
    Case("tax_rate_list", POST, OWNER, 302, data=_tax_rate_form, outsider=302, writes=True),
    Case("tax_rate_edit", GET, OWNER, 200, obj="tax_rate"),
    Case("tax_rate_edit", POST, OWNER, 302, obj="tax_rate", data=_tax_rate_form, writes=True),
    Case("tax_rate_delete", POST, OWNER, 302, obj="tax_rate", writes=True),
    Case("payment_method_list", GET, OWNER, 200, outsider=200),
    Case(
        "payment_method_list",
        POST,
        OWNER,
        302,
        data=_payment_method_form,
        outsider=302,
        writes=True,
    ),
    Case("payment_method_edit", GET, OWNER, 200, obj="payment_method"),
    Case(
        "payment_method_edit",
        POST,
        OWNER,
        302,
        obj="payment_method",
        data=_payment_method_form,
        writes=True,
    ),
    Case("payment_method_delete", POST, OWNER, 302, obj="payment_method", writes=True),
    Case("invoice_credit", GET, STAFF, 200, obj="open"),
    Case("invoice_credit", POST, STAFF, 302, obj="open", data=_credit_form, writes=True),
    Case("credit_note_pdf", GET, VIEWER, 200, obj="credit_note"),
    Case("credit_note_pdf", POST, VIEWER, 200, obj="credit_note"),
    Case("invoice_refunds", GET, VIEWER, 200, obj="open"),
    Case("invoice_refunds", POST, VIEWER, 200, obj="open"),
    Case(
        "invoice_refund_new",
        POST,
        STAFF,
        302,
        obj="open",
        data=lambda w: {"payment": w.refund.payment_id, "amount": "1", "reason": "Broken"},
        writes=True,
    ),
    # Nothing of this unresolved invoice arrived: the member is told so, nothing changes.
    Case("invoice_refund_resolve", POST, STAFF, 302, obj="unresolved"),
    Case(
        "refund_sent",
        POST,
        STAFF,
        302,
        obj="refund",
        data=lambda w: {"tx_hash": "0x" + "e" * 64},
        writes=True,
    ),
    Case(
        "refund_outside",
        POST,
        STAFF,
        302,
        obj="refund",
        data=lambda w: {"reference": "Wire 7"},
        writes=True,
    ),
    Case(
        "refund_decline",
        POST,
        STAFF,
        302,
        obj="refund",
        data=lambda w: {"reason": "Kept as credit"},
        writes=True,
    ),
]
IDS = [case.id for case in CASES]
OBJECT_CASES = [case for case in CASES if case.obj]
COLLECTION_CASES = [case for case in CASES if not case.obj]


def _url(case: Case, w: World, pk: int | None = None) -> str:
    return reverse(case.url, kwargs=case.kwargs(w, pk))


def _send(client, case: Case, w: World, *, pk: int | None = None):
    url = _url(case, w, pk)
    if case.method == GET:
        return client.get(url)
    return client.post(url, case.data(w))


def _content(response) -> bytes:
    """The body of a page or of a streamed download alike."""
    return b"".join(response.streaming_content) if response.streaming else response.content


@functools.cache
def _acme_sql(acme_pk: int) -> dict[str, tuple[str, tuple]]:
    """The state's queries as SQL, built once per module's Acme: building twenty querysets
    cost more than running them, three hundred times a module."""
    return {name: rows.query.sql_with_params() for name, rows in _acme_queries(acme_pk).items()}


def _acme_state(acme: Merchant) -> dict:
    """Everything Acme owns, to prove a refused request changed nothing: every row of it, as
    the database holds it."""
    state = {}
    with connection.cursor() as cursor:
        for name, (sql, params) in _acme_sql(acme.pk).items():
            cursor.execute(sql, params)
            state[name] = cursor.fetchall()
    assert len(state["merchant"]) == 1
    return state


def _acme_queries(acme: int) -> dict:
    return {
        "merchant": Merchant.objects.filter(pk=acme).values(),
        "invoices": Invoice.objects.filter(merchant=acme).order_by("pk").values(),
        "items": LineItem.objects.filter(invoice__merchant=acme).order_by("pk").values(),
        "events": InvoiceEvent.objects.filter(invoice__merchant=acme).order_by("pk").values("pk"),
        "emails": EmailDelivery.objects.filter(invoice__merchant=acme).order_by("pk").values(),
        "receipts": Receipt.objects.filter(invoice__merchant=acme).order_by("pk").values(),
        "customers": Customer.objects.filter(merchant=acme).order_by("pk").values(),
        "members": Membership.objects.filter(merchant=acme).order_by("pk").values(),
        "wallet": Wallet.objects.filter(merchant=acme).values(),
        "addresses": DepositAddress.objects.filter(merchant=acme).order_by("pk").values(),
        "api_keys": ApiKey.objects.filter(merchant=acme).order_by("pk").values(),
        "endpoints": WebhookEndpoint.objects.filter(merchant=acme).order_by("pk").values(),
        "signers": InvoiceCallbackSigner.objects.filter(merchant=acme).values(),
        "callbacks": CallbackDelivery.objects.filter(merchant=acme).order_by("pk").values(),
        "tax_rates": TaxRate.objects.filter(merchant=acme).order_by("pk").values(),
        "credit_notes": CreditNote.objects.filter(merchant=acme).order_by("pk").values(),
        "payment_methods": PaymentMethod.objects.filter(merchant=acme).order_by("pk").values(),
        "refunds": RefundRequest.objects.filter(invoice__merchant=acme).order_by("pk").values(),
        "claims": Claim.objects.filter(merchant=acme).order_by("pk").values(),
    }


def _role_allows(role: str, case: Case) -> bool:
    return Membership(role=role).has_role(case.min_role)


# Coverage -------------------------------------------------------------------------------------


def _names_in(patterns, inside: bool = False) -> set[str]:
    names: set[str] = set()
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            module = getattr(pattern.urlconf_module, "__name__", pattern.urlconf_name)
            names |= _names_in(pattern.url_patterns, inside=module in TENANT_URLCONFS)
        elif isinstance(pattern, URLPattern) and inside:
            names.add(pattern.name)
    return names


def test_every_merchant_url_has_a_tenancy_case():
    app_urls = _names_in(get_resolver().url_patterns)
    assert "invoice_detail" in app_urls  # the walk really found the apps' URLconfs
    covered = {case.url for case in CASES}
    assert app_urls - NOT_TENANT_SCOPED - covered == set()
    assert covered - app_urls == set()


def test_every_invoice_action_has_a_tenancy_case():
    covered = {case.action for case in CASES if case.url == "invoice_action"}
    assert covered == set(invoice_views.ACTIONS)


def test_every_page_serving_get_is_tried_with_post_too_when_it_names_an_object():
    get_objects = {case.url for case in OBJECT_CASES if case.method == GET}
    post_objects = {case.url for case in OBJECT_CASES if case.method == POST}
    assert get_objects <= post_objects


# Members --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_owner_may_use_every_page(case, world, client_for, alice):
    response = _send(client_for(alice), case, world)
    assert response.status_code == case.ok


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.writes], ids=[c.id for c in CASES if c.writes]
)
def test_owner_request_really_changes_acme_so_refusals_below_are_meaningful(
    case, world, client_for, alice, acme_at_start
):
    before = acme_at_start
    _send(client_for(alice), case, world)
    assert _acme_state(world.acme) != before


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_staff_teammate_may_use_staff_pages_and_is_refused_owner_pages(
    case, world, client_for, bob, acme_at_start
):
    before = acme_at_start
    response = _send(client_for(bob), case, world)
    if _role_allows(Role.STAFF, case):
        assert response.status_code == case.ok
    else:
        assert response.status_code == 403
        assert _acme_state(world.acme) == before


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_viewer_may_read_and_is_refused_every_write(case, world, client_for, victor, acme_at_start):
    before = acme_at_start
    response = _send(client_for(victor), case, world)
    if case.min_role == Role.VIEWER:
        assert response.status_code == 200
    else:
        assert response.status_code == 403
        assert _acme_state(world.acme) == before


# Outsider -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", OBJECT_CASES, ids=[c.id for c in OBJECT_CASES])
def test_outsider_gets_404_for_acme_objects_and_changes_nothing(
    case, world, client_for, charlie, acme_at_start
):
    before = acme_at_start
    response = _send(client_for(charlie), case, world)
    assert response.status_code == 404
    assert b"Ada Lovelace" not in response.content
    assert world.draft.reference.encode() not in response.content
    assert _acme_state(world.acme) == before


@pytest.mark.parametrize("case", OBJECT_CASES, ids=[c.id for c in OBJECT_CASES])
def test_outsider_cannot_tell_acme_objects_from_missing_ones(case, world, client_for, charlie):
    client = client_for(charlie)
    acme_response = _send(client, case, world)
    missing_response = _send(client, case, world, pk=999_999)
    assert (acme_response.status_code, acme_response.content) == (
        missing_response.status_code,
        missing_response.content,
    )


@pytest.mark.parametrize("case", COLLECTION_CASES, ids=[c.id for c in COLLECTION_CASES])
def test_outsider_works_in_own_business_and_never_sees_or_touches_acme(
    case, world, client_for, alice, charlie, acme_at_start
):
    before = acme_at_start
    response = _send(client_for(charlie), case, world)
    assert response.status_code == case.outsider
    body = _content(response)
    assert b"Ada Lovelace" not in body
    assert b"Acme Tools" not in body
    assert world.deposit.address.encode() not in body.lower()
    assert _acme_state(world.acme) == before
    if case.shows_acme:
        # The same page does show Acme's data to Acme's owner: the checks above can fail.
        owner_body = _content(_send(client_for(alice), case, world))
        assert b"Ada Lovelace" in owner_body or world.deposit.address.encode() in owner_body.lower()


def test_outsider_posting_acme_customer_on_new_invoice_gets_field_error_and_no_invoice(
    world, client_for, charlie
):
    response = client_for(charlie).post(reverse("invoice_new"), _invoice_form(world))
    assert response.status_code == 422
    assert response.context["form"].errors["customer"] == [
        "Select a valid choice. That choice is not one of the available choices."
    ]
    assert Invoice.objects.filter(merchant__name="Globex").count() == 0


@pytest.mark.parametrize(
    "case",
    [
        c
        for c in OBJECT_CASES
        if c.method == POST and not any(o.url == c.url and o.method == GET for o in OBJECT_CASES)
    ],
    ids=lambda c: c.id,
)
def test_get_on_post_only_acme_url_is_405_for_outsider_exactly_as_for_a_missing_object(
    case, world, client_for, charlie
):
    # The method is refused before any lookup, so the answer says nothing about Acme.
    client = client_for(charlie)
    acme = client.get(_url(case, world))
    missing = client.get(_url(case, world, pk=999_999))
    assert acme.status_code == 405
    assert missing.status_code == 405


# Anonymous ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_anonymous_is_sent_to_login(case, world, client, acme_at_start):
    before = acme_at_start
    url = _url(case, world)
    response = _send(client, case, world)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('account_login')}?next={url}"
    assert _acme_state(world.acme) == before


# Pages outside merchant_view ------------------------------------------------------------------


def test_signup_page_is_public_and_sends_signed_in_people_to_dashboard(client, client_for, alice):
    assert client.get(reverse("account_signup")).status_code == 200
    response = client_for(alice).get(reverse("account_signup"))
    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")


def test_merchant_create_needs_sign_in(client):
    response = client.get(reverse("merchant_create"))
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('account_login')}?next={reverse('merchant_create')}"


def test_merchant_switch_needs_sign_in(client, acme):
    response = client.post(reverse("merchant_switch"), {"merchant_id": acme.pk})
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('account_login')}?next={reverse('merchant_switch')}"


def test_outsider_cannot_switch_into_acme(world, client_for, charlie):
    client = client_for(charlie)
    response = client.post(reverse("merchant_switch"), {"merchant_id": world.acme.pk})
    assert response.status_code == 404
    assert SESSION_KEY not in client.session
    assert b"Acme Tools" not in client.get(reverse("dashboard")).content


def test_stale_session_merchant_falls_back_to_own_business(world, client_for, charlie):
    # A merchant id planted in the session is only honoured with a membership behind it.
    client = client_for(charlie)
    session = client.session
    session[SESSION_KEY] = world.acme.pk
    session.save()
    response = client.get(reverse("invoice_detail", kwargs={"pk": world.draft.pk}))
    assert response.status_code == 404
    dashboard = client.get(reverse("dashboard"))
    assert b"Globex" in dashboard.content
    assert b"Acme Tools" not in dashboard.content


def test_payer_pages_need_no_sign_in_and_show_the_same_to_anyone(
    world, client, client_for, alice, charlie
):
    # No session decides what the payer sees: anonymous, the owner and an outsider get the
    # same invoice page, and none of them any merchant's navigation.
    url = reverse("pay", args=[world.open.public_token])
    pages = [client.get(url), client_for(alice).get(url), client_for(charlie).get(url)]
    assert [response.status_code for response in pages] == [200, 200, 200]
    for response in pages:
        assert world.open.reference.encode() in response.content
        assert b"Globex" not in response.content
        assert f'href="{reverse("dashboard")}"'.encode() not in response.content
    refused = client.post(reverse("pay_start", args=[world.open.public_token]), {"asset": ""})
    assert refused.status_code == 400  # answered for the payer, not sent to a login page


def test_payer_page_of_a_draft_is_not_found_even_for_its_owner(world, client_for, alice):
    assert client_for(alice).get(reverse("pay", args=[world.draft.public_token])).status_code == 404


def test_user_without_business_is_sent_to_create_one(client_for, db):
    from tests.factories import UserFactory

    loner = UserFactory(email="loner@example.com")
    response = client_for(loner).get(reverse("invoice_list"))
    assert response.status_code == 302
    assert response["Location"] == reverse("merchant_create")
