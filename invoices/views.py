from decimal import Decimal

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from customers.forms import InlineCustomerForm
from invoices.forms import (
    IntegrationForm,
    InvoiceFilterForm,
    InvoiceForm,
    LineItemForm,
    MarkPaidForm,
    bound_item_forms,
    initial_item_forms,
)
from invoices.models import Invoice, InvoiceKind, InvoiceStatus
from invoices.rules import LineItemInput, invoice_totals, line_amount
from invoices.selectors import dashboard_summary, invoice_detail, invoice_list, invoice_scope
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
from merchants.access import MerchantRequest, merchant_view
from merchants.models import Role

PAGE_SIZE = 25


@merchant_view()
def dashboard(request: MerchantRequest) -> HttpResponse:
    summary = dashboard_summary(merchant=request.merchant)
    return render(request, "invoices/dashboard.html", {"summary": summary})


@merchant_view()
@vary_on_headers("HX-Request")
def invoice_index(request: MerchantRequest) -> HttpResponse:
    merchant = request.merchant
    filters = InvoiceFilterForm(request.GET or None)
    params = filters.cleaned_data if filters.is_valid() else {}
    invoices = invoice_list(
        merchant=merchant,
        status=params.get("status") or "",
        customer_id=params.get("customer"),
        created_from=params.get("created_from"),
        created_to=params.get("created_to"),
        query=params.get("q") or "",
        overdue=bool(params.get("overdue")),
    )
    page = Paginator(invoices, PAGE_SIZE).get_page(request.GET.get("page"))
    query_string = request.GET.copy()
    query_string.pop("page", None)
    context = {"page": page, "filters": filters, "query_string": query_string.urlencode()}
    template = "invoices/list.html#results" if request.htmx else "invoices/list.html"
    return render(request, template, context)


def _invoice_input(form: InvoiceForm, item_forms: list[LineItemForm]) -> InvoiceInput:
    data = form.cleaned_data
    return InvoiceInput(
        customer=data["customer"],
        currency=data["currency"],
        items=[item.to_input() for item in item_forms],
        description=data["description"],
        due_date=data["due_date"],
        kind=data["kind"],
        pricing_mode=data["pricing_mode"],
        accepted_assets=list(data["accepted_assets"]),
        fee_payer=data["fee_payer"],
        foreign_id=data["foreign_id"],
        tracking_id=data["tracking_id"],
        callback_url=data["callback_url"],
        payment_page_url=data["payment_page_url"],
        payment_page_button=data["payment_page_button"],
    )


def _spread_errors(
    error: ValidationError, form: InvoiceForm, item_forms: list[LineItemForm]
) -> None:
    """Service errors are keyed `field` or `items.<n>.<field>`; put each where the eye looks."""
    if not hasattr(error, "error_dict"):
        # An error about the invoice as a whole (e.g. nothing to pay when issuing).
        form.add_error(None, error.messages)
        return
    rows = {str(position): item for position, item in enumerate(item_forms)}
    for key, messages_ in error.message_dict.items():
        if key.startswith("items."):
            _, position, field = key.split(".", 2)
            rows[position].add_error(field, messages_)
        elif key in form.fields:
            form.add_error(key, messages_)
        else:
            form.add_error(None, messages_)


def _invoice_editor(request: MerchantRequest, invoice: Invoice | None) -> HttpResponse:
    merchant = request.merchant
    if request.method == "POST":
        form = InvoiceForm(request.POST, merchant=merchant, invoice=invoice)
        item_forms = bound_item_forms(request.POST, form.currency_obj)
        items_valid = all([item.is_valid() for item in item_forms])
        if form.is_valid() and items_valid:
            data = _invoice_input(form, item_forms)
            issue = request.POST.get("action") == "issue"
            try:
                if invoice is None:
                    invoice = invoice_create(
                        merchant=merchant, data=data, by=request.user, issue=issue
                    )
                else:
                    invoice = invoice_update_draft(invoice=invoice, data=data, by=request.user)
                    if issue:
                        invoice = invoice_issue(invoice=invoice, by=request.user)
            except ValidationError as error:
                _spread_errors(error, form, item_forms)
            except InvoiceStateError as error:
                messages.error(request, str(error))
                return (
                    redirect("invoice_detail", pk=invoice.pk)
                    if invoice
                    else redirect("invoice_list")
                )
            else:
                verb = "issued" if issue else "saved as a draft"
                messages.success(request, f"Invoice {invoice.reference} {verb}.")
                return redirect("invoice_detail", pk=invoice.pk)
        if not item_forms:
            item_forms = [LineItemForm(currency=form.currency_obj, index=0)]
        status = 422
    else:
        initial = {}
        if invoice is not None:
            initial = {
                "customer": invoice.customer_id,
                "currency": invoice.currency,
                "description": invoice.description,
                "due_date": invoice.due_date,
                "kind": invoice.kind,
                "pricing_mode": invoice.pricing_mode,
                "accepted_assets": invoice.accepted_assets,
                "fee_payer": invoice.fee_payer,
                "foreign_id": invoice.foreign_id,
                "tracking_id": invoice.tracking_id,
                "callback_url": invoice.callback_url,
                "payment_page_url": invoice.payment_page_url,
                "payment_page_button": invoice.payment_page_button,
            }
        elif request.GET.get("customer", "").isdigit():
            initial["customer"] = int(request.GET["customer"])
        form = InvoiceForm(initial=initial, merchant=merchant, invoice=invoice)
        item_forms = initial_item_forms(invoice, form.currency_obj)
        status = 200
    context = {
        "form": form,
        "item_forms": item_forms,
        "next_index": max(item.index for item in item_forms) + 1,
        "invoice": invoice,
        "customer_form": InlineCustomerForm(),
        "totals": _totals_context(form, item_forms),
    }
    return render(request, "invoices/form.html", context, status=status)


