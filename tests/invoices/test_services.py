from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from invoices.models import (
    FINAL_STATUSES,
    TRANSITIONS,
    FailureReason,
    Invoice,
    InvoiceEvent,
    InvoiceKind,
    InvoiceStatus,
    LineItem,
    PricingMode,
)
from invoices.rules import LineItemInput, TaxSpec
from invoices.services import (
    InvoiceInput,
    InvoiceStateError,
    invoice_cancel,
    invoice_close,
    invoice_create,
    invoice_issue,
    invoice_mark_paid,
    invoice_update_draft,
    invoice_update_integration,
    invoice_void,
)
from tests.factories import CustomerFactory, make_invoice

pytestmark = pytest.mark.django_db


def items(*rows):
    return [LineItemInput(name=n, quantity=Decimal(q), unit_price=Decimal(p)) for n, q, p in rows]


def test_totals_are_exact_decimals_rounded_per_line(acme):
    invoice = make_invoice(
        acme,
        items=[
            ("Hours", "3", "33.33"),
            ("Third of a licence", "0.3333", "100.00"),
            ("Tiny", "1", "0.01"),
        ],
    )
    lines = list(invoice.items.values_list("amount", flat=True))
    assert lines == [Decimal("99.99"), Decimal("33.33"), Decimal("0.01")]
    assert invoice.subtotal == Decimal("133.33")
    assert invoice.total == Decimal("133.33")
    invoice.refresh_from_db()
    assert invoice.total == Decimal("133.33")


def test_totals_keep_six_decimals_for_stablecoins(acme):
    invoice = make_invoice(acme, currency="USDT", items=[("API calls", "1234", "0.000125")])
    assert invoice.total == Decimal("0.154250")


def test_numbers_are_sequential_per_merchant_with_prefix(acme, globex):
    first = make_invoice(acme)
    second = make_invoice(acme)
    other = make_invoice(globex)
    assert (first.number, second.number, other.number) == (1, 2, 1)
    assert (first.reference, second.reference) == ("INV-00001", "INV-00002")
    acme.refresh_from_db()
    assert acme.next_invoice_number == 3


def test_failed_creation_does_not_consume_a_number(acme, globex):
    make_invoice(acme)
    stranger = CustomerFactory(merchant=globex)
    with pytest.raises(ValidationError):
        make_invoice(acme, customer=stranger)
    assert make_invoice(acme).number == 2


def test_public_tokens_are_unguessable_and_distinct(acme):
    a, b = make_invoice(acme), make_invoice(acme)
    assert a.public_token != b.public_token
    assert len(a.public_token) >= 43


def test_created_invoice_records_event_with_actor(acme, alice):
    invoice = make_invoice(acme, by=alice)
    event = invoice.events.get()
    assert (event.type, event.actor, event.actor_user, event.to_status) == (
        "invoice.created",
        "user",
        alice,
        "draft",
    )


def test_issue_opens_draft_and_records_transition(acme, alice):
    invoice = make_invoice(acme)
    invoice = invoice_issue(invoice=invoice, by=alice)
    assert invoice.status == InvoiceStatus.OPEN
    assert invoice.issued_at is not None
    assert invoice.expires_at is None
    event = invoice.events.order_by("-pk").first()
    assert (event.type, event.from_status, event.to_status, event.actor_user) == (
        "invoice.issued",
        "draft",
        "open",
        alice,
    )


def test_issuing_a_timed_invoice_starts_the_timer(acme, settings):
    settings.INVOICE_TIMER_MINUTES = 15
    invoice = make_invoice(acme, pricing_mode=PricingMode.TIMER)
    before = timezone.now()
    invoice = invoice_issue(invoice=invoice)
    assert (
        before + timedelta(minutes=15)
        <= invoice.expires_at
        <= timezone.now() + timedelta(minutes=15)
    )


def test_one_time_invoice_without_amount_cannot_be_issued(acme):
    invoice = make_invoice(acme, items=[])
    with pytest.raises(ValidationError, match="line item"):
        invoice_issue(invoice=invoice)
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.DRAFT


def test_permanent_invoice_may_have_open_amount(acme):
    invoice = make_invoice(acme, items=[], kind=InvoiceKind.PERMANENT, issue=True)
    assert invoice.status == InvoiceStatus.OPEN
    assert invoice.is_open_amount
    assert invoice.total_display == "Open amount"


