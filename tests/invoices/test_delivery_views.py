"""The dashboard side of delivery: Create and send, previews, Send and Resend, email history,
downloads for the merchant and, by token, for the payer."""

import io
import re
import secrets
from datetime import timedelta

import pytest
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from pypdf import PdfReader

from invoices.delivery import NO_CUSTOMER_FOR_SENDING, NO_RECIPIENT
from invoices.models import EmailDelivery, EmailStatus, Invoice, InvoiceEvent, LineItem
from invoices.services import invoice_mark_paid, invoice_void
from tests.factories import CustomerFactory, make_invoice

INJECTION = '<script>alert("x")</script>'


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()


def _messages(response) -> list[str]:
    return [message.message for message in get_messages(response.wsgi_request)]


def _counts() -> tuple[int, int, int, int]:
    return (
        Invoice.objects.count(),
        LineItem.objects.count(),
        InvoiceEvent.objects.count(),
        EmailDelivery.objects.count(),
    )


def _editor(customer=None, **overrides) -> dict:
    data = {
        "customer": customer.pk if customer else "",
        "currency": "USD",
        "kind": "one_time",
        "pricing_mode": "no_timer",
        "fee_payer": "merchant",
        "items-0-name": "Design",
        "items-0-quantity": "2",
        "items-0-unit_price": "150.00",
        "items-1-name": "Hosting",
        "items-1-quantity": "12",
        "items-1-unit_price": "9.99",
        "action": "save",
    }
    data.update(overrides)
    return data


def _pdf_text(content: bytes) -> str:
    return " ".join(
        " ".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages).split()
    )


# Create and send / Create only ----------------------------------------------------------------


