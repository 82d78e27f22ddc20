from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from invoices.callbacks import callback_redeliver
from invoices.delivery import email_delivery_retry
from invoices.models import (
    Actor,
    CallbackAttempt,
    CallbackDelivery,
    EmailDelivery,
    Invoice,
    InvoiceEvent,
    LineItem,
    PaymentMethod,
    Receipt,
    TaxRate,
)
from invoices.services import InvoiceStateError, invoice_mark_paid
from merchants.admin_site import IdAutocomplete


class LineItemInline(admin.TabularInline):
    model = LineItem
    extra = 0
    fields = readonly_fields = (
        "position",
        "name",
        "description",
        "quantity",
        "unit_price",
        "discount_amount",
        "invoice_discount_amount",
        "tax_name",
        "tax_percent",
        "tax_inclusive",
        "tax_amount",
        "amount",
    )

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False


class InvoiceEventInline(admin.TabularInline):
    model = InvoiceEvent
    extra = 0
    fields = readonly_fields = (
        "created_at",
        "type",
        "from_status",
        "to_status",
        "actor",
        "actor_user",
        "note",
    )
    ordering = ["-created_at"]

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False

    def has_delete_permission(self, request, obj=None) -> bool:  # type: ignore[override]
        return False


class MarkPaidAdminForm(forms.Form):
    method = forms.ModelChoiceField(
        queryset=PaymentMethod.objects.select_related("merchant"),
        required=False,
        empty_label="Other (say in the reference)",
        help_text="The method it was paid by; it must belong to the invoice's merchant.",
    )
    reference = forms.CharField(
        max_length=500,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text="Required: how the money arrived (bank reference, receipt number, …).",
    )


