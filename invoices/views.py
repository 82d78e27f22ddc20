import hmac
import re
from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.csp import CSP
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.csp import csp_override
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from customers.forms import InlineCustomerForm
from invoices.delivery import (
    NO_CUSTOMER_FOR_SENDING,
    SENDING_STALE,
    customer_email,
    email_delivery_retry,
    invoice_create_and_send,
    invoice_issue_and_send,
    invoice_send,
)
from invoices.emails import PAYER_REQUESTS, invoice_email
from invoices.forms import (
    CreditNoteForm,
    IntegrationForm,
    InvoiceFilterForm,
    InvoiceForm,
    LineItemForm,
    MarkPaidForm,
    bound_item_forms,
    editor_tax_rates,
    initial_item_forms,
)
from invoices.models import (
    CreditNote,
    EmailKind,
    EmailStatus,
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    LineItem,
    PaymentMethod,
)
from invoices.pdf import Pdf, PdfError, credit_note_pdf, invoice_pdf, receipt_pdf
from invoices.rules import NO_DISCOUNT, Discount, DiscountKind, LineItemInput, compute_invoice
from invoices.selectors import (
    dashboard_summary,
    email_scope,
    invoice_count,
    invoice_detail,
    invoice_held_deposits,
    invoice_list,
    invoice_scope,
)
from invoices.services import (
    CREDITABLE,
    InvoiceInput,
    InvoiceStateError,
    credit_note_issue,
    credit_refund_note,
    invoice_accept_unresolved,
    invoice_apply_figures,
    invoice_cancel,
    invoice_close,
    invoice_create,
    invoice_issue,
    invoice_mark_paid,
    invoice_update_draft,
    invoice_update_integration,
    invoice_void,
    line_item_rows,
)
from merchants.access import MerchantRequest, merchant_view
from merchants.models import Merchant, Role
from merchants.money import Currency, get_currency
from merchants.validators import parse_id

PAGE_SIZE = 25
# What a list row shows ({% invoice_rows %}): an invoice has forty columns and its customer
# sixteen, and reading and converting all of them for 25 rows was a fifth of the page.
LIST_COLUMNS = (
    "reference",
    "kind",
    "foreign_id",
    "due_date",
    "created_at",
    "status",
    "failure_reason",
    "refund_state",
    "total",
    "currency",
    "customer",
    "customer__name",
)


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
    ).only(*LIST_COLUMNS)
    if not any(params.get(name) for name in params if name != "status"):
        # Nothing but the status to filter by: the kept counts say how many, no COUNT(*)
        # over the merchant's whole history.
        count = invoice_count(merchant=merchant, status=params.get("status") or "")
        page = _page(invoices, request.GET.get("page"), count)
    else:
        page = _page(invoices, request.GET.get("page"))
    query_string = request.GET.copy()
    query_string.pop("page", None)
    context = {"page": page, "filters": filters, "query_string": query_string.urlencode()}
    template = "invoices/list.html#results" if request.htmx else "invoices/list.html"
    return render(request, template, context)


def _page(rows: QuerySet, number: str | None, count: int | None = None) -> Page:
    """The page asked for, `count` being how many rows there are when that is known. On the
    first page of a search (most find a handful) it is learnt from the page itself: a row
    beyond the page is read with it, and when there is none the rows are the count, with no
    COUNT(*) beside them."""
    paginator = Paginator(rows, PAGE_SIZE)
    if count is not None:
        paginator.count = count  # type: ignore[misc]
    elif number in (None, "", "1"):
        first = list(rows[: PAGE_SIZE + 1])
        if len(first) <= PAGE_SIZE:
            paginator.count = len(first)  # type: ignore[misc]
        return Page(first[:PAGE_SIZE], 1, paginator)
    return paginator.get_page(number)


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
        discount=form.discount,
        notes=data["notes"],
        terms=data["terms"],
        terms_days=data["terms_days"],
        po_number=data["po_number"],
        footer=data["footer"],
        payment_methods=list(data["payment_methods"]),
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
            row = rows[position]
            row.add_error(field if field in row.fields else None, messages_)
        elif key in form.fields:
            form.add_error(key, messages_)
        else:
            form.add_error(None, messages_)