def test_create_and_send_issues_the_invoice_and_emails_it(
    client_for, bob, acme_customer, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(bob).post(
            reverse("invoice_new"), _editor(acme_customer, action="send")
        )

    invoice = Invoice.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("invoice_detail", kwargs={"pk": invoice.pk})
    assert invoice.status == "open"
    assert _messages(response) == ["Invoice INV-00001 issued and on its way to ada@example.org."]
    [message] = mailoutbox
    assert message.to == ["ada@example.org"]
    assert message.attachments[0][0] == "INV-00001.pdf"
    assert list(invoice.events.values_list("type", "actor_user__email")) == [
        ("invoice.created", "bob@acme.test"),
        ("invoice.issued", "bob@acme.test"),
        ("email.sent", "bob@acme.test"),
    ]


def test_create_and_send_without_a_customer_saves_nothing_and_says_why(client_for, bob, mailoutbox):
    response = client_for(bob).post(reverse("invoice_new"), _editor(action="send"))

    assert response.status_code == 422
    assert response.context["form"].errors["customer"] == [NO_CUSTOMER_FOR_SENDING]
    assert "use “Create only” and download the PDF" in response.content.decode()
    assert _counts() == (0, 0, 0, 0)
    assert mailoutbox == []


def test_create_only_issues_without_an_email(
    client_for, bob, acme_customer, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(bob).post(
            reverse("invoice_new"), _editor(acme_customer, action="issue")
        )
    invoice = Invoice.objects.get()
    assert invoice.status == "open"
    assert _messages(response) == ["Invoice INV-00001 issued."]
    assert mailoutbox == []
    assert EmailDelivery.objects.count() == 0


def test_issue_and_send_a_draft(
    client_for, bob, acme, acme_customer, mailoutbox, django_capture_on_commit_callbacks
):
    draft = make_invoice(acme, customer=acme_customer)
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(bob).post(
            reverse("invoice_edit", kwargs={"pk": draft.pk}), _editor(acme_customer, action="send")
        )
    draft.refresh_from_db()
    assert response.status_code == 302
    assert draft.status == "open"
    assert [m.to for m in mailoutbox] == [["ada@example.org"]]


def test_editor_offers_send_create_only_and_draft_with_enter_saving_a_draft(client_for, bob):
    page = client_for(bob).get(reverse("invoice_new")).content.decode()
    form = page[page.index('<form id="invoice-form"') :]
    submits = re.findall(r'<button[^>]*type="submit"[^>]*>', form)
    # The first submit button is the one Enter presses: it must never send anything.
    assert 'value="save"' in submits[0]
    assert ">Create and send</button>" in page
    assert ">Create only</button>" in page
    assert ">Save draft</button>" in page
    assert 'name="preview-frame"' in page
    assert f'formaction="{reverse("invoice_preview")}#toolbar=0' in page


# Previews -------------------------------------------------------------------------------------------


def test_pdf_preview_shows_the_unsaved_invoice_and_saves_nothing(client_for, bob, acme_customer):
    response = client_for(bob).post(
        reverse("invoice_preview"), _editor(acme_customer, preview="pdf")
    )

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'inline; filename="INV-00001.pdf"'
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self'" in response["Content-Security-Policy"]
    text = _pdf_text(response.content)
    assert "INV-00001" in text
    assert "Ada Lovelace" in text
    assert "1 Design 2 150.00 300.00" in text
    assert "Amount due $419.88" in text
    assert "http://testserver/pay/preview/" in text
    assert _counts() == (0, 0, 0, 0)


def test_email_preview_shows_the_envelope_and_the_body_sandboxed(client_for, bob, acme_customer):
    response = client_for(bob).post(
        reverse("invoice_preview"), _editor(acme_customer, preview="email")
    )

    body = response.content.decode()
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    csp = response["Content-Security-Policy"]
    assert "sandbox" in csp
    assert "default-src 'none'" in csp
    assert "style-src 'unsafe-inline'" in csp
    assert "script-src" not in csp  # falls back to default-src 'none'
    assert response["X-Frame-Options"] == "SAMEORIGIN"
    assert "Acme Tools &lt;billing@localhost&gt;" in body
    assert "ada@example.org" in body
    assert "Invoice INV-00001 from Acme Tools: $419.88" in body
    assert "INV-00001.pdf" in body
    assert "Design" in body and "Pay $419.88" in body
    assert _counts() == (0, 0, 0, 0)


def test_preview_skips_rows_that_do_not_parse_yet(client_for, bob, acme_customer):
    data = _editor(acme_customer, preview="pdf", **{"items-1-unit_price": "oops"})
    text = _pdf_text(client_for(bob).post(reverse("invoice_preview"), data).content)
    assert "Design" in text
    assert "Hosting" not in text
    assert "Amount due $300.00" in text


def test_preview_of_a_draft_uses_its_number_and_link(client_for, bob, acme, acme_customer):
    make_invoice(acme)
    draft = make_invoice(acme, customer=acme_customer)
    url = reverse("invoice_preview") + f"?draft={draft.pk}"
    text = _pdf_text(client_for(bob).post(url, _editor(acme_customer, preview="pdf")).content)
    assert draft.reference in text
    assert draft.pay_url in text


def test_preview_escapes_what_was_typed(client_for, bob, acme_customer):
    data = _editor(acme_customer, preview="email", description=INJECTION)
    data["items-0-name"] = INJECTION
    body = client_for(bob).post(reverse("invoice_preview"), data).content.decode()
    assert "<script>" not in body
    assert "&lt;script&gt;" in body


def test_saved_invoice_email_preview(client_for, victor, acme, acme_customer):
    invoice = make_invoice(acme, customer=acme_customer, issue=True)
    Invoice.objects.filter(pk=invoice.pk).update(due_date=timezone.localdate() - timedelta(days=2))
    url = reverse("invoice_email_preview", kwargs={"pk": invoice.pk})

    page = client_for(victor).get(url, {"kind": "reminder_overdue"})

    assert page.status_code == 200
    body = page.content.decode()
    assert f"Overdue: invoice {invoice.reference} from Acme Tools" in body
    assert invoice.pay_url in body


# The invoice page -------------------------------------------------------------------------------------


@pytest.fixture
def open_invoice(acme, acme_customer):
    return make_invoice(acme, customer=acme_customer, issue=True)


def test_open_invoice_offers_send_and_download(client_for, alice, open_invoice):
    page = client_for(alice).get(reverse("invoice_detail", kwargs={"pk": open_invoice.pk}))
    body = page.content.decode()
    assert f'action="{reverse("invoice_send", kwargs={"pk": open_invoice.pk})}"' in body
    assert "Send invoice</button>" in body
    assert f'href="{reverse("invoice_pdf", kwargs={"pk": open_invoice.pk})}"' in body
    assert "Not sent yet" in body


def test_viewer_may_download_but_not_send(client_for, victor, open_invoice):
    body = (
        client_for(victor)
        .get(reverse("invoice_detail", kwargs={"pk": open_invoice.pk}))
        .content.decode()
    )
    assert reverse("invoice_pdf", kwargs={"pk": open_invoice.pk}) in body
    assert reverse("invoice_send", kwargs={"pk": open_invoice.pk}) not in body


def test_send_button_sends_then_becomes_resend_and_the_history_shows_it(
    client_for, alice, open_invoice, mailoutbox, django_capture_on_commit_callbacks
):
    client = client_for(alice)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("invoice_send", kwargs={"pk": open_invoice.pk}))

    detail = reverse("invoice_detail", kwargs={"pk": open_invoice.pk})
    assert response["Location"] == detail + "?tab=emails"
    assert _messages(response) == [f"Sending {open_invoice.reference} to ada@example.org."]
    assert len(mailoutbox) == 1
    body = client.get(detail, {"tab": "emails"}).content.decode()
    assert "Resend</button>" in body
    assert 'badge-email-sent">Sent<' in body
    assert f"“Invoice {open_invoice.reference} from Acme Tools: $300.00”" in body
    assert f"by {escape(str(alice))}" in body
    timeline = client.get(detail).content.decode()
    assert "Email sent" in timeline and "Invoice to ada@example.org" in timeline


def test_sending_without_a_customer_email_says_so(client_for, alice, acme, mailoutbox):
    invoice = make_invoice(acme, issue=True)
    client = client_for(alice)
    page = client.get(reverse("invoice_detail", kwargs={"pk": invoice.pk})).content.decode()
    assert "no customer email address, so it cannot be emailed" in page
    assert 'title="No customer email address"' in page

    response = client.post(reverse("invoice_send", kwargs={"pk": invoice.pk}))
    assert _messages(response) == [NO_RECIPIENT]
    assert EmailDelivery.objects.count() == 0
    # …but it can still be downloaded.
    download = client.get(reverse("invoice_pdf", kwargs={"pk": invoice.pk}))
    assert download.status_code == 200
    assert download["Content-Type"] == "application/pdf"


def test_sending_a_draft_is_refused(client_for, alice, acme, acme_customer):
    draft = make_invoice(acme, customer=acme_customer)
    response = client_for(alice).post(reverse("invoice_send", kwargs={"pk": draft.pk}))
    assert _messages(response) == ["Issue the invoice before sending it."]


def test_failed_send_is_shown_with_the_error_and_can_be_tried_again(
    client_for, alice, open_invoice, mailoutbox, django_capture_on_commit_callbacks
):
    failed = EmailDelivery.objects.create(
        invoice=open_invoice,
        kind="invoice",
        key="invoice:failed",
        recipients=["ada@example.org"],
        status=EmailStatus.FAILED,
        error="Postmark API response 422: <b>Inactive recipient</b>",
        attempts=1,
    )
    client = client_for(alice)
    detail = reverse("invoice_detail", kwargs={"pk": open_invoice.pk})
    page = client.get(detail).content.decode()
    assert "The invoice was not sent to ada@example.org." in page
    assert "Postmark API response 422: &lt;b&gt;Inactive recipient&lt;/b&gt;" in page
    retry = reverse("email_retry", kwargs={"pk": failed.pk})
    assert f'action="{retry}"' in page

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(retry)

    assert response["Location"] == detail + "?tab=emails"
    assert _messages(response) == ["Trying again to send it to ada@example.org."]
    failed.refresh_from_db()
    assert (failed.status, failed.attempts, failed.error) == (EmailStatus.SENT, 2, "")
    assert len(mailoutbox) == 1
    assert "was not sent" not in client.get(detail).content.decode()

    again = client.post(retry)
    assert _messages(again) == ["This email was sent or is on its way; there is nothing to retry."]
    assert len(mailoutbox) == 1


def test_emails_tab_polls_while_an_email_is_on_its_way_and_stops_after(
    client_for, alice, open_invoice, django_capture_on_commit_callbacks
):
    client = client_for(alice)
    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("invoice_send", kwargs={"pk": open_invoice.pk}))
    detail = reverse("invoice_detail", kwargs={"pk": open_invoice.pk})

    pending = client.get(detail, {"tab": "emails"}, headers={"HX-Request": "true"})
    body = pending.content.decode().strip()
    assert body.startswith('<div id="emails" hx-get="?tab=emails" hx-trigger="every 2s"')
    assert "<html" not in body
    assert "HX-Request" in pending["Vary"]

    EmailDelivery.objects.update(status=EmailStatus.SENT, sent_at=timezone.now())
    done = client.get(detail, {"tab": "emails"}, headers={"HX-Request": "true"})
    assert done.content.decode().strip().startswith('<div id="emails">')


