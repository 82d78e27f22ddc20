"""Found by fuzzing the served app: inputs that answered 500 (or wrote a bogus record), each
now answered as a person typing it would expect, with nothing written.

- A Unicode digit ('²', '①') passed `str.isdigit()`, then `int()` refused it: every id or
  number read from a query string or form field now goes through `parse_id`.
- An id past 64 bits reached SQLite as an OverflowError (a list filter, the editor's payment
  methods, the business switcher).
- A quantity or price of 1e-999999999 looked like a number without decimals, because
  `normalize()` underflowed it to 0 in the decimal context: the quantity then broke a CHECK
  constraint, the price was stored as 0.
- The wallet page's POST without a mode added an error to an unbound form.
- A refused role change was logged and emailed to the owners as a change made.
- More query parameters than Django allows answered the API's clients with an HTML page.
"""

from decimal import Decimal

import pytest
from django.urls import reverse

from checkout.models import Payment
from invoices.models import Invoice, InvoiceStatus, LineItem, PaymentMethod
from invoices.services import credit_note_issue
from merchants.integrations import api_key_create
from merchants.models import Membership, Role, SecurityEvent
from merchants.money import decimal_places
from merchants.validators import MAX_ID, parse_id
from tests.factories import MembershipFactory, make_invoice, make_paid_payment
from tests.invoices.test_views import _editor_data
from tests.wallets.test_addresses import ABANDON_XPUB

SUPERSCRIPT_TWO = "\u00b2"  # '²': str.isdigit() is True, int() raises
CIRCLED_ONE = "\u2460"  # '①'
PAST_64_BITS = str(MAX_ID + 1)


@pytest.fixture
def owner(client_for, alice):
    return client_for(alice)


@pytest.fixture
def paid(acme, alice):
    invoice = make_invoice(acme, issue=True, items=[("Widget", "1", "300.00")])
    payment = make_paid_payment(invoice, 300 * 10**6)
    invoice.refresh_from_db()
    return invoice, payment


# parse_id and decimal_places -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("7", 7),
        ("0007", 7),
        (str(MAX_ID), MAX_ID),
        (PAST_64_BITS, None),
        ("9" * 30, None),
        ("0", None),
        ("", None),
        (None, None),
        (" 7", None),
        ("+7", None),
        ("-7", None),
        ("7_0", None),
        ("1.5", None),
        (SUPERSCRIPT_TWO, None),
        (CIRCLED_ONE, None),
        ("\uff17", None),  # fullwidth 7: int() takes it, an id field should not
        ("\u0667", None),  # Arabic-Indic 7
    ],
)
def test_parse_id_takes_ascii_digits_within_64_bits_only(raw, expected):
    assert parse_id(raw) == expected


def test_parse_id_keeps_to_its_limit():
    assert parse_id("99999", limit=99_999) == 99_999
    assert parse_id("100000", limit=99_999) is None


@pytest.mark.parametrize(
    ("raw", "places"),
    [
        ("1.50", 1),
        ("100", 0),
        ("1E+2", 0),
        ("0.00", 0),
        ("0E-1000000", 0),
        ("12.345", 3),
        ("-0.010", 2),
        ("1e-999999999", 999999999),
        ("1e-1000001", 1000001),
    ],
)
def test_decimal_places_reads_the_digits_without_rounding_to_the_context(raw, places):
    assert decimal_places(Decimal(raw)) == places


# Unicode digits ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [SUPERSCRIPT_TWO, CIRCLED_ONE])
def test_the_payers_currency_choice_as_a_unicode_digit_is_a_400(client, acme, dev_network, raw):
    invoice = make_invoice(acme, issue=True)
    response = client.post(reverse("pay_start", args=[invoice.public_token]), {"asset": raw})
    assert response.status_code == 400
    assert "Choose one of the currencies offered." in response.content.decode()
    assert not Payment.objects.exists()