@admin.register(Invoice)
class InvoiceAdmin(IdAutocomplete, admin.ModelAdmin):
    list_display = [
        "reference",
        "merchant",
        "customer",
        "status",
        "total",
        "currency",
        "kind",
        "created_at",
    ]
    list_filter = ["status", "kind", "pricing_mode", "currency", "failure_reason", "merchant"]
    search_fields = [
        "reference",
        "foreign_id",
        "tracking_id",
        "customer__name",
        "customer__email",
        "public_token",
    ]
    list_select_related = ["merchant", "customer"]
    date_hierarchy = "created_at"
    actions = ["mark_paid_off_platform"]
    inlines = [LineItemInline, InvoiceEventInline]
    # Status and money only change through services (and their events); admin shows them.
    readonly_fields = [
        "merchant",
        "number",
        "reference",
        "public_token",
        "status",
        "failure_reason",
        "subtotal",
        "discount_total",
        "tax_total",
        "tax_summary",
        "total",
        "currency",
        # What the payer may pay with is chosen in the editor, which checks it; a raw JSON box
        # here took an empty list as null (IntegrityError) and NaN as JSON PostgreSQL refuses.
        "accepted_assets",
        "document",
        "created_by",
        "created_at",
        "updated_at",
        "issued_at",
        "expires_at",
        "finalized_at",
    ]
    fields = [
        "merchant",
        "reference",
        "number",
        "status",
        "failure_reason",
        "customer",
        "kind",
        "pricing_mode",
        "currency",
        "accepted_assets",
        "fee_payer",
        "subtotal",
        "discount_total",
        "tax_total",
        "tax_summary",
        "total",
        "description",
        "due_date",
        "notes",
        "terms",
        "terms_days",
        "po_number",
        "footer",
        "document",
        "foreign_id",
        "tracking_id",
        "callback_url",
        "payment_page_url",
        "payment_page_button",
        "public_token",
        "created_by",
        "created_at",
        "updated_at",
        "issued_at",
        "expires_at",
        "finalized_at",
    ]
    autocomplete_fields = ["customer"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Invoices are numbered and totalled by invoice_create; the dashboard and API create them.
        return False

    @admin.action(description="Mark as paid (off-platform)", permissions=["change"])
    def mark_paid_off_platform(
        self, request: HttpRequest, queryset: QuerySet[Invoice]
    ) -> HttpResponse | None:
        form = MarkPaidAdminForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            done, refused = 0, []
            for invoice in queryset.order_by("pk"):
                try:
                    invoice_mark_paid(
                        invoice=invoice,
                        reference=form.cleaned_data["reference"],
                        method=form.cleaned_data["method"],
                        by=request.user,  # type: ignore[arg-type]
                        actor=Actor.ADMIN,
                    )
                except (InvoiceStateError, ValidationError) as error:
                    text = (
                        " ".join(error.messages)
                        if isinstance(error, ValidationError)
                        else str(error)
                    )
                    refused.append(f"{invoice.reference}: {text}")
                else:
                    done += 1
            if done:
                self.message_user(request, f"{done} invoice(s) marked as paid.", messages.SUCCESS)
            for line in refused:
                self.message_user(request, f"Refused {line}", messages.ERROR)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Mark as paid (off-platform)",
            "invoices": queryset.select_related("customer"),
            "form": form,
            "opts": self.model._meta,
            "action_name": "mark_paid_off_platform",
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/invoices/mark_paid.html", context)


@admin.register(InvoiceEvent)
class InvoiceEventAdmin(admin.ModelAdmin):
    list_display = [
        "created_at",
        "invoice",
        "type",
        "from_status",
        "to_status",
        "actor",
        "actor_user",
    ]
    list_filter = ["type", "actor", "to_status"]
    search_fields = ["invoice__reference", "note", "actor_user__email"]
    list_select_related = ["invoice", "actor_user"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[override]
        # The timeline is an audit trail; it is read, never rewritten.
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[override]
        return False


@admin.register(LineItem)
class LineItemAdmin(admin.ModelAdmin):
    list_display = ["invoice", "position", "name", "quantity", "unit_price", "amount"]
    search_fields = ["name", "invoice__reference"]
    list_select_related = ["invoice"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[override]
        return False


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written by services only: admin reads them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[override]
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[override]
        return False


@admin.register(EmailDelivery)
class EmailDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "invoice", "kind", "status", "attempts", "sent_at", "error"]
    list_filter = ["status", "kind"]
    search_fields = ["invoice__reference", "recipients", "subject", "message_id", "key"]
    list_select_related = ["invoice"]
    date_hierarchy = "created_at"
    actions = ["try_again"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[override]
        # Read-only fields, but the "Try again" action needs the change permission.
        return obj is None and super(ReadOnlyAdmin, self).has_change_permission(request, obj)

    @admin.action(description="Try again to send (failed ones)", permissions=["change"])
    def try_again(self, request: HttpRequest, queryset: QuerySet[EmailDelivery]) -> None:
        done = 0
        for delivery in queryset.order_by("pk"):
            try:
                email_delivery_retry(delivery=delivery, by=request.user)  # type: ignore[arg-type]
            except InvoiceStateError:
                continue
            done += 1
        self.message_user(request, f"{done} email(s) queued again.", messages.SUCCESS)


@admin.register(Receipt)
class ReceiptAdmin(ReadOnlyAdmin):
    list_display = ["reference_display", "invoice", "paid_at", "amount", "currency", "method"]
    search_fields = ["invoice__reference", "order_number", "reference", "key"]
    list_select_related = ["invoice"]
    date_hierarchy = "paid_at"


class CallbackAttemptInline(admin.TabularInline):
    model = CallbackAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "status_code", "duration_ms", "error", "response_excerpt")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[override]
        return False


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "created_at",
        "event_type",
        "url",
        "invoice",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
    ]
    list_filter = ["status", "event_type"]
    search_fields = ["url", "message_id", "invoice__reference", "merchant__name"]
    list_select_related = ["invoice"]
    date_hierarchy = "created_at"
    inlines = [CallbackAttemptInline]
    actions = ["redeliver"]

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[override]
        # Read-only rows, but the "Redeliver" action needs the change permission.
        return obj is None and super(ReadOnlyAdmin, self).has_change_permission(request, obj)

    @admin.action(description="Redeliver now", permissions=["change"])
    def redeliver(self, request: HttpRequest, queryset: QuerySet[CallbackDelivery]) -> None:
        deliveries = list(queryset.order_by("pk"))
        for delivery in deliveries:
            callback_redeliver(delivery=delivery)
        self.message_user(request, f"{len(deliveries)} callback(s) queued.", messages.SUCCESS)


@admin.register(TaxRate)
class TaxRateAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "percent",
        "inclusive",
        "country",
        "is_default",
        "merchant",
        "archived_at",
    ]
    list_filter = ["inclusive", "merchant"]
    search_fields = ["name"]


@admin.register(PaymentMethod)
class PaymentMethodAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "merchant", "archived_at"]
    list_filter = ["kind", "merchant"]
    search_fields = ["name", "iban"]