def _invoice_editor(request: MerchantRequest, invoice: Invoice | None) -> HttpResponse:
    merchant = request.merchant
    tax_rates = editor_tax_rates(merchant, invoice)
    if request.method == "POST":
        form = InvoiceForm(request.POST, merchant=merchant, invoice=invoice)
        item_forms = bound_item_forms(request.POST, form.currency_obj, tax_rates)
        items_valid = all([item.is_valid() for item in item_forms])
        if form.is_valid() and items_valid:
            data = _invoice_input(form, item_forms)
            action = request.POST.get("action")
            send = action == "send"
            issue = send or action == "issue"
            try:
                if send and data.customer is None:
                    # Refused before anything is saved: sending needs someone to send to.
                    raise ValidationError({"customer": NO_CUSTOMER_FOR_SENDING})
                if invoice is None and send:
                    invoice, _ = invoice_create_and_send(
                        merchant=merchant, data=data, by=request.user
                    )
                elif invoice is None:
                    invoice = invoice_create(
                        merchant=merchant, data=data, by=request.user, issue=issue
                    )
                else:
                    invoice = invoice_update_draft(invoice=invoice, data=data, by=request.user)
                    if send:
                        invoice, _ = invoice_issue_and_send(invoice=invoice, by=request.user)
                    elif issue:
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
                if send:
                    done = f"issued and on its way to {customer_email(invoice)}"
                else:
                    done = "issued" if issue else "saved as a draft"
                messages.success(request, f"Invoice {invoice.reference} {done}.")
                return redirect("invoice_detail", pk=invoice.pk)
        if not item_forms:
            item_forms = [LineItemForm(currency=form.currency_obj, index=0, tax_rates=tax_rates)]
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
                "discount_kind": invoice.discount_kind,
                "discount_value": invoice.discount_value if invoice.discount_kind else None,
                "notes": invoice.notes,
                "terms": invoice.terms,
                "terms_days": invoice.terms_days,
                "po_number": invoice.po_number,
                "footer": invoice.footer,
                "payment_methods": list(invoice.payment_methods.all()),
            }
        elif customer_id := parse_id(request.GET.get("customer")):
            initial["customer"] = customer_id
        form = InvoiceForm(initial=initial, merchant=merchant, invoice=invoice)
        item_forms = initial_item_forms(invoice, form.currency_obj, tax_rates)
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


def _editor_line(item: LineItemForm) -> LineItemInput | None:
    """What a row of the editor asks for, or None while it does not parse."""
    if item.is_bound:
        return item.to_input() if item.is_valid() else None
    if item.initial.get("unit_price") is None:
        return None
    kind, value = item.initial.get("discount_kind") or "", item.initial.get("discount_value")
    rate = item.tax_rates.get(item.initial.get("tax_rate") or 0)
    return LineItemInput(
        name="",
        quantity=item.initial["quantity"],
        unit_price=item.initial["unit_price"],
        discount=Discount(kind, value) if kind and value is not None else NO_DISCOUNT,
        tax=rate.spec if rate is not None else None,
    )


