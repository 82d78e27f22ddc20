from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse

from invoices.models import Invoice, InvoiceEvent, InvoiceStatus, LineItem
from tests.factories import CustomerFactory, make_invoice


def _editor_data(customer=None, **overrides) -> dict:
    """An invoice editor POST: three line items, saved as a draft unless told otherwise."""
    data = {
        "customer": customer.pk if customer else "",
        "currency": "USD",
        "kind": "one_time",
        "pricing_mode": "no_timer",
        "fee_payer": "merchant",
        "items-0-name": "Design",
        "items-0-description": "Two workshop days",
        "items-0-quantity": "2",
        "items-0-unit_price": "150.00",
        "items-1-name": "Hosting",
        "items-1-quantity": "12",
        "items-1-unit_price": "9.99",
        "items-2-name": "Setup",
        "items-2-quantity": "0.5",
        "items-2-unit_price": "80",
        "action": "save",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def _messages(response) -> list[str]:
    return [message.message for message in get_messages(response.wsgi_request)]


def _counts() -> tuple[int, int, int]:
    return Invoice.objects.count(), LineItem.objects.count(), InvoiceEvent.objects.count()


# Creating ------------------------------------------------------------------------------------


def test_new_invoice_saved_as_draft_with_exact_line_amounts_and_total(
    client_for, bob, acme, acme_customer
):
    response = client_for(bob).post(reverse("invoice_new"), _editor_data(acme_customer))

    invoice = Invoice.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("invoice_detail", kwargs={"pk": invoice.pk})
    assert invoice.merchant == acme
    assert invoice.customer == acme_customer
    assert invoice.reference == "INV-00001"
    assert invoice.status == InvoiceStatus.DRAFT
    assert invoice.created_by == bob
    assert invoice.issued_at is None
    assert (invoice.currency, invoice.kind, invoice.pricing_mode, invoice.fee_payer) == (
        "USD",
        "one_time",
        "no_timer",
        "merchant",
    )
    assert invoice.subtotal == Decimal("459.88")
    assert invoice.total == Decimal("459.88")
    assert [
        (i.position, i.name, i.description, i.quantity, i.unit_price, i.amount)
        for i in invoice.items.all()
    ] == [
        (1, "Design", "Two workshop days", Decimal("2"), Decimal("150.00"), Decimal("300.00")),
        (2, "Hosting", "", Decimal("12"), Decimal("9.99"), Decimal("119.88")),
        (3, "Setup", "", Decimal("0.5"), Decimal("80"), Decimal("40.00")),
    ]
    assert list(invoice.events.values_list("type", "to_status")) == [("invoice.created", "draft")]
    assert _messages(response) == ["Invoice INV-00001 saved as a draft."]


def test_new_invoice_issued_at_once_is_open_with_two_events(client_for, alice, acme_customer):
    response = client_for(alice).post(
        reverse("invoice_new"), _editor_data(acme_customer, action="issue", fee_payer="payer")
    )

    invoice = Invoice.objects.get()
    assert response.status_code == 302
    assert invoice.status == InvoiceStatus.OPEN
    assert invoice.fee_payer == "payer"
    assert invoice.issued_at is not None
    assert invoice.expires_at is None
    assert invoice.total == Decimal("459.88")
    assert list(invoice.events.values_list("type", "from_status", "to_status")) == [
        ("invoice.created", "", "draft"),
        ("invoice.issued", "draft", "open"),
    ]
    assert _messages(response) == ["Invoice INV-00001 issued."]


def test_new_invoice_in_usdt_keeps_six_decimals(client_for, alice, acme_customer):
    data = _editor_data(
        acme_customer,
        currency="USDT",
        **{
            "items-0-unit_price": "0.333333",
            "items-0-quantity": "3",
            "items-1-unit_price": "1.000001",
            "items-2-unit_price": "0.5",
        },
    )
    response = client_for(alice).post(reverse("invoice_new"), data)

    invoice = Invoice.objects.get()
    assert response.status_code == 302
    assert list(invoice.items.values_list("amount", flat=True)) == [
        Decimal("0.999999"),
        Decimal("12.000012"),
        Decimal("0.250000"),
    ]
    assert invoice.total == Decimal("13.250011")


def test_blank_item_rows_are_ignored(client_for, alice, acme_customer):
    data = _editor_data(
        acme_customer, **{"items-7-name": "", "items-7-quantity": "1", "items-7-unit_price": ""}
    )
    client_for(alice).post(reverse("invoice_new"), data)
    assert LineItem.objects.count() == 3


def test_timed_invoice_issued_starts_timer(client_for, alice, acme_customer, settings):
    settings.INVOICE_TIMER_MINUTES = 15
    client_for(alice).post(
        reverse("invoice_new"), _editor_data(acme_customer, action="issue", pricing_mode="timer")
    )
    invoice = Invoice.objects.get()
    assert invoice.expires_at - invoice.issued_at == timedelta(minutes=15)


# Refused input --------------------------------------------------------------------------------

BAD_ITEMS = [
    ("empty-quantity", "USD", {"items-1-quantity": ""}, 1, "quantity", "This field is required."),
    (
        "zero-quantity",
        "USD",
        {"items-1-quantity": "0"},
        1,
        "quantity",
        "Quantity must be greater than zero.",
    ),
    (
        "negative-quantity",
        "USD",
        {"items-0-quantity": "-2"},
        0,
        "quantity",
        "Quantity must be greater than zero.",
    ),
    (
        "usd-three-decimals",
        "USD",
        {"items-2-unit_price": "80.005"},
        2,
        "unit_price",
        "USD amounts have at most 2 decimals.",
    ),
    (
        "usdt-seven-decimals",
        "USDT",
        {"items-2-unit_price": "0.0000001"},
        2,
        "unit_price",
        "USDT amounts have at most 6 decimals.",
    ),
    (
        "price-over-a-trillion",
        "USD",
        {"items-0-unit_price": "1000000000000.01"},
        0,
        "unit_price",
        "Price may be at most 1,000,000,000,000.00 USD.",
    ),
    (
        "price-in-exponent-form",
        "USD",
        {"items-0-unit_price": "1e30"},
        0,
        "unit_price",
        "Price may be at most 1,000,000,000,000.00 USD.",
    ),
    (
        "negative-price",
        "USD",
        {"items-0-unit_price": "-1.00"},
        0,
        "unit_price",
        "Price cannot be negative.",
    ),
    (
        "price-not-a-number",
        "USD",
        {"items-0-unit_price": "ten"},
        0,
        "unit_price",
        "Enter a number.",
    ),
]


@pytest.mark.parametrize(
    ("currency", "overrides", "row", "field", "message"),
    [case[1:] for case in BAD_ITEMS],
    ids=[case[0] for case in BAD_ITEMS],
)
def test_bad_line_item_is_refused_with_its_message_and_nothing_saved(
    client_for, alice, acme_customer, currency, overrides, row, field, message
):
    before = _counts()
    response = client_for(alice).post(
        reverse("invoice_new"), _editor_data(acme_customer, currency=currency, **overrides)
    )

    assert response.status_code == 422
    item_forms = response.context["item_forms"]
    assert item_forms[row].errors[field] == [message]
    assert [bool(item.errors) for item in item_forms].count(True) == 1
    assert message.encode() in response.content
    assert _counts() == before


def test_subtotal_over_a_trillion_is_refused_though_each_line_is_allowed(
    client_for, alice, acme_customer
):
    data = _editor_data(
        acme_customer,
        **{
            "items-0-quantity": "1",
            "items-0-unit_price": "600000000000.00",
            "items-1-quantity": "1",
            "items-1-unit_price": "600000000000.00",
        },
    )
    response = client_for(alice).post(reverse("invoice_new"), data)

    assert response.status_code == 422
    message = "The subtotal may be at most 1,000,000,000,000.00 USD."
    assert response.context["form"].non_field_errors() == [message]
    assert message.encode() in response.content
    assert _counts() == (0, 0, 0)


def test_a_line_over_a_trillion_is_refused_on_its_row(client_for, alice, acme_customer):
    data = _editor_data(
        acme_customer, **{"items-1-quantity": "3", "items-1-unit_price": "400000000000.00"}
    )
    response = client_for(alice).post(reverse("invoice_new"), data)

    assert response.status_code == 422
    message = "Quantity times price may be at most 1,000,000,000,000.00 USD."
    item_forms = response.context["item_forms"]
    assert item_forms[1].errors["unit_price"] == [message]
    assert [bool(item.errors) for item in item_forms].count(True) == 1
    assert message.encode() in response.content
    assert _counts() == (0, 0, 0)


def test_duplicate_foreign_id_is_refused(client_for, alice, acme, acme_customer):
    make_invoice(acme, foreign_id="ORDER-77")
    before = _counts()

    response = client_for(alice).post(
        reverse("invoice_new"), _editor_data(acme_customer, foreign_id=" ORDER-77 ")
    )

    assert response.status_code == 422
    message = "Another invoice of yours already uses this foreign ID."
    assert response.context["form"].errors["foreign_id"] == [message]
    assert message.encode() in response.content
    assert _counts() == before


def test_same_foreign_id_is_fine_at_another_merchant(client_for, alice, globex, acme_customer):
    make_invoice(globex, foreign_id="ORDER-77")
    response = client_for(alice).post(
        reverse("invoice_new"), _editor_data(acme_customer, foreign_id="ORDER-77")
    )
    assert response.status_code == 302
    assert Invoice.objects.filter(foreign_id="ORDER-77").count() == 2


def test_customer_of_another_merchant_is_refused(client_for, alice, globex):
    outsider = CustomerFactory(merchant=globex)
    response = client_for(alice).post(reverse("invoice_new"), _editor_data(outsider))

    assert response.status_code == 422
    assert response.context["form"].errors["customer"] == [
        "Select a valid choice. That choice is not one of the available choices."
    ]
    assert _counts() == (0, 0, 0)


def test_unknown_currency_is_refused(client_for, alice, acme_customer):
    response = client_for(alice).post(
        reverse("invoice_new"), _editor_data(acme_customer, currency="DOGE")
    )

    assert response.status_code == 422
    message = "Select a valid choice. DOGE is not one of the available choices."
    assert response.context["form"].errors["currency"] == [message]
    assert message.encode() in response.content
    assert _counts() == (0, 0, 0)


def test_issuing_a_one_time_invoice_with_zero_total_is_refused_and_nothing_saved(
    client_for, alice, acme_customer
):
    data = {
        key: value
        for key, value in _editor_data(acme_customer, action="issue").items()
        if not key.startswith(("items-1", "items-2"))
    }
    data["items-0-unit_price"] = "0"
    response = client_for(alice).post(reverse("invoice_new"), data)

    assert response.status_code == 422
    assert response.context["form"].non_field_errors() == [
        "Add at least one priced line item before issuing the invoice."
    ]
    assert _counts() == (0, 0, 0)


def test_zero_total_draft_can_be_saved_but_not_issued_from_its_page(
    client_for, alice, acme, acme_customer
):
    draft = make_invoice(acme, customer=acme_customer, items=[])
    assert draft.total == Decimal("0")

    response = client_for(alice).post(
        reverse("invoice_action", kwargs={"pk": draft.pk, "action": "issue"})
    )

    assert response.status_code == 302
    assert _messages(response) == ["Add at least one priced line item before issuing the invoice."]
    draft.refresh_from_db()
    assert draft.status == InvoiceStatus.DRAFT
    assert draft.events.count() == 1


def test_permanent_invoice_without_items_is_issued_as_open_amount(
    client_for, alice, acme, acme_customer
):
    draft = make_invoice(acme, customer=acme_customer, items=[], kind="permanent")
    client_for(alice).post(reverse("invoice_action", kwargs={"pk": draft.pk, "action": "issue"}))
    draft.refresh_from_db()
    assert draft.status == InvoiceStatus.OPEN
    assert draft.total_display == "Open amount"


def test_unknown_invoice_action_is_404(client_for, alice, acme):
    draft = make_invoice(acme)
    response = client_for(alice).post(
        reverse("invoice_action", kwargs={"pk": draft.pk, "action": "delete"})
    )
    assert response.status_code == 404
    assert Invoice.objects.get(pk=draft.pk).status == InvoiceStatus.DRAFT


# Editing --------------------------------------------------------------------------------------


def test_editor_shows_the_draft_as_it_was_saved(client_for, alice, acme, acme_customer):
    draft = make_invoice(acme, customer=acme_customer, items=[("Audit", "1.5", "200.10")])
    response = client_for(alice).get(reverse("invoice_edit", kwargs={"pk": draft.pk}))

    assert response.status_code == 200
    rows = response.context["item_forms"]
    assert [(r.initial["name"], r.initial["quantity"], r.initial["unit_price"]) for r in rows] == [
        ("Audit", Decimal("1.5"), Decimal("200.1"))
    ]
    assert response.context["totals"]["total"] == Decimal("300.15")
    assert response.context["form"].initial["customer"] == acme_customer.pk


def test_editing_a_draft_replaces_items_and_totals(client_for, bob, acme, acme_customer):
    draft = make_invoice(acme, customer=acme_customer, items=[("Old", "1", "5.00")])
    data = {
        key: value
        for key, value in _editor_data(None, currency="EUR", description="Revised").items()
        if not key.startswith("items-2")
    }

    response = client_for(bob).post(reverse("invoice_edit", kwargs={"pk": draft.pk}), data)

    assert response.status_code == 302
    assert response["Location"] == reverse("invoice_detail", kwargs={"pk": draft.pk})
    draft.refresh_from_db()
    assert draft.status == InvoiceStatus.DRAFT
    assert draft.customer is None
    assert draft.currency == "EUR"
    assert draft.description == "Revised"
    assert draft.reference == "INV-00001"
    assert draft.total == Decimal("419.88")
    assert list(draft.items.values_list("position", "name", "amount")) == [
        (1, "Design", Decimal("300.00")),
        (2, "Hosting", Decimal("119.88")),
    ]
    assert list(draft.events.values_list("type", flat=True)) == [
        "invoice.created",
        "invoice.updated",
    ]


def test_editing_a_draft_and_issuing_it(client_for, alice, acme, acme_customer):
    draft = make_invoice(acme, customer=acme_customer)
    response = client_for(alice).post(
        reverse("invoice_edit", kwargs={"pk": draft.pk}),
        _editor_data(acme_customer, action="issue"),
    )

    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.status == InvoiceStatus.OPEN
    assert draft.total == Decimal("459.88")
    assert list(draft.events.values_list("type", flat=True)) == [
        "invoice.created",
        "invoice.updated",
        "invoice.issued",
    ]


def test_bad_edit_is_refused_and_the_draft_unchanged(client_for, alice, acme, acme_customer):
    draft = make_invoice(acme, customer=acme_customer, items=[("Old", "1", "5.00")])
    data = _editor_data(acme_customer, **{"items-0-unit_price": "1.001"})

    response = client_for(alice).post(reverse("invoice_edit", kwargs={"pk": draft.pk}), data)

    assert response.status_code == 422
    draft.refresh_from_db()
    assert draft.total == Decimal("5.00")
    assert list(draft.items.values_list("name", flat=True)) == ["Old"]
    assert draft.events.count() == 1


def test_draft_keeps_its_own_foreign_id_on_edit(client_for, alice, acme, acme_customer):
    draft = make_invoice(acme, customer=acme_customer, foreign_id="ORDER-1")
    response = client_for(alice).post(
        reverse("invoice_edit", kwargs={"pk": draft.pk}),
        _editor_data(acme_customer, foreign_id="ORDER-1"),
    )
    assert response.status_code == 302


@pytest.mark.parametrize("method", ["get", "post"])
def test_editing_an_issued_invoice_redirects_to_it_and_changes_nothing(
    client_for, alice, acme, acme_customer, method
):
    invoice = make_invoice(acme, customer=acme_customer, issue=True)
    url = reverse("invoice_edit", kwargs={"pk": invoice.pk})
    client = client_for(alice)

    response = getattr(client, method)(url, _editor_data(acme_customer, description="Sneaky"))

    assert response.status_code == 302
    assert response["Location"] == reverse("invoice_detail", kwargs={"pk": invoice.pk})
    assert _messages(response) == [
        "Only drafts can be edited. Integration fields stay editable below."
    ]
    invoice.refresh_from_db()
    assert invoice.description == ""
    assert invoice.total == Decimal("300.00")
    assert invoice.events.count() == 2


# Mark paid ------------------------------------------------------------------------------------


def test_mark_paid_records_the_reference(client_for, bob, acme, acme_customer):
    invoice = make_invoice(acme, customer=acme_customer, issue=True)
    response = client_for(bob).post(
        reverse("invoice_mark_paid", kwargs={"pk": invoice.pk}), {"reference": " WIRE-2024-118 "}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("invoice_detail", kwargs={"pk": invoice.pk})
    assert _messages(response) == ["Marked as paid."]
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.PAID
    assert invoice.finalized_at is not None
    event = invoice.events.latest("pk")
    assert (event.type, event.from_status, event.to_status, event.note, event.data) == (
        "invoice.marked_paid",
        "open",
        "paid",
        "WIRE-2024-118",
        {"reference": "WIRE-2024-118", "method": "Paid outside Stablebill", "method_id": None},
    )
    assert event.actor_user == bob


@pytest.mark.parametrize("reference", ["", "   "])
def test_mark_paid_without_reference_is_refused(client_for, alice, acme, reference):
    invoice = make_invoice(acme, issue=True)
    response = client_for(alice).post(
        reverse("invoice_mark_paid", kwargs={"pk": invoice.pk}), {"reference": reference}
    )

    assert response.status_code == 302
    assert _messages(response) == ["Enter the payment reference to mark the invoice as paid."]
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN
    assert invoice.events.count() == 2


@pytest.mark.parametrize(
    ("make_final", "status", "message"),
    [
        ("paid", "paid", "The invoice is already paid."),
        ("void", "void", "The invoice is already void."),
        ("cancel", "failed", "The invoice is already failed."),
    ],
)
def test_mark_paid_is_refused_for_final_invoices(
    client_for, alice, acme, make_final, status, message
):
    client = client_for(alice)
    invoice = make_invoice(acme, issue=make_final != "void")
    if make_final == "paid":
        client.post(reverse("invoice_mark_paid", kwargs={"pk": invoice.pk}), {"reference": "R-1"})
    else:
        client.post(reverse("invoice_action", kwargs={"pk": invoice.pk, "action": make_final}))
    client.get(reverse("invoice_detail", kwargs={"pk": invoice.pk}))  # shows the messages
    invoice.refresh_from_db()
    assert invoice.status == status
    events = invoice.events.count()

    response = client.post(
        reverse("invoice_mark_paid", kwargs={"pk": invoice.pk}), {"reference": "R-2"}
    )

    assert response.status_code == 302
    assert _messages(response) == [message]
    invoice.refresh_from_db()
    assert invoice.status == status
    assert invoice.events.count() == events


def test_mark_paid_is_refused_for_drafts(client_for, alice, acme):
    draft = make_invoice(acme)
    response = client_for(alice).post(
        reverse("invoice_mark_paid", kwargs={"pk": draft.pk}), {"reference": "R-1"}
    )
    assert _messages(response) == ["Issue the invoice before marking it as paid."]
    assert Invoice.objects.get(pk=draft.pk).status == InvoiceStatus.DRAFT


def test_detail_offers_mark_paid_only_while_payable(client_for, alice, acme):
    client = client_for(alice)
    draft = make_invoice(acme)
    open_invoice = make_invoice(acme, issue=True)
    permanent = make_invoice(acme, issue=True, kind="permanent")

    def offered(invoice) -> bool:
        response = client.get(reverse("invoice_detail", kwargs={"pk": invoice.pk}))
        return response.context["can_mark_paid"]

    assert (offered(draft), offered(open_invoice), offered(permanent)) == (False, True, False)


# Other actions --------------------------------------------------------------------------------


def test_void_cancel_and_close_move_the_status(client_for, alice, acme):
    client = client_for(alice)
    draft = make_invoice(acme)
    open_invoice = make_invoice(acme, issue=True)
    permanent = make_invoice(acme, issue=True, kind="permanent")

    for invoice, action in ((draft, "void"), (open_invoice, "cancel"), (permanent, "close")):
        client.post(reverse("invoice_action", kwargs={"pk": invoice.pk, "action": action}))

    statuses = dict(Invoice.objects.values_list("pk", "status"))
    assert statuses == {draft.pk: "void", open_invoice.pk: "failed", permanent.pk: "closed"}
    assert Invoice.objects.get(pk=open_invoice.pk).failure_reason == "cancelled"


def test_closing_a_one_time_invoice_is_refused(client_for, alice, acme):
    invoice = make_invoice(acme, issue=True)
    response = client_for(alice).post(
        reverse("invoice_action", kwargs={"pk": invoice.pk, "action": "close"})
    )
    assert _messages(response) == [
        "Only permanent invoices are closed; one-time invoices close on payment."
    ]
    assert Invoice.objects.get(pk=invoice.pk).status == InvoiceStatus.OPEN


def test_integration_settings_change_on_an_issued_invoice(client_for, alice, acme):
    invoice = make_invoice(acme, issue=True)
    response = client_for(alice).post(
        reverse("invoice_integration", kwargs={"pk": invoice.pk}),
        {"tracking_id": "trk-9", "callback_url": "https://shop.example/hook"},
    )

    assert response.status_code == 302
    assert (
        response["Location"]
        == reverse("invoice_detail", kwargs={"pk": invoice.pk}) + "?tab=settings"
    )
    invoice.refresh_from_db()
    assert (invoice.tracking_id, invoice.callback_url) == ("trk-9", "https://shop.example/hook")
    event = invoice.events.latest("pk")
    assert event.type == "invoice.settings_changed"
    assert event.data == {
        "changes": {
            "tracking_id": {"from": "", "to": "trk-9"},
            "callback_url": {"from": "", "to": "https://shop.example/hook"},
        }
    }


def test_integration_refuses_a_bad_url(client_for, alice, acme):
    invoice = make_invoice(acme, issue=True)
    response = client_for(alice).post(
        reverse("invoice_integration", kwargs={"pk": invoice.pk}), {"callback_url": "not a url"}
    )
    assert _messages(response) == ["Callback URL: Enter a valid URL."]
    invoice.refresh_from_db()
    assert invoice.callback_url == ""
    assert invoice.events.count() == 2


# List -----------------------------------------------------------------------------------------


def _set_created(invoice: Invoice, when: datetime) -> None:
    Invoice.objects.filter(pk=invoice.pk).update(created_at=when)


def _references(response) -> list[str]:
    return [invoice.reference for invoice in response.context["page"].object_list]


@pytest.fixture
def listed(acme, acme_customer):
    """Four Acme invoices with distinct status, customer, date and foreign ID; newest first."""
    grace = CustomerFactory(merchant=acme, name="Grace Hopper", email="grace@example.org")
    a = make_invoice(acme, customer=acme_customer, foreign_id="SHOP-1")
    b = make_invoice(acme, customer=grace, issue=True)
    c = make_invoice(acme, customer=grace, issue=True, foreign_id="ERP-552")
    d = make_invoice(acme)
    for invoice, day in ((a, 1), (b, 10), (c, 20), (d, 28)):
        _set_created(invoice, datetime(2026, 3, day, 12, tzinfo=UTC))
    return {"grace": grace, "a": a, "b": b, "c": c, "d": d}


def test_list_shows_newest_first_and_only_own_invoices(client_for, alice, globex, listed):
    make_invoice(globex)
    response = client_for(alice).get(reverse("invoice_list"))
    assert response.status_code == 200
    assert _references(response) == ["INV-00004", "INV-00003", "INV-00002", "INV-00001"]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "open"}, ["INV-00003", "INV-00002"]),
        ({"status": "draft"}, ["INV-00004", "INV-00001"]),
        ({"status": "paid"}, []),
        ({"created_from": "2026-03-10"}, ["INV-00004", "INV-00003", "INV-00002"]),
        ({"created_to": "2026-03-10"}, ["INV-00002", "INV-00001"]),
        ({"created_from": "2026-03-02", "created_to": "2026-03-20"}, ["INV-00003", "INV-00002"]),
        ({"q": "inv-00002"}, ["INV-00002"]),
        ({"q": "grace"}, ["INV-00003", "INV-00002"]),
        ({"q": "Lovelace"}, ["INV-00001"]),
        ({"q": "erp-55"}, ["INV-00003"]),
        ({"q": "grace", "status": "open", "created_from": "2026-03-15"}, ["INV-00003"]),
        ({"q": "nothing-like-this"}, []),
    ],
)
def test_list_filters(client_for, alice, listed, params, expected):
    response = client_for(alice).get(reverse("invoice_list"), params)
    assert response.status_code == 200
    assert _references(response) == expected