def test_a_receipt_number_that_is_no_number_gives_the_latest_receipt(client, owner, paid):
    invoice, _ = paid
    assert invoice.receipts.exists()
    for url in (
        reverse("public_receipt_pdf", args=[invoice.public_token]),
        reverse("invoice_receipt", args=[invoice.pk]),
    ):
        browser = owner if "receipt.pdf" not in url else client
        for raw in (SUPERSCRIPT_TWO, PAST_64_BITS, "1" * 30):
            response = browser.get(url, {"n": raw})
            assert response.status_code == 200, (url, raw)
            assert response["Content-Type"] == "application/pdf"


def test_searching_for_a_unicode_digit_or_a_huge_number_finds_nothing(owner, acme):
    make_invoice(acme)
    for query in (SUPERSCRIPT_TWO, CIRCLED_ONE, PAST_64_BITS, "9" * 40):
        response = owner.get(reverse("invoice_list"), {"q": query})
        assert response.status_code == 200, query
        assert list(response.context["page"].object_list) == []


def test_the_editor_ignores_a_customer_or_draft_that_is_no_id(owner, acme):
    for raw in (SUPERSCRIPT_TWO, PAST_64_BITS):
        response = owner.get(reverse("invoice_new"), {"customer": raw})
        assert response.status_code == 200, raw
        assert response.context["form"].initial.get("customer") is None
        preview = owner.post(f"{reverse('invoice_preview')}?draft={raw}", _editor_data())
        assert preview.status_code == 200, raw
        row = owner.get(reverse("invoice_item_row"), {"next": raw})
        assert row.status_code == 200, raw
        assert 'name="items-0-name"' in row.content.decode()
    assert not Invoice.objects.exists()


def test_switching_to_a_business_that_is_no_id_is_not_found(owner, acme):
    for raw in (SUPERSCRIPT_TWO, PAST_64_BITS, "9" * 30):
        response = owner.post(reverse("merchant_switch"), {"merchant_id": raw})
        assert response.status_code == 404, raw


def test_refund_pages_take_an_order_or_credit_note_that_is_no_id_as_none(owner, acme, paid):
    invoice, payment = paid
    credit_note_issue(invoice=invoice, reason="Returned")
    tab = reverse("invoice_refunds", args=[invoice.pk])
    new = reverse("invoice_refund_new", args=[invoice.pk])
    resolve = reverse("invoice_refund_resolve", args=[invoice.pk])
    for raw in (SUPERSCRIPT_TWO, PAST_64_BITS):
        assert owner.get(tab, {"credit_note": raw}).status_code == 200, raw
        for data, refusal in (
            ({"payment": raw}, "Choose the order whose money goes back."),
            ({"payment": f"{payment.pk}:{raw}"}, "Choose one of the assets this order received."),
        ):
            response = owner.post(new, data, follow=True)
            assert response.redirect_chain[0][1] == 302, data
            assert refusal in response.content.decode(), data
        response = owner.post(new, {"payment": str(payment.pk), "credit_note": raw})
        assert response.status_code == 302, raw
        assert owner.post(resolve, {"payment": raw}).status_code == 302, raw
    # A credit note that is no id is no credit note: no refund names one.
    assert not payment.refunds.exclude(credit_note=None).exists()


# Ids past 64 bits ----------------------------------------------------------------------------


def test_a_customer_filter_past_64_bits_is_a_form_error_not_a_query(owner, acme):
    make_invoice(acme)
    response = owner.get(reverse("invoice_list"), {"customer": PAST_64_BITS})
    assert response.status_code == 200
    assert response.context["filters"].errors["customer"]


def test_a_payment_method_id_past_64_bits_is_an_invalid_choice(owner, acme):
    PaymentMethod.objects.create(merchant=acme, name="Bank transfer")
    data = _editor_data(payment_methods=["9" * 30])
    for url in (reverse("invoice_new"), reverse("invoice_totals"), reverse("invoice_preview")):
        response = owner.post(url, data)
        assert response.status_code in (200, 422), url
    response = owner.post(reverse("invoice_new"), data)
    assert response.status_code == 422
    assert "is not a valid value" in str(response.context["form"].errors["payment_methods"])
    assert not Invoice.objects.exists()


