"""Business settings pages for tax rates and other payment methods."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from invoices.forms import PaymentMethodForm, TaxRateForm
from invoices.models import PaymentMethod, TaxRate
from invoices.services import (
    payment_method_remove,
    payment_method_save,
    tax_rate_remove,
    tax_rate_save,
)
from merchants.access import MerchantRequest, merchant_view
from merchants.forms import form_add_service_errors
from merchants.models import Role


@merchant_view(Role.OWNER)
def tax_rate_list(request: MerchantRequest, pk: int | None = None) -> HttpResponse:
    merchant = request.merchant
    rate = (
        get_object_or_404(TaxRate, merchant=merchant, pk=pk, archived_at__isnull=True)
        if pk is not None
        else TaxRate(merchant=merchant)
    )
    form = TaxRateForm(request.POST or None, instance=rate)
    if request.method == "POST" and form.is_valid():
        try:
            tax_rate_save(rate=form.instance)
        except ValidationError as error:
            form_add_service_errors(form, error)
        else:
            messages.success(request, f"Tax rate {form.instance} saved.")
            return redirect("tax_rate_list")
    rates = TaxRate.objects.filter(merchant=merchant, archived_at__isnull=True)
    status = 422 if form.errors else 200
    return render(
        request,
        "invoices/tax_rates.html",
        {"form": form, "rates": rates, "editing": pk is not None},
        status=status,
    )


@merchant_view(Role.OWNER)
@require_POST
def tax_rate_delete(request: MerchantRequest, pk: int) -> HttpResponse:
    rate = get_object_or_404(TaxRate, merchant=request.merchant, pk=pk, archived_at__isnull=True)
    deleted = tax_rate_remove(rate=rate)
    messages.success(
        request,
        f"Tax rate {rate} deleted."
        if deleted
        else f"Tax rate {rate} removed; invoices that use it keep it.",
    )
    return redirect("tax_rate_list")


@merchant_view(Role.OWNER)
def payment_method_list(request: MerchantRequest, pk: int | None = None) -> HttpResponse:
    merchant = request.merchant
    method = (
        get_object_or_404(PaymentMethod, merchant=merchant, pk=pk, archived_at__isnull=True)
        if pk is not None
        else PaymentMethod(merchant=merchant)
    )
    form = PaymentMethodForm(request.POST or None, instance=method)
    if request.method == "POST" and form.is_valid():
        try:
            payment_method_save(method=form.instance)
        except ValidationError as error:
            form_add_service_errors(form, error)
        else:
            messages.success(request, f"Payment method {form.instance} saved.")
            return redirect("payment_method_list")
    methods = PaymentMethod.objects.filter(merchant=merchant, archived_at__isnull=True)
    status = 422 if form.errors else 200
    return render(
        request,
        "invoices/payment_methods.html",
        {"form": form, "methods": methods, "editing": pk is not None},
        status=status,
    )


@merchant_view(Role.OWNER)
@require_POST
def payment_method_delete(request: MerchantRequest, pk: int) -> HttpResponse:
    method = get_object_or_404(
        PaymentMethod, merchant=request.merchant, pk=pk, archived_at__isnull=True
    )
    payment_method_remove(method=method)
    messages.success(request, f"Payment method {method} removed; sent invoices keep it.")
    return redirect("payment_method_list")