def test_list_filters_by_customer(client_for, alice, listed, acme_customer):
    client = client_for(alice)
    grace = client.get(reverse("invoice_list"), {"customer": listed["grace"].pk})
    ada = client.get(reverse("invoice_list"), {"customer": acme_customer.pk})
    assert _references(grace) == ["INV-00003", "INV-00002"]
    assert _references(ada) == ["INV-00001"]


def test_list_ignores_filters_that_do_not_parse_and_says_so(client_for, alice, listed):
    response = client_for(alice).get(
        reverse("invoice_list"), {"status": "lost", "created_from": "yesterday"}
    )
    assert response.status_code == 200
    assert _references(response) == ["INV-00004", "INV-00003", "INV-00002", "INV-00001"]
    assert set(response.context["filters"].errors) == {"status", "created_from"}


def test_list_paginates_25_a_page_and_keeps_filters_in_page_links(client_for, alice, acme):
    for _ in range(30):
        make_invoice(acme, issue=True)
    make_invoice(acme)
    client = client_for(alice)

    first = client.get(reverse("invoice_list"), {"status": "open"})
    second = client.get(reverse("invoice_list"), {"status": "open", "page": "2"})
    beyond = client.get(reverse("invoice_list"), {"status": "open", "page": "99"})

    assert len(first.context["page"].object_list) == 25
    assert first.context["page"].paginator.count == 30
    assert _references(first)[0] == "INV-00030"
    assert _references(second) == [f"INV-{n:05d}" for n in range(5, 0, -1)]
    assert _references(beyond) == _references(second)
    assert b'href="?status=open&amp;page=2"' in first.content
    assert first.context["query_string"] == "status=open"