def test_issuing_twice_is_refused(acme):
    invoice = make_invoice(acme, issue=True)
    with pytest.raises(InvoiceStateError):
        invoice_issue(invoice=invoice)
    assert invoice.events.filter(type="invoice.issued").count() == 1


def test_void_only_drafts(acme):
    draft = make_invoice(acme)
    assert invoice_void(invoice=draft).status == InvoiceStatus.VOID
    issued = make_invoice(acme, issue=True)
    with pytest.raises(InvoiceStateError):
        invoice_void(invoice=issued)
    issued.refresh_from_db()
    assert issued.status == InvoiceStatus.OPEN


def test_close_only_permanent_invoices(acme):
    permanent = make_invoice(acme, kind=InvoiceKind.PERMANENT, issue=True)
    closed = invoice_close(invoice=permanent)
    assert closed.status == InvoiceStatus.CLOSED
    assert closed.finalized_at is not None
    one_time = make_invoice(acme, issue=True)
    with pytest.raises(InvoiceStateError, match="Only permanent"):
        invoice_close(invoice=one_time)


def test_cancel_fails_invoice_with_reason_cancelled(acme, alice):
    invoice = make_invoice(acme, issue=True)
    invoice = invoice_cancel(invoice=invoice, by=alice, note="Customer changed their mind")
    assert invoice.status == InvoiceStatus.FAILED
    assert invoice.failure_reason == FailureReason.CANCELLED
    event = invoice.events.get(type="invoice.cancelled")
    assert (event.from_status, event.to_status, event.note) == (
        "open",
        "failed",
        "Customer changed their mind",
    )


@pytest.mark.parametrize("status", ["draft", "paid", "failed", "closed", "void", "unresolved"])
def test_cancel_refused_outside_open_and_processing(acme, status):
    invoice = make_invoice(acme)
    Invoice.objects.filter(pk=invoice.pk).update(status=status)
    invoice.refresh_from_db()
    with pytest.raises(InvoiceStateError):
        invoice_cancel(invoice=invoice)
    invoice.refresh_from_db()
    assert invoice.status == status


def test_mark_paid_records_reference_and_actor(acme, alice):
    invoice = make_invoice(acme, issue=True)
    invoice = invoice_mark_paid(invoice=invoice, reference="  Wire 7781  ", by=alice)
    assert invoice.status == InvoiceStatus.PAID
    event = invoice.events.get(type="invoice.marked_paid")
    assert (event.note, event.data, event.actor_user, event.from_status) == (
        "Wire 7781",
        {"reference": "Wire 7781", "method": "Paid outside Stablebill", "method_id": None},
        alice,
        "open",
    )


def test_mark_paid_needs_a_reference(acme):
    invoice = make_invoice(acme, issue=True)
    with pytest.raises(ValidationError) as caught:
        invoice_mark_paid(invoice=invoice, reference="   ")
    assert "reference" in caught.value.message_dict
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN


@pytest.mark.parametrize("status", sorted(FINAL_STATUSES))
def test_mark_paid_refused_for_final_invoices(acme, status):
    invoice = make_invoice(acme, issue=True)
    Invoice.objects.filter(pk=invoice.pk).update(status=status)
    invoice.refresh_from_db()
    with pytest.raises(InvoiceStateError):
        invoice_mark_paid(invoice=invoice, reference="x")
    assert not invoice.events.filter(type="invoice.marked_paid").exists()


def test_mark_paid_refused_for_drafts_and_permanent_invoices(acme):
    with pytest.raises(InvoiceStateError, match="Issue"):
        invoice_mark_paid(invoice=make_invoice(acme), reference="x")
    permanent = make_invoice(acme, kind=InvoiceKind.PERMANENT, issue=True)
    with pytest.raises(InvoiceStateError, match="Permanent"):
        invoice_mark_paid(invoice=permanent, reference="x")


def test_stale_instance_cannot_apply_a_second_transition(acme):
    invoice = make_invoice(acme, issue=True)
    stale = Invoice.objects.get(pk=invoice.pk)
    invoice_mark_paid(invoice=invoice, reference="cash")
    with pytest.raises(InvoiceStateError):
        invoice_cancel(invoice=stale)
    stale.refresh_from_db()
    assert stale.status == InvoiceStatus.PAID
    assert stale.events.filter(type="invoice.cancelled").count() == 0