# Decimals beyond the context -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("items-0-quantity", "1e-999999999", "Quantity may have at most 4 decimals."),
        ("items-0-unit_price", "1e-999999999", "USD amounts have at most 2 decimals."),
        ("items-0-unit_price", "1e-1000001", "USD amounts have at most 2 decimals."),
    ],
)
def test_a_vanishingly_small_quantity_or_price_is_refused_not_stored_as_zero(
    owner, acme, field, value, message
):
    response = owner.post(reverse("invoice_new"), _editor_data(**{field: value}))
    assert response.status_code == 422
    assert message in response.content.decode()
    assert not Invoice.objects.exists() and not LineItem.objects.exists()
    acme.refresh_from_db()
    assert acme.next_invoice_number == 1


def test_a_vanishingly_small_discount_is_refused(owner, acme):
    data = _editor_data(
        **{"items-0-discount_kind": "amount", "items-0-discount_value": "1e-999999999"}
    )
    response = owner.post(reverse("invoice_new"), data)
    assert response.status_code == 422
    assert not Invoice.objects.exists()
    whole = _editor_data(discount_kind="amount", discount_value="1e-999999999")
    assert owner.post(reverse("invoice_new"), whole).status_code == 422
    assert not Invoice.objects.filter(status=InvoiceStatus.DRAFT).exists()


# The wallet page and the team page -----------------------------------------------------------


@pytest.mark.parametrize("data", [{}, {"mode": "bogus"}])
def test_a_wallet_post_naming_no_way_to_be_paid_says_so(owner, acme, data):
    response = owner.post(reverse("wallet_settings"), data)
    assert response.status_code == 422
    assert "Choose how payments are received." in response.content.decode()
    assert not SecurityEvent.objects.filter(summary="Wallet key changed").exists()


@pytest.mark.parametrize(
    ("view", "data", "what"),
    [
        (
            "wallet_settings",
            {"mode": "xpub", "xpub": ABANDON_XPUB, "account_address": "\x00"},
            "Wallet key changed",
        ),
        (
            "security_log",
            {"require_two_factor": "a\x00b"},
            "Two-factor requirement for the team changed",
        ),
    ],
)
def test_a_nul_quoted_from_a_field_the_change_never_reads_still_logs_and_announces_it(
    owner, acme, mailoutbox, django_capture_on_commit_callbacks, view, data, what
):
    # The change went through, then PostgreSQL refused the log entry quoting the NUL: a
    # wallet changed with no record and no email to the owners, answered with a 500.
    with django_capture_on_commit_callbacks(execute=True):
        response = owner.post(reverse(view), data)
    assert response.status_code == 302
    event = SecurityEvent.objects.get(summary=what)
    assert "\x00" not in event.detail
    assert any(what in message.subject for message in mailoutbox)
    acme.refresh_from_db()
    if view == "wallet_settings":
        assert acme.wallet.xpub == ABANDON_XPUB
    else:
        assert acme.require_two_factor


def test_a_refused_role_change_is_neither_logged_nor_emailed(
    owner, acme, alice, mailoutbox, django_capture_on_commit_callbacks
):
    staff = MembershipFactory(merchant=acme, role=Role.STAFF, user__email="sam@acme.test")
    url = reverse("member_update", args=[staff.pk])
    for role in ("not-a-role", "owner\x00", ""):
        with django_capture_on_commit_callbacks(execute=True):
            response = owner.post(url, {"role": role})
        assert response.status_code == 302
    staff.refresh_from_db()
    assert staff.role == Role.STAFF
    assert not SecurityEvent.objects.filter(summary__startswith="Team member").exists()
    assert mailoutbox == []

    # A change made is logged once, naming who and what, and the owners are told.
    with django_capture_on_commit_callbacks(execute=True):
        owner.post(url, {"role": Role.VIEWER})
    staff.refresh_from_db()
    assert staff.role == Role.VIEWER
    event = SecurityEvent.objects.get(summary__startswith="Team member")
    assert event.detail == "Team member's role changed: sam@acme.test is Viewer"
    assert [message.to for message in mailoutbox] == [[alice.email]]

    owner.post(url, {"remove": "1"})
    assert not Membership.objects.filter(pk=staff.pk).exists()
    removed = SecurityEvent.objects.filter(summary__startswith="Team member").latest("pk")
    assert removed.detail == "Team member's access removed: sam@acme.test"