def test_list_htmx_request_gets_only_the_results_fragment(client_for, alice, listed):
    client = client_for(alice)
    full = client.get(reverse("invoice_list"), {"q": "grace"})
    partial = client.get(reverse("invoice_list"), {"q": "grace"}, headers={"HX-Request": "true"})

    assert full.status_code == partial.status_code == 200
    assert b"<html" in full.content
    body = partial.content.decode().strip()
    assert body.startswith('<div id="results">')
    assert body.endswith("</div>")
    assert "<html" not in body
    assert 'class="filters"' not in body
    assert "INV-00003" in body
    assert "INV-00001" not in body
    assert partial["Vary"] == full["Vary"]
    assert "HX-Request" in [part.strip() for part in partial["Vary"].split(",")]


# Query counts -------------------------------------------------------------------------------
# Each request pays the same fixed price to get going: session, user, membership (which reads
# the person's other businesses too, for the business switcher every page shows).


@pytest.mark.parametrize("n", [1, 30])
def test_invoice_list_query_count_does_not_grow_with_rows(
    client_for, alice, acme, django_assert_num_queries, n
):
    customers = [CustomerFactory(merchant=acme) for _ in range(3)]
    for i in range(n):
        make_invoice(acme, customer=customers[i % 3], issue=i % 2 == 0)
    client = client_for(alice)

    # session, user, membership, count, page of invoices with customers
    with django_assert_num_queries(5):
        response = client.get(reverse("invoice_list"))
    assert len(response.context["page"].object_list) == min(n, 25)