def _totals_context(form: InvoiceForm, item_forms: list[LineItemForm]) -> dict:
    """Live totals for the editor; rows that do not parse yet count as nothing."""
    currency = form.currency_obj
    lines = []
    for item in item_forms:
        amount = None
        if currency is not None and item.is_bound and item.is_valid():
            amount = line_amount(item.to_input(), currency)
        elif (
            currency is not None
            and not item.is_bound
            and item.initial.get("unit_price") is not None
        ):
            amount = line_amount(
                LineItemInput(
                    name="",
                    quantity=item.initial["quantity"],
                    unit_price=item.initial["unit_price"],
                ),
                currency,
            )
        item.line_amount = amount
        lines.append({"index": item.index, "amount": amount})
    priced = [
        LineItemInput(name="", quantity=Decimal(1), unit_price=Decimal(amount))
        for amount in (line["amount"] for line in lines)
        if amount is not None
    ]
    subtotal, total = invoice_totals(priced, currency) if currency else (None, None)
    return {
        "currency": currency.code if currency else "",
        "lines": lines,
        "subtotal": subtotal,
        "total": total,
    }


@merchant_view(Role.STAFF)
def invoice_new(request: MerchantRequest) -> HttpResponse:
    return _invoice_editor(request, None)


@merchant_view(Role.STAFF)
def invoice_edit(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(
        invoice_scope(merchant=request.merchant).prefetch_related("items"), pk=pk
    )
    if invoice.status != InvoiceStatus.DRAFT:
        messages.info(request, "Only drafts can be edited. Integration fields stay editable below.")
        return redirect("invoice_detail", pk=invoice.pk)
    return _invoice_editor(request, invoice)


@merchant_view(Role.STAFF)
def invoice_item_row(request: MerchantRequest) -> HttpResponse:
    """One more empty line-item row for the editor (htmx), and the bumped next index."""
    raw = request.GET.get("next", "0")
    index = int(raw) if raw.isdigit() and int(raw) < 10_000 else 0
    row = LineItemForm(currency=None, index=index)
    return render(
        request, "invoices/_item_row.html", {"item": row, "next_index": index + 1, "oob": True}
    )


@merchant_view(Role.STAFF)
@require_POST
def invoice_totals_preview(request: MerchantRequest) -> HttpResponse:
    form = InvoiceForm(request.POST, merchant=request.merchant)
    item_forms = [
        LineItemForm(request.POST, currency=form.currency_obj, index=i.index)
        for i in bound_item_forms(request.POST, form.currency_obj)
    ]
    return render(
        request, "invoices/_totals.html", {"totals": _totals_context(form, item_forms), "oob": True}
    )


@merchant_view()
def invoice_show(request: MerchantRequest, pk: int) -> HttpResponse:
    try:
        invoice = invoice_detail(merchant=request.merchant, pk=pk)
    except Invoice.DoesNotExist:
        raise Http404("No such invoice.") from None
    context = {
        "invoice": invoice,
        "integration_form": IntegrationForm(instance=invoice),
        "mark_paid_form": MarkPaidForm(),
        "can_mark_paid": invoice.kind == InvoiceKind.ONE_TIME
        and invoice.status
        in (InvoiceStatus.OPEN, InvoiceStatus.PROCESSING, InvoiceStatus.UNRESOLVED),
        "tab": request.GET.get("tab", "timeline"),
    }
    return render(request, "invoices/detail.html", context)


ACTIONS = {
    "issue": (invoice_issue, "Invoice issued."),
    "void": (invoice_void, "Draft voided."),
    "close": (invoice_close, "Invoice closed; it accepts no more payments."),
    "cancel": (invoice_cancel, "Invoice cancelled."),
}


@merchant_view(Role.STAFF)
@require_POST
def invoice_action(request: MerchantRequest, pk: int, action: str) -> HttpResponse:
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    if action not in ACTIONS:
        raise Http404("No such action.")
    service, done = ACTIONS[action]
    try:
        service(invoice=invoice, by=request.user)
    except (InvoiceStateError, ValidationError) as error:
        messages.error(
            request, " ".join(error.messages) if isinstance(error, ValidationError) else str(error)
        )
    else:
        messages.success(request, done)
    return redirect("invoice_detail", pk=invoice.pk)


@merchant_view(Role.STAFF)
@require_POST
def invoice_mark_paid_view(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    form = MarkPaidForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Enter the payment reference to mark the invoice as paid.")
        return redirect("invoice_detail", pk=invoice.pk)
    try:
        invoice_mark_paid(
            invoice=invoice, reference=form.cleaned_data["reference"], by=request.user
        )
    except (InvoiceStateError, ValidationError) as error:
        messages.error(
            request, " ".join(error.messages) if isinstance(error, ValidationError) else str(error)
        )
    else:
        messages.success(request, "Marked as paid.")
    return redirect("invoice_detail", pk=invoice.pk)


@merchant_view(Role.STAFF)
@require_POST
def invoice_integration(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    form = IntegrationForm(request.POST, instance=invoice)
    if form.is_valid():
        try:
            invoice_update_integration(
                invoice=invoice,
                by=request.user,
                **{k: form.cleaned_data[k] for k in form.fields},
            )
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            messages.success(request, "Integration settings saved.")
    else:
        messages.error(
            request,
            "; ".join(
                f"{form.fields[k].label}: {' '.join(map(str, v))}" for k, v in form.errors.items()
            ),
        )
    return redirect(reverse("invoice_detail", kwargs={"pk": invoice.pk}) + "?tab=settings")