def _totals_context(form: InvoiceForm, item_forms: list[LineItemForm]) -> dict:
    """Live totals for the editor, by the same function as the saved invoice; rows that do not
    parse yet count as nothing."""
    currency = form.currency_obj
    parsed = [(item, _editor_line(item)) for item in item_forms]
    priced = [(item, line) for item, line in parsed if line is not None]
    figures = None
    if currency is not None:
        discount = form.discount if form.is_bound and form.is_valid() else NO_DISCOUNT
        if not form.is_bound:
            kind, value = (
                form.initial.get("discount_kind") or "",
                form.initial.get("discount_value"),
            )
            discount = Discount(kind, value) if kind and value is not None else NO_DISCOUNT
        inputs = [line for _, line in priced]
        subtotal = compute_invoice(inputs, currency).subtotal
        if discount.kind == DiscountKind.AMOUNT and discount.value > subtotal:
            discount = NO_DISCOUNT  # shown as a field error on save; the preview ignores it
        figures = compute_invoice(inputs, currency, discount)
    amounts = (
        {item.index: line.net for (item, _), line in zip(priced, figures.lines, strict=True)}
        if figures is not None
        else {}
    )
    lines = []
    for item in item_forms:
        item.line_amount = amounts.get(item.index)
        lines.append({"index": item.index, "amount": item.line_amount})
    return {
        "currency": currency.code if currency else "",
        "lines": lines,
        "subtotal": figures.subtotal if figures else None,
        "discount": figures.discount if figures else None,
        "taxes": figures.taxes if figures else [],
        "total": figures.total if figures else None,
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
    index = parse_id(request.GET.get("next"), limit=9_999) or 0
    row = LineItemForm(currency=None, index=index, tax_rates=editor_tax_rates(request.merchant))
    return render(
        request, "invoices/_item_row.html", {"item": row, "next_index": index + 1, "oob": True}
    )


@merchant_view(Role.STAFF)
@require_POST
def invoice_totals_preview(request: MerchantRequest) -> HttpResponse:
    form = InvoiceForm(request.POST, merchant=request.merchant)
    item_forms = bound_item_forms(
        request.POST, form.currency_obj, editor_tax_rates(request.merchant)
    )
    return render(
        request, "invoices/_totals.html", {"totals": _totals_context(form, item_forms), "oob": True}
    )


@merchant_view()
@vary_on_headers("HX-Request")
def invoice_show(request: MerchantRequest, pk: int) -> HttpResponse:
    try:
        invoice = invoice_detail(merchant=request.merchant, pk=pk)
    except Invoice.DoesNotExist:
        raise Http404("No such invoice.") from None
    emails = list(invoice.emails.all())
    invoice_emails = [email for email in emails if email.kind == EmailKind.INVOICE]
    tab = request.GET.get("tab", "timeline")
    context = {
        "invoice": invoice,
        "integration_form": IntegrationForm(instance=invoice),
        "mark_paid_form": MarkPaidForm(merchant=request.merchant),
        "can_credit": invoice.status in CREDITABLE and CreditNoteForm(invoice=invoice).creditable,
        "credit_notes": list(invoice.credit_notes.all()),
        # The methods it accepts stand for the merchant's: one query fewer on every page view.
        "has_payment_methods": bool(invoice.payment_methods.all())
        or PaymentMethod.objects.filter(merchant=request.merchant).exists(),
        "can_mark_paid": invoice.kind == InvoiceKind.ONE_TIME
        and invoice.status
        in (InvoiceStatus.OPEN, InvoiceStatus.PROCESSING, InvoiceStatus.UNRESOLVED),
        "tab": tab,
        "emails": emails,
        "last_invoice_email": invoice_emails[0] if invoice_emails else None,
        "emails_pending": any(
            email.status in (EmailStatus.QUEUED, EmailStatus.SENDING) for email in emails
        ),
        "can_send": invoice.status in (InvoiceStatus.OPEN, InvoiceStatus.PROCESSING),
        "customer_email": customer_email(invoice),
        "receipts": list(invoice.receipts.all()),
        "stale_before": timezone.now() - SENDING_STALE,
        "held_deposits": invoice_held_deposits(invoice=invoice),
    }
    if tab == "callbacks":
        context["callbacks"] = invoice.callbacks.prefetch_related("log")
    if request.htmx and tab == "emails":
        return render(request, "invoices/detail.html#emails", context)
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
    return _apply(request, invoice, lambda: service(invoice=invoice, by=request.user), done)


def _error_text(error: InvoiceStateError | ValidationError) -> str:
    return " ".join(error.messages) if isinstance(error, ValidationError) else str(error)


def _apply(request: MerchantRequest, invoice: Invoice, call: Callable[[], object], done: str):
    """Run one service on the invoice, say how it went, and go back to the invoice."""
    try:
        call()
    except (InvoiceStateError, ValidationError) as error:
        messages.error(request, _error_text(error))
    else:
        messages.success(request, done)
    return redirect("invoice_detail", pk=invoice.pk)


@merchant_view(Role.STAFF)
@require_POST
def invoice_mark_paid_view(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    form = MarkPaidForm(request.POST, merchant=request.merchant)
    if not form.is_valid():
        messages.error(request, "Enter the payment reference to mark the invoice as paid.")
        return redirect("invoice_detail", pk=invoice.pk)
    reference, method = form.cleaned_data["reference"], form.cleaned_data["method"]
    return _apply(
        request,
        invoice,
        lambda: invoice_mark_paid(
            invoice=invoice, reference=reference, method=method, by=request.user
        ),
        "Marked as paid.",
    )


@merchant_view(Role.STAFF)
def invoice_credit(request: MerchantRequest, pk: int) -> HttpResponse:
    """The credit-note form: per line, the units to credit (part of a line or all of it)."""
    invoice = get_object_or_404(
        invoice_scope(merchant=request.merchant).prefetch_related("items", "credit_notes"), pk=pk
    )
    if invoice.status not in CREDITABLE:
        messages.error(
            request, f"A {invoice.get_status_display().lower()} invoice cannot be credited."
        )
        return redirect("invoice_detail", pk=invoice.pk)
    form = CreditNoteForm(request.POST or None, invoice=invoice)
    if request.method == "POST" and form.is_valid():
        try:
            credit_note_issue(
                invoice=invoice,
                reason=form.cleaned_data["reason"],
                quantities=form.quantities,
                by=request.user,
            )
        except InvoiceStateError as error:
            messages.error(request, str(error))
            return redirect("invoice_detail", pk=invoice.pk)
        except ValidationError as error:
            _credit_errors_on_form(form, error)
        else:
            messages.success(request, "Credit note issued.")
            return redirect("invoice_detail", pk=invoice.pk)
    status = 422 if form.is_bound else 200
    return render(
        request,
        "invoices/credit.html",
        {"invoice": invoice, "form": form, "refund_note": credit_refund_note(invoice)},
        status=status,
    )


def _credit_errors_on_form(form: CreditNoteForm, error: ValidationError) -> None:
    # The service names lines `lines.<position>.quantity`; the form's fields `quantity_<n>`.
    for key, messages_ in error.message_dict.items():
        parts = key.split(".")
        name = f"quantity_{parts[1]}" if len(parts) == 3 else None
        target = name if name in form.fields else ("reason" if key == "reason" else None)
        for message in messages_:
            form.add_error(target, message)


@merchant_view()
def credit_note_pdf_download(request: MerchantRequest, pk: int) -> HttpResponse:
    note = get_object_or_404(
        CreditNote.objects.filter(merchant=request.merchant).select_related(
            "invoice__merchant", "invoice__customer"
        ),
        pk=pk,
    )
    return _pdf_or_error(request, lambda: credit_note_pdf(note))


@merchant_view(Role.STAFF)
@require_POST
def invoice_accept(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    note = request.POST.get("note", "")
    return _apply(
        request,
        invoice,
        lambda: invoice_accept_unresolved(invoice=invoice, note=note, by=request.user),
        "Payment accepted; the invoice is paid.",
    )


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


# Delivery: PDFs, previews, sending ----------------------------------------------------------------

# The preview frames: our own origin may frame them, nothing else. The email preview is the
# customer's email, whose HTML needs inline styles; it is sandboxed and may load nothing.
PREVIEW_FRAME_CSP = {
    "default-src": [CSP.NONE],
    "object-src": [CSP.SELF],
    "frame-ancestors": [CSP.SELF],
}
# `sandbox` has no value, which django-stubs' CSP types do not foresee.
EMAIL_PREVIEW_CSP: dict[str, Any] = {
    "default-src": [CSP.NONE],
    "style-src": [CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "frame-ancestors": [CSP.SELF],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.NONE],
    "sandbox": True,
}
PUBLIC_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


def _pdf_response(request: HttpRequest, pdf: Pdf, *, inline: bool = False) -> HttpResponse:
    etag = f'"{pdf.digest}"'
    if etag in request.headers.get("If-None-Match", ""):
        response = HttpResponse(status=304)
    else:
        response = HttpResponse(pdf.content, content_type="application/pdf")
        disposition = "inline" if inline else "attachment"
        response["Content-Disposition"] = f'{disposition}; filename="{pdf.filename}"'
    response["ETag"] = etag
    # Always ask again: the same URL shows a new document once the invoice changes.
    response["Cache-Control"] = "private, no-cache"
    return response


def _pdf_or_error(
    request: HttpRequest, make: Callable[[], Pdf], *, inline: bool = False
) -> HttpResponse:
    try:
        return _pdf_response(request, make(), inline=inline)
    except PdfError as error:
        return HttpResponse(
            f"The PDF could not be made: {error}", status=503, content_type="text/plain"
        )


@merchant_view()
@xframe_options_sameorigin
@csp_override(PREVIEW_FRAME_CSP)
def invoice_pdf_download(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(
        invoice_scope(merchant=request.merchant)
        .select_related("merchant", "customer")
        .prefetch_related("items"),
        pk=pk,
    )
    return _pdf_or_error(
        request, lambda: invoice_pdf(invoice), inline=request.GET.get("inline") == "1"
    )


@merchant_view()
def invoice_receipt_download(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    return _receipt_response(request, invoice)


def _receipt_response(request: HttpRequest, invoice: Invoice) -> HttpResponse:
    receipts = invoice.receipts.select_related("invoice__merchant", "invoice__customer")
    number = parse_id(request.GET.get("n"), limit=99_999)
    receipt = (
        receipts.filter(number=number).first()
        if number is not None
        else receipts.order_by("-number").first()
    )
    if receipt is None:
        raise Http404("No receipt.")
    return _pdf_or_error(request, lambda: receipt_pdf(receipt))


@merchant_view()
@xframe_options_sameorigin
@csp_override(EMAIL_PREVIEW_CSP)
def invoice_email_preview(request: MerchantRequest, pk: int) -> HttpResponse:
    """The invoice email (or a reminder) as the customer will see it."""
    invoice = get_object_or_404(
        invoice_scope(merchant=request.merchant)
        .select_related("merchant", "customer")
        .prefetch_related("items"),
        pk=pk,
    )
    kind = request.GET.get("kind", EmailKind.INVOICE)
    if kind not in PAYER_REQUESTS:
        kind = EmailKind.INVOICE
    recipients = [customer_email(invoice)] if customer_email(invoice) else []
    email = invoice_email(invoice, kind=kind, to=recipients, attach=False, preview=True)
    return HttpResponse(email.html)


@merchant_view(Role.STAFF)
@require_POST
@xframe_options_sameorigin
def invoice_preview(request: MerchantRequest) -> HttpResponse:
    """The editor's preview: the unsaved form as the customer would get it, PDF or email."""
    merchant = request.merchant
    draft = None
    if draft_id := parse_id(request.GET.get("draft")):
        draft = get_object_or_404(
            invoice_scope(merchant=merchant),
            pk=draft_id,
            status=InvoiceStatus.DRAFT,
        )
    form = InvoiceForm(request.POST, merchant=merchant, invoice=draft)
    form.is_valid()  # what parses is previewed; the rest waits for the real save
    currency = form.currency_obj or get_currency(merchant.default_currency)
    invoice, items = _preview_invoice(
        merchant,
        form,
        bound_item_forms(request.POST, currency, editor_tax_rates(merchant, draft)),
        draft,
        currency,
    )
    # One view, two documents with different policies: set what csp_override would set.
    if request.POST.get("preview") == "email":
        recipients = [customer_email(invoice)] if customer_email(invoice) else []
        email = invoice_email(invoice, to=recipients, items=items, attach=False, preview=True)
        response = HttpResponse(email.html)
        response._csp_config = EMAIL_PREVIEW_CSP  # type: ignore[attr-defined]
        return response
    response = _pdf_or_error(request, lambda: invoice_pdf(invoice, items=items), inline=True)
    response._csp_config = PREVIEW_FRAME_CSP  # type: ignore[attr-defined]
    return response


def _preview_invoice(
    merchant: Merchant,
    form: InvoiceForm,
    item_forms: list[LineItemForm],
    draft: Invoice | None,
    currency: Currency,
) -> tuple[Invoice, list[LineItem]]:
    """Unsaved objects shaped like the invoice the form would make; nothing is written."""
    data = getattr(form, "cleaned_data", {})
    lines = [row.to_input() for row in item_forms if row.is_valid()]
    discount = form.discount if not form.errors else NO_DISCOUNT
    if discount.kind == DiscountKind.AMOUNT and discount.value > (
        compute_invoice(lines, currency).subtotal
    ):
        discount = NO_DISCOUNT
    reference = (
        draft.reference if draft else f"{merchant.invoice_prefix}{merchant.next_invoice_number:05d}"
    )
    invoice = Invoice(
        merchant=merchant,
        reference=reference,
        # A fixed token: the real link exists once the invoice is created.
        public_token=draft.public_token if draft else "preview",
        customer=data.get("customer"),
        status=InvoiceStatus.OPEN,
        currency=currency.code,
        description=(data.get("description") or "").strip(),
        due_date=data.get("due_date"),
        kind=data.get("kind") or InvoiceKind.ONE_TIME,
        pricing_mode=data.get("pricing_mode") or "no_timer",
        accepted_assets=list(data.get("accepted_assets") or []),
        foreign_id=(data.get("foreign_id") or "").strip(),
        discount_kind=discount.kind,
        discount_value=discount.value,
        notes=(data.get("notes") or "").strip(),
        terms=(data.get("terms") or "").strip(),
        terms_days=data.get("terms_days"),
        po_number=(data.get("po_number") or "").strip(),
        footer=(data.get("footer") or "").strip(),
        issued_at=timezone.now(),
    )
    invoice_apply_figures(invoice=invoice, figures=compute_invoice(lines, currency, discount))
    # Read by the document builder instead of the many-to-many, which needs a saved row.
    invoice.preview_methods = list(data.get("payment_methods") or [])  # type: ignore[attr-defined]
    items = line_item_rows(invoice=invoice, items=lines, currency=currency, discount=discount)
    return invoice, items


@merchant_view(Role.STAFF)
@require_POST
def invoice_send_view(request: MerchantRequest, pk: int) -> HttpResponse:
    invoice = get_object_or_404(invoice_scope(merchant=request.merchant), pk=pk)
    try:
        delivery = invoice_send(invoice=invoice, by=request.user)
    except (InvoiceStateError, ValidationError) as error:
        messages.error(request, _error_text(error))
    else:
        messages.success(
            request, f"Sending {invoice.reference} to {', '.join(delivery.recipients)}."
        )
    return redirect(reverse("invoice_detail", kwargs={"pk": invoice.pk}) + "?tab=emails")


@merchant_view(Role.STAFF)
@require_POST
def email_retry(request: MerchantRequest, pk: int) -> HttpResponse:
    delivery = get_object_or_404(email_scope(merchant=request.merchant), pk=pk)
    try:
        email_delivery_retry(delivery=delivery, by=request.user)
    except InvoiceStateError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Trying again to send it to {', '.join(delivery.recipients)}.")
    return redirect(reverse("invoice_detail", kwargs={"pk": delivery.invoice_id}) + "?tab=emails")


# The payer's downloads, by the invoice's unguessable token ----------------------------------------


def _public_invoice(token: str) -> Invoice:
    """The invoice behind a payer's link. Drafts and void invoices were never sent: their
    tokens, wrong tokens and malformed ones all get the same 404 from the same code path."""
    invoice = None
    if PUBLIC_TOKEN.fullmatch(token):
        invoice = (
            Invoice.objects.select_related("merchant", "customer")
            .prefetch_related("items")
            .exclude(status__in=(InvoiceStatus.DRAFT, InvoiceStatus.VOID))
            .filter(public_token=token)
            .first()
        )
    # Compared again in constant time: a case-insensitive database collation must not let a
    # token that differs in case through.
    if invoice is None or not hmac.compare_digest(invoice.public_token, token):
        raise Http404("No such invoice.")
    return invoice


def _public_headers(response: HttpResponse) -> HttpResponse:
    response["X-Robots-Tag"] = "noindex, nofollow"
    response["Referrer-Policy"] = "no-referrer"
    return response


def public_invoice_pdf(request: HttpRequest, token: str) -> HttpResponse:
    invoice = _public_invoice(token)
    return _public_headers(
        _pdf_or_error(
            request, lambda: invoice_pdf(invoice), inline=request.GET.get("inline") == "1"
        )
    )


def public_receipt_pdf(request: HttpRequest, token: str) -> HttpResponse:
    return _public_headers(_receipt_response(request, _public_invoice(token)))