@pytest.mark.parametrize("n", [1, 30])
def test_customer_list_query_count_does_not_grow_with_rows(
    client_for, alice, acme, django_assert_num_queries, n
):
    for _ in range(n):
        CustomerFactory(merchant=acme)
    client = client_for(alice)

    # session, user, membership, count, page of customers
    with django_assert_num_queries(5):
        response = client.get(reverse("customer_list"))
    assert len(response.context["page"].object_list) == min(n, 25)


@pytest.mark.parametrize("n", [1, 12])
def test_dashboard_query_count_does_not_grow_with_rows(
    client_for, alice, acme, django_assert_num_queries, n
):
    client = client_for(alice)
    for i in range(n):
        invoice = make_invoice(acme, customer=CustomerFactory(merchant=acme), issue=i % 2 == 0)
        if i % 4 == 0:
            client.post(reverse("invoice_mark_paid", kwargs={"pk": invoice.pk}), {"reference": "R"})

    # session, user, membership, counts by status, outstanding + paid + overdue (one query),
    # recent invoices, recent events
    with django_assert_num_queries(7):
        response = client.get(reverse("dashboard"))
    assert len(response.context["summary"].recent_invoices) == min(n, 6)


@pytest.mark.parametrize("n_items", [1, 15])
def test_invoice_detail_query_count_does_not_grow_with_items_or_events(
    client_for, alice, acme, acme_customer, django_assert_num_queries, n_items
):
    items = [(f"Line {i}", "1", "2.50") for i in range(n_items)]
    invoice = make_invoice(acme, customer=acme_customer, items=items, issue=True, by=alice)
    client = client_for(alice)
    for i in range(n_items):
        client.post(
            reverse("invoice_integration", kwargs={"pk": invoice.pk}), {"tracking_id": f"t{i}"}
        )

    # session, user, membership, invoice with customer and creator, items, receipts, payment
    # methods, credit notes, events with actors, emails with requesters, whether the business
    # has payment methods (for mark-as-paid)
    with django_assert_num_queries(11):
        response = client.get(reverse("invoice_detail", kwargs={"pk": invoice.pk}))
    assert len(response.context["invoice"].items.all()) == n_items
    assert len(response.context["invoice"].events.all()) == n_items + 2