def test_final_statuses_only_reopen_as_unresolved():
    for status in FINAL_STATUSES - {InvoiceStatus.PAID}:
        assert TRANSITIONS[status] <= {InvoiceStatus.UNRESOLVED}
    # A paid invoice credited in full is closed (its credit note records the refund).
    assert TRANSITIONS[InvoiceStatus.PAID] == {InvoiceStatus.UNRESOLVED, InvoiceStatus.CLOSED}
    assert TRANSITIONS[InvoiceStatus.VOID] == frozenset()
    assert set(TRANSITIONS) == set(InvoiceStatus.values)


def test_update_draft_replaces_items_and_totals(acme, alice):
    invoice = make_invoice(acme, items=[("Old", "1", "10.00")])
    data = InvoiceInput(currency="EUR", items=items(("New A", "2", "5.50"), ("New B", "1", "1.25")))
    invoice = invoice_update_draft(invoice=invoice, data=data, by=alice)
    assert invoice.currency == "EUR"
    assert list(invoice.items.values_list("name", "amount")) == [
        ("New A", Decimal("11.00")),
        ("New B", Decimal("1.25")),
    ]
    assert invoice.total == Decimal("12.25")
    assert LineItem.objects.filter(name="Old").count() == 0


def test_update_of_issued_invoice_is_refused_and_changes_nothing(acme):
    invoice = make_invoice(acme, issue=True)
    data = InvoiceInput(currency="USD", items=items(("Sneaky", "1", "1.00")))
    with pytest.raises(InvoiceStateError):
        invoice_update_draft(invoice=invoice, data=data)
    assert list(invoice.items.values_list("name", flat=True)) == ["Consulting"]
    invoice.refresh_from_db()
    assert invoice.total == Decimal("300.00")


def test_integration_fields_change_in_any_status_with_an_event(acme, alice):
    invoice = make_invoice(acme, issue=True, tracking_id="T-1")
    invoice_mark_paid(invoice=invoice, reference="cash")
    invoice = invoice_update_integration(
        invoice=invoice,
        by=alice,
        tracking_id="T-2",
        callback_url="https://shop.example/hook",
        payment_page_url="https://shop.example/thanks",
        payment_page_button="Back to shop",
    )
    invoice.refresh_from_db()
    assert (invoice.tracking_id, invoice.payment_page_button) == ("T-2", "Back to shop")
    event = invoice.events.get(type="invoice.settings_changed")
    assert event.data["changes"]["tracking_id"] == {"from": "T-1", "to": "T-2"}


def test_integration_refuses_bad_urls(acme):
    invoice = make_invoice(acme)
    with pytest.raises(ValidationError) as caught:
        invoice_update_integration(invoice=invoice, callback_url="javascript:alert(1)")
    assert "callback_url" in caught.value.message_dict
    assert not InvoiceEvent.objects.filter(type="invoice.settings_changed").exists()


@pytest.mark.parametrize(
    ("rows", "currency", "field", "message"),
    [
        ([("A", "0", "1.00")], "USD", "items.0.quantity", "greater than zero"),
        ([("A", "-2", "1.00")], "USD", "items.0.quantity", "greater than zero"),
        ([("A", "1", "1.001")], "USD", "items.0.unit_price", "at most 2 decimals"),
        ([("A", "1", "1.0000001")], "USDT", "items.0.unit_price", "at most 6 decimals"),
        ([("A", "1", "-5")], "USD", "items.0.unit_price", "negative"),
        ([("A", "1", "1000000000000.01")], "USD", "items.0.unit_price", "at most"),
        ([("A", "1000000", "999999999999")], "USD", "items.0.unit_price", "times price"),
        (
            [("A", "1", "600000000000"), ("B", "1", "600000000000")],
            "USD",
            "items",
            "subtotal may be at most",
        ),
        ([("A", "1.00001", "1")], "USD", "items.0.quantity", "at most 4 decimals"),
        ([("  ", "1", "1")], "USD", "items.0.name", "Name the item"),
    ],
)
def test_bad_items_are_refused_and_nothing_is_saved(acme, rows, currency, field, message):
    with pytest.raises(ValidationError) as caught:
        make_invoice(acme, currency=currency, items=rows)
    assert message in " ".join(caught.value.message_dict[field])
    assert Invoice.objects.count() == 0
    assert LineItem.objects.count() == 0
    acme.refresh_from_db()
    assert acme.next_invoice_number == 1


