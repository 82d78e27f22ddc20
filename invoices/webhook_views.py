"""Settings → Webhooks: the merchant's endpoints, their secrets and what was delivered.

Served by the invoices app because deliveries (the outbox) live here; endpoints and secrets
are the merchants app's models and services.
"""

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from invoices.callbacks import callback_redeliver, callback_test_send
from invoices.models import CallbackDelivery
from merchants.access import MerchantRequest, merchant_view
from merchants.forms import form_add_service_errors
from merchants.integrations import (
    EVENT_TYPES,
    invoice_callback_signer,
    invoice_callback_signer_rotate,
    webhook_endpoint_create,
    webhook_endpoint_rotate,
    webhook_endpoint_update,
)
from merchants.models import Role, WebhookEndpoint
from merchants.security import require_recent_reauth

RECENT = 25


class EndpointForm(forms.Form):
    url = forms.URLField(
        label="Endpoint URL", max_length=500, assume_scheme="https", help_text="Public http(s)."
    )
    description = forms.CharField(max_length=120, required=False)
    events = forms.MultipleChoiceField(
        choices=[(event, event) for event in EVENT_TYPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event.",
    )
    enabled = forms.BooleanField(required=False, initial=True)


def _endpoints(request: MerchantRequest):
    return WebhookEndpoint.objects.filter(merchant=request.merchant)


@merchant_view(Role.OWNER)
@require_recent_reauth("Webhook endpoint added", detail_fields=("url",))
def webhook_list(request: MerchantRequest) -> HttpResponse:
    form = EndpointForm(request.POST or None, initial={"enabled": True})
    if request.method == "POST" and form.is_valid():
        try:
            endpoint = webhook_endpoint_create(
                merchant=request.merchant,
                url=form.cleaned_data["url"],
                description=form.cleaned_data["description"],
                events=form.cleaned_data["events"],
            )
        except ValidationError as error:
            form_add_service_errors(form, error)
        else:
            messages.success(
                request, "Endpoint added. Send it a test event to check your receiver."
            )
            return redirect("webhook_detail", pk=endpoint.pk)
    return render(
        request,
        "invoices/webhooks.html",
        {
            "form": form,
            "endpoints": _endpoints(request),
            "signer": invoice_callback_signer(merchant=request.merchant),
            "deliveries": CallbackDelivery.objects.filter(merchant=request.merchant)
            .select_related("invoice")
            .prefetch_related("log")[:RECENT],
        },
    )


@merchant_view(Role.OWNER)
@require_recent_reauth("Webhook endpoint changed", detail_fields=("url",))
def webhook_detail(request: MerchantRequest, pk: int) -> HttpResponse:
    endpoint = get_object_or_404(_endpoints(request), pk=pk)
    initial = {
        "url": endpoint.url,
        "description": endpoint.description,
        "events": endpoint.events,
        "enabled": endpoint.enabled,
    }
    form = EndpointForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            webhook_endpoint_update(endpoint=endpoint, **form.cleaned_data)
        except ValidationError as error:
            form_add_service_errors(form, error)
        else:
            messages.success(request, "Endpoint saved.")
            return redirect("webhook_detail", pk=endpoint.pk)
    return render(
        request,
        "invoices/webhook_detail.html",
        {
            "form": form,
            "endpoint": endpoint,
            "deliveries": endpoint.deliveries.select_related("invoice").prefetch_related("log")[
                :RECENT
            ],
        },
    )


@merchant_view(Role.OWNER)
@require_POST
@require_recent_reauth("Webhook signing secret rotated")
def webhook_rotate(request: MerchantRequest, pk: int) -> HttpResponse:
    endpoint = webhook_endpoint_rotate(endpoint=get_object_or_404(_endpoints(request), pk=pk))
    messages.success(
        request,
        "New secret made. Until "
        f"{endpoint.previous_secret_until:%b %-d, %H:%M} UTC callbacks carry a signature with "
        "the old secret too, so switch your receiver over before then.",
    )
    return redirect("webhook_detail", pk=endpoint.pk)


@merchant_view(Role.OWNER)
@require_POST
def webhook_test(request: MerchantRequest, pk: int) -> HttpResponse:
    endpoint = get_object_or_404(_endpoints(request), pk=pk)
    if not endpoint.enabled:
        messages.error(request, "Turn the endpoint on before sending it a test event.")
    else:
        callback_test_send(endpoint=endpoint)
        messages.success(request, "Test event queued; its attempt shows below in a moment.")
    return redirect("webhook_detail", pk=endpoint.pk)


@merchant_view(Role.OWNER)
@require_POST
@require_recent_reauth("Invoice callback secret rotated")
def invoice_signer_rotate(request: MerchantRequest) -> HttpResponse:
    invoice_callback_signer_rotate(merchant=request.merchant)
    messages.success(
        request, "New secret for invoice callback URLs; the old one signs too for now."
    )
    return redirect("webhook_list")


@merchant_view(Role.STAFF)
@require_POST
def callback_redeliver_view(request: MerchantRequest, pk: int) -> HttpResponse:
    delivery = get_object_or_404(
        CallbackDelivery.objects.filter(merchant=request.merchant).select_related("endpoint"), pk=pk
    )
    if delivery.endpoint is not None and not delivery.endpoint.enabled:
        messages.error(request, "This endpoint is turned off; turn it on to redeliver.")
    else:
        callback_redeliver(delivery=delivery)
        messages.success(request, f"{delivery.event_type} is being sent again to {delivery.url}.")
    if delivery.invoice_id is not None and request.POST.get("back") == "invoice":
        return redirect(reverse("invoice_detail", args=[delivery.invoice_id]) + "?tab=callbacks")
    if delivery.endpoint_id is not None:
        return redirect("webhook_detail", pk=delivery.endpoint_id)
    return redirect("webhook_list")