# Editor helpers -------------------------------------------------------------------------------


def test_item_row_returns_an_empty_row_with_the_next_index(client_for, alice):
    response = client_for(alice).get(reverse("invoice_item_row"), {"next": "4"})
    body = response.content.decode()
    assert response.status_code == 200
    assert 'name="items-4-name"' in body
    assert 'id="next-index" name="next" value="5" hx-swap-oob="true"' in body


def test_item_row_ignores_a_silly_index(client_for, alice):
    response = client_for(alice).get(reverse("invoice_item_row"), {"next": "99999999"})
    assert 'name="items-0-name"' in response.content.decode()


def test_totals_preview_adds_up_valid_rows_and_skips_bad_ones(client_for, alice, acme_customer):
    data = _editor_data(acme_customer, **{"items-1-unit_price": "oops"})
    response = client_for(alice).post(reverse("invoice_totals"), data)

    assert response.status_code == 200
    totals = response.context["totals"]
    assert totals["currency"] == "USD"
    assert [line["amount"] for line in totals["lines"]] == [
        Decimal("300.00"),
        None,
        Decimal("40.00"),
    ]
    assert totals["total"] == Decimal("340.00")
    body = response.content.decode()
    assert '<span class="grand right" id="grand-total">$340.00</span>' in body
    assert _counts() == (0, 0, 0)