def test_unknown_currency_is_refused(acme):
    with pytest.raises(ValidationError) as caught:
        make_invoice(acme, currency="DOGE")
    assert "currency" in caught.value.message_dict


def test_duplicate_foreign_id_is_refused_per_merchant_only(acme, globex):
    make_invoice(acme, foreign_id="ORDER-1")
    with pytest.raises(ValidationError) as caught:
        make_invoice(acme, foreign_id="ORDER-1")
    assert "foreign_id" in caught.value.message_dict
    assert make_invoice(globex, foreign_id="ORDER-1").foreign_id == "ORDER-1"
    assert make_invoice(acme, foreign_id="").foreign_id == ""
    assert make_invoice(acme, foreign_id="").foreign_id == ""


def test_another_merchants_customer_is_refused(acme, globex):
    stranger = CustomerFactory(merchant=globex)
    with pytest.raises(ValidationError) as caught:
        make_invoice(acme, customer=stranger)
    assert "customer" in caught.value.message_dict


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"accepted_assets": ["DOGE"]}, "accepted_assets"),
        ({"accepted_assets": ["USDC", "USDC"]}, "accepted_assets"),
        (
            {"pricing_mode": PricingMode.TIMER_FIXED_ASSET, "accepted_assets": ["USDC", "USDT"]},
            "accepted_assets",
        ),
        ({"pricing_mode": "sometimes"}, "pricing_mode"),
        ({"kind": "forever"}, "kind"),
        ({"fee_payer": "nobody"}, "fee_payer"),
        ({"callback_url": "ftp://files.example/x"}, "callback_url"),
    ],
)
def test_bad_invoice_fields_are_refused(acme, fields, key):
    with pytest.raises(ValidationError) as caught:
        make_invoice(acme, **fields)
    assert key in caught.value.message_dict
    assert Invoice.objects.count() == 0


def test_fee_payer_defaults_to_merchant_setting(acme):
    acme.default_fee_payer = "payer"
    acme.save()
    assert make_invoice(acme).fee_payer == "payer"
    assert make_invoice(acme, fee_payer="merchant").fee_payer == "merchant"


def test_create_and_issue_in_one_step(acme, alice):
    data = InvoiceInput(
        currency="USDC", items=items(("Retainer", "1", "2500")), accepted_assets=["USDC"]
    )
    invoice = invoice_create(merchant=acme, data=data, by=alice, issue=True)
    assert invoice.status == InvoiceStatus.OPEN
    assert list(invoice.events.values_list("type", flat=True)) == [
        "invoice.created",
        "invoice.issued",
    ]


def test_overdue_filter_lists_only_outstanding_invoices_past_their_due_date(acme):
    from invoices.selectors import invoice_list

    late = make_invoice(acme, issue=True)
    on_time = make_invoice(acme, issue=True, due_date=timezone.localdate() + timedelta(days=3))
    late_but_paid = make_invoice(acme, issue=True)
    invoice_mark_paid(invoice=late_but_paid, reference="cash")
    yesterday = timezone.localdate() - timedelta(days=1)
    Invoice.objects.filter(pk__in=[late.pk, late_but_paid.pk]).update(due_date=yesterday)
    assert list(invoice_list(merchant=acme, overdue=True)) == [late]
    assert on_time in invoice_list(merchant=acme)


def test_a_tax_that_lifts_the_total_over_a_trillion_is_refused(acme):
    data = InvoiceInput(
        currency="USD",
        items=[
            LineItemInput(
                name="Almost all",
                quantity=Decimal("1"),
                unit_price=Decimal("900000000000"),
                tax=TaxSpec("VAT", Decimal("20")),
            )
        ],
    )
    with pytest.raises(ValidationError) as caught:
        invoice_create(merchant=acme, data=data)
    assert caught.value.message_dict == {
        "items": ["The invoice total may be at most 1,000,000,000,000.00 USD."]
    }
    assert Invoice.objects.count() == 0