def test_email_history_escapes_subjects(client_for, alice, acme):
    customer = CustomerFactory(merchant=acme, name=INJECTION, email="e@x.org")
    invoice = make_invoice(acme, customer=customer, issue=True)
    EmailDelivery.objects.create(
        invoice=invoice,
        kind="invoice",
        key="k",
        recipients=["e@x.org"],
        status="sent",
        subject=f"Invoice for {INJECTION}",
    )
    body = (
        client_for(alice)
        .get(reverse("invoice_detail", kwargs={"pk": invoice.pk}), {"tab": "emails"})
        .content.decode()
    )
    assert "<script>alert" not in body
    assert "Invoice for &lt;script&gt;" in body


# Merchant downloads ------------------------------------------------------------------------------------


def test_merchant_download_is_an_attachment_with_an_etag_and_revalidates(
    client_for, victor, open_invoice
):
    client = client_for(victor)
    url = reverse("invoice_pdf", kwargs={"pk": open_invoice.pk})

    response = client.get(url)
    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{open_invoice.reference}.pdf"'
    assert response["Cache-Control"] == "private, no-cache"
    etag = response["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{64}"', etag)

    unchanged = client.get(url, headers={"If-None-Match": etag})
    assert (unchanged.status_code, unchanged.content) == (304, b"")

    Invoice.objects.filter(pk=open_invoice.pk).update(status="paid")
    changed = client.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed["ETag"] != etag
    assert "PAID" in _pdf_text(changed.content)

    inline = client.get(url, {"inline": "1"})
    assert inline["Content-Disposition"].startswith("inline;")


def test_receipt_download_exists_once_paid(client_for, alice, open_invoice):
    client = client_for(alice)
    url = reverse("invoice_receipt", kwargs={"pk": open_invoice.pk})
    assert client.get(url).status_code == 404

    invoice_mark_paid(invoice=open_invoice, reference="WIRE-9", by=alice)
    response = client.get(url, {"n": "1"})
    assert response.status_code == 200
    assert response["Content-Disposition"] == (
        f'attachment; filename="{open_invoice.reference}-R1-receipt.pdf"'
    )
    assert "WIRE-9" in _pdf_text(response.content)
    assert client.get(url, {"n": "2"}).status_code == 404
    page = client.get(reverse("invoice_detail", kwargs={"pk": open_invoice.pk})).content.decode()
    assert f"{url}?n=1" in page


def test_render_failure_is_a_clear_503(client_for, alice, acme, settings):
    invoice = make_invoice(acme, issue=True, items=[(f"Line {n}", "1", "1.00") for n in range(150)])
    settings.PDF_RENDER_TIMEOUT_SECONDS = 0.02
    response = client_for(alice).get(reverse("invoice_pdf", kwargs={"pk": invoice.pk}))
    assert response.status_code == 503
    assert response.content.startswith(b"The PDF could not be made: The PDF took longer than")


# The payer's downloads by token -----------------------------------------------------------------------


def test_payer_downloads_the_invoice_by_its_token_without_signing_in(client, open_invoice):
    response = client.get(
        reverse("public_invoice_pdf", kwargs={"token": open_invoice.public_token})
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == f'attachment; filename="{open_invoice.reference}.pdf"'
    assert response["X-Robots-Tag"] == "noindex, nofollow"
    assert response["Referrer-Policy"] == "no-referrer"
    assert open_invoice.reference in _pdf_text(response.content)


def test_payer_link_names_the_route_the_payment_page_uses(open_invoice):
    assert (
        reverse("public_invoice_pdf", kwargs={"token": open_invoice.public_token})
        == f"/invoice/{open_invoice.public_token}.pdf"
    )


def test_unknown_draft_void_and_malformed_tokens_get_the_same_404(client, acme, acme_customer):
    draft = make_invoice(acme, customer=acme_customer)
    void = invoice_void(invoice=make_invoice(acme, customer=acme_customer))
    issued = make_invoice(acme, customer=acme_customer, issue=True)
    tokens = [
        secrets.token_urlsafe(32),
        draft.public_token,
        void.public_token,
        issued.public_token.swapcase(),
        issued.public_token[:-1],
        "short",
    ]
    responses = [
        client.get(reverse("public_invoice_pdf", kwargs={"token": token})) for token in tokens
    ]
    assert {(r.status_code, r.content) for r in responses} == {
        (responses[0].status_code, responses[0].content)
    }
    assert responses[0].status_code == 404


def test_payer_receipt_by_token(client, alice, open_invoice):
    url = reverse("public_receipt_pdf", kwargs={"token": open_invoice.public_token})
    assert client.get(url).status_code == 404
    invoice_mark_paid(invoice=open_invoice, reference="WIRE-1", by=alice)
    response = client.get(url)
    assert response.status_code == 200
    assert f"{open_invoice.reference}-R1" in _pdf_text(response.content)
    missing = reverse("public_receipt_pdf", kwargs={"token": secrets.token_urlsafe(32)})
    assert client.get(missing).status_code == 404


# Settings ----------------------------------------------------------------------------------------------


def test_owner_turns_reminders_off_and_picks_letter_paper(client_for, alice, acme):
    response = client_for(alice).post(
        reverse("merchant_settings"),
        {
            "name": "Acme Tools",
            "default_currency": "USD",
            "default_fee_payer": "merchant",
            "invoice_prefix": "INV-",
            "brand_colour": "#4f46e5",
            "paper_size": "letter",
        },
    )
    assert response.status_code == 302
    acme.refresh_from_db()
    assert (acme.send_reminders, acme.paper_size) == (False, "letter")