# The API -------------------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
def test_too_many_query_parameters_get_the_apis_json_error(client, acme, alice, settings, debug):
    settings.DEBUG = debug
    key = api_key_create(merchant=acme, name="Fuzz", by=alice).plaintext
    query = "&".join(["a=1"] * (settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 100))
    response = client.get(f"/api/v1/invoices?{query}", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["code"] == "too_many_parameters"


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
def test_too_many_query_parameters_on_a_page_are_a_400_under_debug_too(owner, settings, debug):
    # Under DEBUG (`make run`) Django's own error page read request.GET again: a 500.
    settings.DEBUG = debug
    query = "&".join(["a=1"] * (settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
    response = owner.get(f"{reverse('invoice_list')}?{query}")
    assert response.status_code == 400
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    assert f"At most {limit} query parameters." in response.content.decode()
    just_enough = "&".join(["a=1"] * settings.DATA_UPLOAD_MAX_NUMBER_FIELDS)
    assert owner.get(f"{reverse('invoice_list')}?{just_enough}").status_code == 200


# Found by fuzzing on PostgreSQL: NUL in text read straight from the request, a refund
# amount past the decimal context, Django admin's own parameters, allauth's passkey forms.


def test_a_nul_in_the_customer_search_is_dropped(owner, acme_customer):
    response = owner.get(reverse("customer_list"), {"q": acme_customer.name[:3] + "\x00"})
    assert response.status_code == 200
    assert acme_customer.email in response.content.decode()


def test_nul_in_a_refunds_reason_reference_or_decline_is_dropped(owner, acme, paid):
    invoice, payment = paid
    new = reverse("invoice_refund_new", args=[invoice.pk])
    response = owner.post(new, {"payment": str(payment.pk), "amount": "1", "reason": "Lo\x00st"})
    assert response.status_code == 302
    first = payment.refunds.get()
    assert first.reason == "Lost"
    owner.post(reverse("refund_outside", args=[first.pk]), {"reference": "Bank\x00 ref 7"})
    first.refresh_from_db()
    assert first.outside_reference == "Bank ref 7"

    owner.post(new, {"payment": str(payment.pk), "amount": "1", "reason": "Second"})
    second = payment.refunds.exclude(pk=first.pk).get()
    owner.post(reverse("refund_decline", args=[second.pk]), {"reason": "Not\x00 ours"})
    second.refresh_from_db()
    assert second.decline_reason == "Not ours"


@pytest.mark.parametrize(
    ("amount", "refusal"),
    [
        ("1e999999999", "Enter an amount like 12.50"),  # was decimal.Overflow in scaleb
        ("1" + "0" * 40, "That is more than any order received."),
    ],
)
def test_a_refund_amount_past_any_order_is_refused(owner, acme, paid, amount, refusal):
    invoice, payment = paid
    new = reverse("invoice_refund_new", args=[invoice.pk])
    data = {"payment": str(payment.pk), "amount": amount, "reason": "Too much"}
    response = owner.post(new, data, follow=True)
    assert response.redirect_chain[0][1] == 302
    assert refusal in response.content.decode()
    assert not payment.refunds.exists()


def test_a_nul_in_the_note_accepting_an_unresolved_payment_is_dropped(owner, acme):
    invoice = make_invoice(acme, issue=True, items=[("Widget", "1", "300.00")])
    make_paid_payment(invoice, 400 * 10**6)  # overpaid: the invoice waits for a decision
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.UNRESOLVED
    response = owner.post(reverse("invoice_accept", args=[invoice.pk]), {"note": "Ti\x00p"})
    assert response.status_code == 302
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert invoice.events.filter(note="Tip").exists()


@pytest.fixture
def admin_browser(db):
    from django.test import Client

    from tests.factories import PASSWORD, UserFactory

    root = UserFactory(email="root@stablebill.test", is_staff=True, is_superuser=True)
    browser = Client()
    assert browser.login(email=root.email, password=PASSWORD)
    return browser


@pytest.mark.parametrize(
    ("query", "refusal"),
    [
        ({"status__exact": "\x00"}, "Text may not contain NUL characters."),
        ({"q": "INV\x00"}, "Text may not contain NUL characters."),
        ({"created_at__year": "2147483648"}, "created_at__year takes a number of at most 4"),
        ({"created_at__year": str(2**63)}, "created_at__year takes a number of at most 4"),
        ({"created_at__year": "2026", "created_at__month": "123"}, "at most 2 digits"),
    ],
)
def test_the_admin_refuses_filters_it_cannot_read(admin_browser, acme, query, refusal):
    changelist = reverse("admin:invoices_invoice_changelist")
    response = admin_browser.get(changelist, query)
    assert response.status_code == 400
    assert refusal in response.content.decode()


def test_the_admin_still_filters_by_status_and_date(admin_browser, acme):
    invoice = make_invoice(acme, issue=True)
    changelist = reverse("admin:invoices_invoice_changelist")
    year = invoice.created_at.year
    for query in ({"status__exact": "open"}, {"created_at__year": str(year)}, {}):
        response = admin_browser.get(changelist, query)
        assert response.status_code == 200, query
        assert invoice.reference in response.content.decode(), query


@pytest.mark.parametrize("selected", ["abc", "13\x00", "\x00", PAST_64_BITS, SUPERSCRIPT_TWO])
def test_an_admin_action_on_rows_that_are_no_ids_is_refused(admin_browser, acme, selected):
    invoice = make_invoice(acme, issue=True)
    data = {"action": "mark_paid_off_platform", "_selected_action": [selected], "apply": "1"}
    data["reference"] = "Wire 1"
    response = admin_browser.post(reverse("admin:invoices_invoice_changelist"), data)
    assert response.status_code == 400
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN


@pytest.mark.parametrize(
    "credential",
    [{"id": "\x00"}, {"id": 123, "response": []}, {"type": "public-key"}, [], "x", 7],
)
def test_a_malformed_passkey_answer_is_a_failed_sign_in(client, db, credential):
    import json

    response = client.post(reverse("mfa_login_webauthn"), {"credential": json.dumps(credential)})
    assert response.status_code == 302
    assert response["Location"] == reverse("account_login")
    assert "_auth_user_id" not in client.session


def test_a_malformed_passkey_registration_is_a_form_error(owner):
    from tests.security.conftest import reauthenticate

    reauthenticate(owner)
    data = {"name": "Laptop", "credential": '{"id": 1, "response": []}'}
    response = owner.post(reverse("mfa_add_webauthn"), data)
    assert response.status_code == 200
    assert response.context["form"].errors


# Found by fuzzing the remaining pages: line breaks in the business name, address specials
# in the From name, amounts typed with a decimal comma.


def test_a_business_name_with_line_breaks_is_kept_on_one_line_and_its_notices_go_out(
    owner, acme, alice, mailoutbox, django_capture_on_commit_callbacks
):
    from tests.security.test_uploads_and_headers import _settings_data

    name = "Northwind\r\nBcc: bcc@evil.example\r\nX-Inj: 1"
    response = owner.post(reverse("merchant_settings"), _settings_data(name=name))
    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.name == "Northwind Bcc: bcc@evil.example X-Inj: 1"
    # A name stored with a line break before: the owners' notice still goes out, on one line.
    type(acme).objects.filter(pk=acme.pk).update(name=name)
    with django_capture_on_commit_callbacks(execute=True):
        owner.post(reverse("api_key_list"), {"name": "Deploy"})
    (notice,) = mailoutbox
    assert notice.to == [alice.email]
    assert "\n" not in notice.subject and "\r" not in notice.subject
    assert notice.message()["Bcc"] is None


def test_the_from_name_cannot_carry_an_address_of_its_own(settings):
    from email.utils import getaddresses

    from invoices.emails import sender

    settings.DEFAULT_FROM_EMAIL = "Stablebill <billing@stablebill.example>"
    name = 'Northwind Studio Limited accounts payable team xx"yy <ceo@victim.example> ,'
    from_header = sender(name)
    assert getaddresses([from_header]) == [
        (
            "Northwind Studio Limited accounts payable team xxyy ceovictim.example",
            "billing@stablebill.example",
        )
    ]
    assert sender("Acme Tools") == "Acme Tools <billing@stablebill.example>"


@pytest.mark.parametrize("typed", ["1,5", "1,50", "12,5000", "1_5", "\uff11\uff15", "1e1", "1.2.3"])
def test_a_refund_amount_typed_with_a_decimal_comma_or_odd_digits_is_refused(
    owner, acme, paid, typed
):
    invoice, payment = paid
    new = reverse("invoice_refund_new", args=[invoice.pk])
    data = {"payment": str(payment.pk), "amount": typed, "reason": "Returned"}
    response = owner.post(new, data, follow=True)
    assert "a point for decimals; commas only between thousands" in response.content.decode()
    assert not payment.refunds.exists()


def test_a_refund_amount_with_thousands_separators_is_read_as_written(owner, acme, paid):
    invoice, payment = paid
    new = reverse("invoice_refund_new", args=[invoice.pk])
    owner.post(new, {"payment": str(payment.pk), "amount": "1,5", "reason": "Returned"})
    owner.post(new, {"payment": str(payment.pk), "amount": "1.50", "reason": "Returned"})
    (refund,) = payment.refunds.all()
    assert refund.amount == 1_500_000  # 1.50 USDC in base units


@pytest.mark.parametrize("raw", ["  ", "1e999", "NaN", "1,5", SUPERSCRIPT_TWO, PAST_64_BITS])
def test_an_admin_autocomplete_given_no_id_shows_the_form_again(admin_browser, acme, raw):
    # Django's autocomplete looked the posted value up as it came to show the refused form
    # again: ValueError, a 500, in place of "Select a valid choice".
    response = admin_browser.post(
        reverse("admin:merchants_membership_add"),
        {"user": raw, "merchant": str(acme.pk), "role": "owner"},
    )
    assert response.status_code == 200
    assert "user" in response.context["adminform"].form.errors
    customer_add = admin_browser.post(
        reverse("admin:customers_customer_add"), {"merchant": raw, "name": "Ada"}
    )
    assert customer_add.status_code == 200
    assert "merchant" in customer_add.context["adminform"].form.errors


def test_the_admin_leaves_json_lists_to_the_merchants_own_pages(admin_browser, acme):
    from merchants.models import WebhookEndpoint

    endpoint = WebhookEndpoint.objects.create(
        merchant=acme, url="https://hooks.example.org/in", events=["invoice.paid"]
    )
    invoice = make_invoice(acme, issue=True, accepted_assets=["USDC"])
    pages = {
        "events": reverse("admin:merchants_webhookendpoint_change", args=[endpoint.pk]),
        "accepted_assets": reverse("admin:invoices_invoice_change", args=[invoice.pk]),
    }
    for name, url in pages.items():
        # Editable, an empty list was saved as null (IntegrityError) and NaN as JSON
        # PostgreSQL refuses (DataError).
        assert name not in admin_browser.get(url).context["adminform"].form.fields
        for raw in ("", "NaN", "1e999"):
            assert admin_browser.post(url, {name: raw}).status_code < 500
    endpoint.refresh_from_db()
    invoice.refresh_from_db()
    assert endpoint.events == ["invoice.paid"]
    assert invoice.accepted_assets == ["USDC"]


def test_every_admin_autocomplete_shows_a_refused_form_again_without_a_lookup():
    # The guard is a mixin: an admin or inline given autocomplete_fields without it would
    # bring the ValueError back.
    from django.contrib import admin

    from merchants.admin_site import IdAutocomplete

    unguarded = [
        type(model_admin).__name__
        for model_admin in admin.site._registry.values()
        if model_admin.autocomplete_fields and not isinstance(model_admin, IdAutocomplete)
    ] + [
        inline.__name__
        for model_admin in admin.site._registry.values()
        for inline in model_admin.inlines
        if inline.autocomplete_fields and not issubclass(inline, IdAutocomplete)
    ]
    assert unguarded == []
