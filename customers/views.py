from copy import copy

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from customers.forms import CustomerForm, InlineCustomerForm
from customers.selectors import customer_list, customer_scope
from customers.services import (
    customer_archive,
    customer_create,
    customer_unarchive,
    customer_update,
)
from merchants.access import MerchantRequest, merchant_view
from merchants.forms import form_add_service_errors
from merchants.models import Role
from merchants.validators import without_nul

PAGE_SIZE = 25


@merchant_view()
@vary_on_headers("HX-Request")
def customer_index(request: MerchantRequest) -> HttpResponse:
    query = without_nul(request.GET.get("q", ""))
    show_archived = request.GET.get("archived") == "1"
    customers = customer_list(
        merchant=request.merchant,
        query=query,
        include_archived=show_archived,
    )
    page = Paginator(customers, PAGE_SIZE).get_page(request.GET.get("page"))
    template = "customers/list.html"
    if request.htmx:
        template += "#results"
    return render(request, template, {"page": page, "query": query, "show_archived": show_archived})


def _save_with_form(form, save) -> bool:
    """Run a service; its field errors land on the form. True when saved."""
    try:
        save()
    except ValidationError as error:
        form_add_service_errors(form, error)
        return False
    return True


@merchant_view(Role.STAFF)
def customer_new(request: MerchantRequest) -> HttpResponse:
    form = CustomerForm(request.POST or None)
    if (
        request.method == "POST"
        and form.is_valid()
        and _save_with_form(
            form, lambda: customer_create(merchant=request.merchant, **form.cleaned_data)
        )
    ):
        messages.success(request, f"{form.cleaned_data['name']} was added.")
        return redirect("customer_list")
    return render(request, "customers/form.html", {"form": form, "customer": None})


@merchant_view(Role.STAFF)
def customer_edit(request: MerchantRequest, pk: int) -> HttpResponse:
    customer = get_object_or_404(customer_scope(merchant=request.merchant), pk=pk)
    # Validate a copy, so a refused POST leaves the page title showing the saved customer.
    form = CustomerForm(request.POST or None, instance=copy(customer))
    if request.method == "POST" and form.is_valid():
        # The form's instance was already changed by validation; reload so the service starts clean.
        fresh = get_object_or_404(customer_scope(merchant=request.merchant), pk=pk)
        if _save_with_form(form, lambda: customer_update(customer=fresh, **form.cleaned_data)):
            messages.success(request, "Customer saved.")
            return redirect("customer_list")
    return render(request, "customers/form.html", {"form": form, "customer": customer})


@merchant_view(Role.STAFF)
@require_POST
def customer_archive_toggle(request: MerchantRequest, pk: int) -> HttpResponse:
    customer = get_object_or_404(customer_scope(merchant=request.merchant), pk=pk)
    if customer.is_archived:
        customer_unarchive(customer=customer)
        messages.success(request, f"{customer.name} is active again.")
    else:
        customer_archive(customer=customer)
        messages.success(request, f"{customer.name} was archived; their invoices stay.")
    return redirect("customer_list")


@merchant_view(Role.STAFF)
def customer_inline_new(request: MerchantRequest) -> HttpResponse:
    """The invoice editor's "New customer" dialog: on success the customer picker is swapped in
    with the new customer selected, so the invoice being written is never lost."""
    form = InlineCustomerForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        created = {}

        def save() -> None:
            created["customer"] = customer_create(merchant=request.merchant, **form.cleaned_data)

        if _save_with_form(form, save):
            customers = customer_list(merchant=request.merchant)
            response = render(
                request,
                "customers/inline_created.html",
                {
                    "customers": customers,
                    "selected": created["customer"],
                    "blank_form": InlineCustomerForm(),
                },
            )
            response["HX-Trigger"] = "customer-created"
            return response
    return render(request, "customers/inline_form.html", {"form": form})
