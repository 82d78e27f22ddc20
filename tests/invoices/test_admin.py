import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.urls import reverse

from invoices.models import InvoiceStatus
from tests.factories import PASSWORD, UserFactory, make_invoice

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:invoices_invoice_changelist")


@pytest.fixture
def admin_client_(db):
    user = UserFactory(email="root@stablebill.test", is_staff=True, is_superuser=True)
    from django.test import Client

    client = Client()
    assert client.login(email=user.email, password=PASSWORD)
    client.user = user
    return client


def _post_action(client, invoices, **extra):
    return client.post(
        CHANGELIST,
        {
            "action": "mark_paid_off_platform",
            ACTION_CHECKBOX_NAME: [i.pk for i in invoices],
            **extra,
        },
        follow=True,
    )


def test_action_asks_for_a_reference_before_changing_anything(admin_client_, acme):
    invoice = make_invoice(acme, issue=True)
    response = _post_action(admin_client_, [invoice])
    assert response.status_code == 200
    assert b"Payment reference" in response.content or b"reference" in response.content
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN


def test_action_refuses_an_empty_reference(admin_client_, acme):
    invoice = make_invoice(acme, issue=True)
    response = _post_action(admin_client_, [invoice], apply="1", reference="   ")
    assert b"This field is required" in response.content
    invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.OPEN


def test_action_marks_open_invoices_paid_and_refuses_final_ones(admin_client_, acme):
    open_invoice = make_invoice(acme, issue=True)
    draft = make_invoice(acme)
    paid = make_invoice(acme, issue=True)
    from invoices.services import invoice_mark_paid

    invoice_mark_paid(invoice=paid, reference="earlier")
    response = _post_action(
        admin_client_, [open_invoice, draft, paid], apply="1", reference="Wire 991"
    )
    text = response.content.decode()
    assert "1 invoice(s) marked as paid." in text
    assert f"Refused {draft.reference}" in text
    assert f"Refused {paid.reference}" in text
    open_invoice.refresh_from_db()
    draft.refresh_from_db()
    assert (open_invoice.status, draft.status) == (InvoiceStatus.PAID, InvoiceStatus.DRAFT)
    event = open_invoice.events.get(type="invoice.marked_paid")
    assert (event.actor, event.actor_user, event.note) == ("admin", admin_client_.user, "Wire 991")
    assert paid.events.filter(type="invoice.marked_paid").count() == 1


@pytest.mark.parametrize(
    "model",
    [
        "merchants/user",
        "merchants/merchant",
        "merchants/membership",
        "customers/customer",
        "invoices/invoice",
        "invoices/invoiceevent",
        "invoices/lineitem",
        "invoices/callbackdelivery",
        "merchants/apikey",
        "merchants/webhookendpoint",
        "merchants/idempotencyrecord",
    ],
)
def test_every_model_has_a_searchable_admin_changelist(admin_client_, acme, model):
    make_invoice(acme, issue=True)
    app, name = model.split("/")
    url = reverse(f"admin:{app}_{name}_changelist")
    response = admin_client_.get(url, {"q": "a"})
    assert response.status_code == 200


def test_admin_invoice_page_shows_items_and_timeline(admin_client_, acme):
    invoice = make_invoice(acme, issue=True)
    response = admin_client_.get(reverse("admin:invoices_invoice_change", args=[invoice.pk]))
    assert response.status_code == 200
    assert b"Consulting" in response.content
    assert b"invoice.issued" in response.content


def test_admin_lists_email_deliveries_and_retries_the_failed_ones(
    admin_client_, acme, acme_customer, mailoutbox, django_capture_on_commit_callbacks
):
    from invoices.models import EmailDelivery, EmailStatus

    invoice = make_invoice(acme, customer=acme_customer, issue=True)
    failed = EmailDelivery.objects.create(
        invoice=invoice, kind="invoice", key="a", recipients=["ada@example.org"], status="failed"
    )
    sent = EmailDelivery.objects.create(
        invoice=invoice, kind="invoice", key="b", recipients=["ada@example.org"], status="sent"
    )
    changelist = reverse("admin:invoices_emaildelivery_changelist")
    assert admin_client_.get(changelist).status_code == 200
    assert admin_client_.get(reverse("admin:invoices_receipt_changelist")).status_code == 200

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client_.post(
            changelist,
            {"action": "try_again", ACTION_CHECKBOX_NAME: [failed.pk, sent.pk]},
            follow=True,
        )

    assert b"1 email(s) queued again." in response.content
    assert EmailDelivery.objects.get(pk=failed.pk).status == EmailStatus.SENT
    assert EmailDelivery.objects.get(pk=sent.pk).status == EmailStatus.SENT
    assert len(mailoutbox) == 1


def test_admin_redelivers_a_failed_callback(admin_client_, acme):
    from invoices.models import CallbackDelivery, CallbackStatus

    invoice = make_invoice(acme, issue=True, callback_url="https://shop.example/cb")
    delivery = CallbackDelivery.objects.get(invoice=invoice)
    CallbackDelivery.objects.filter(pk=delivery.pk).update(status=CallbackStatus.FAILED)
    response = admin_client_.post(
        reverse("admin:invoices_callbackdelivery_changelist"),
        {"action": "redeliver", "_selected_action": [delivery.pk]},
    )
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert delivery.status == CallbackStatus.PENDING
    page = admin_client_.get(reverse("admin:invoices_callbackdelivery_change", args=[delivery.pk]))
    assert page.status_code == 200