def test_editing_a_draft_shows_whole_numbers_plainly(client_for, alice, acme):
    invoice = make_invoice(acme, items=[("Workshop", "10", "900.00")])
    page = client_for(alice).get(f"/invoices/{invoice.pk}/edit/").content.decode()
    assert 'value="10"' in page and 'value="900"' in page
    assert "E+" not in page
    detail = client_for(alice).get(f"/invoices/{invoice.pk}/").content.decode()
    assert "E+" not in detail


def test_accepting_an_unresolved_invoice_needs_a_note_and_marks_it_paid(client_for, alice, acme):
    invoice = make_invoice(acme, issue=True)
    Invoice.objects.filter(pk=invoice.pk).update(status="unresolved")
    client = client_for(alice)
    client.post(f"/invoices/{invoice.pk}/accept/", {"note": "  "})
    invoice.refresh_from_db()
    assert invoice.status == "unresolved"
    client.post(f"/invoices/{invoice.pk}/accept/", {"note": "Keep the extra as a tip"})
    invoice.refresh_from_db()
    assert invoice.status == "paid"
    assert invoice.events.get(type="invoice.accepted").note == "Keep the extra as a tip"


def test_the_editor_refuses_a_past_due_date_but_a_draft_keeps_its_own(
    client_for, bob, acme_customer
):
    past = "2020-01-31"

    response = client_for(bob).post(
        reverse("invoice_new"), _editor_data(acme_customer, due_date=past)
    )

    assert "The due date is in the past." in response.content.decode()
    assert _counts() == (0, 0, 0)
    draft = make_invoice(acme_customer.merchant, customer=acme_customer, due_date=date(2020, 1, 31))
    response = client_for(bob).post(
        reverse("invoice_edit", kwargs={"pk": draft.pk}), _editor_data(acme_customer, due_date=past)
    )
    assert response.status_code == 302
