"""Settings → Webhooks and API keys, and the invoice's Callbacks tab, as the merchant uses them."""

import re

from django.urls import reverse

from invoices.models import CallbackDelivery, CallbackStatus
from merchants.integrations import api_key_authenticate
from merchants.models import ApiKey, InvoiceCallbackSigner, WebhookEndpoint
from tests.factories import make_invoice
from tests.invoices.test_callbacks import Receiver


def test_owner_adds_an_endpoint_with_chosen_events(client_for, alice, acme):
    response = client_for(alice).post(
        reverse("webhook_list"),
        {"url": "https://erp.example/hooks", "events": ["invoice.paid", "invoice.failed"]},
    )
    endpoint = WebhookEndpoint.objects.get()
    assert response["Location"] == reverse("webhook_detail", args=[endpoint.pk])
    assert endpoint.merchant == acme
    assert endpoint.events == ["invoice.paid", "invoice.failed"]
    assert endpoint.secret.startswith("whsec_")


def test_private_address_is_refused_with_a_field_error(client_for, alice, settings):
    settings.CALLBACKS_ALLOW_PRIVATE = False
    response = client_for(alice).post(reverse("webhook_list"), {"url": "http://169.254.169.254/"})
    assert response.status_code == 200
    assert "link-local address" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_unknown_event_type_is_refused(client_for, alice):
    response = client_for(alice).post(
        reverse("webhook_list"), {"url": "https://erp.example/hooks", "events": ["invoice.eaten"]}
    )
    assert response.status_code == 200
    assert not WebhookEndpoint.objects.exists()


def test_send_test_event_reaches_the_receiver_signed(
    client_for, alice, acme, django_capture_on_commit_callbacks
):
    receiver = Receiver()
    try:
        client = client_for(alice)
        client.post(reverse("webhook_list"), {"url": receiver.url})
        endpoint = WebhookEndpoint.objects.get()
        with django_capture_on_commit_callbacks(execute=True):
            client.post(reverse("webhook_test", args=[endpoint.pk]))
    finally:
        receiver.close()
    assert len(receiver.requests) == 1
    assert b'"type":"webhook.test"' in receiver.requests[0]["body"]
    page = client.get(reverse("webhook_detail", args=[endpoint.pk])).content.decode()
    assert "webhook.test" in page
    assert "HTTP 200" in page


def test_rotating_keeps_the_old_secret_signing_for_the_grace_period(client_for, alice, acme):
    client = client_for(alice)
    client.post(reverse("webhook_list"), {"url": "https://erp.example/hooks"})
    endpoint = WebhookEndpoint.objects.get()
    old = endpoint.secret
    client.post(reverse("webhook_rotate", args=[endpoint.pk]))
    endpoint.refresh_from_db()
    assert endpoint.secret != old
    assert endpoint.previous_secret == old
    client.post(reverse("invoice_signer_rotate"))
    signer = InvoiceCallbackSigner.objects.get(merchant=acme)
    assert signer.previous_secret and signer.previous_secret != signer.secret


def test_invoice_callbacks_tab_lists_attempts_and_redelivers(
    client_for, alice, acme, django_capture_on_commit_callbacks
):
    receiver = Receiver(((500, "nope", {}, 0), (200, "thanks", {}, 0)))
    try:
        with django_capture_on_commit_callbacks(execute=True):
            invoice = make_invoice(acme, issue=True, callback_url=receiver.url)
        client = client_for(alice)
        tab = client.get(reverse("invoice_detail", args=[invoice.pk]), {"tab": "callbacks"})
        text = tab.content.decode()
        assert "invoice.created" in text
        assert "HTTP 500" in text
        assert "nope" in text
        delivery = CallbackDelivery.objects.get()
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(
                reverse("callback_redeliver", args=[delivery.pk]), {"back": "invoice"}
            )
        assert (
            response["Location"] == reverse("invoice_detail", args=[invoice.pk]) + "?tab=callbacks"
        )
    finally:
        receiver.close()
    delivery.refresh_from_db()
    assert delivery.status == CallbackStatus.DELIVERED
    assert list(delivery.log.values_list("status_code", "manual")) == [(500, False), (200, True)]


def test_new_api_key_is_shown_once_and_works(client_for, alice, acme):
    client = client_for(alice)
    response = client.post(reverse("api_key_list"), {"name": "Shop"})
    assert response["Cache-Control"] == "no-store"
    plaintext = re.search(r'id="new-key">(sb_[^<]+)<', response.content.decode()).group(1)
    assert api_key_authenticate(plaintext).merchant == acme
    again = client.get(reverse("api_key_list")).content.decode()
    assert plaintext not in again
    assert "Shop" in again


def test_revoked_key_stops_working(client_for, alice, acme):
    client = client_for(alice)
    response = client.post(reverse("api_key_list"), {"name": "Shop"})
    plaintext = re.search(r'id="new-key">(sb_[^<]+)<', response.content.decode()).group(1)
    key = ApiKey.objects.get()
    client.post(reverse("api_key_revoke", args=[key.pk]))
    assert api_key_authenticate(plaintext) is None
    api = client.get("/api/v1/invoices", HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    assert api.status_code == 401


def test_receiver_answer_is_shown_escaped(
    client_for, alice, acme, django_capture_on_commit_callbacks
):
    receiver = Receiver(((500, "<script>alert(1)</script>", {}, 0),))
    try:
        with django_capture_on_commit_callbacks(execute=True):
            invoice = make_invoice(acme, issue=True, callback_url=receiver.url)
    finally:
        receiver.close()
    page = client_for(alice).get(reverse("invoice_detail", args=[invoice.pk]), {"tab": "callbacks"})
    text = page.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<script>alert(1)" not in text
