"""Admin for refunds and compliance: the screening decisions (with the release of a held
payment), the local sanctions list, and refund requests (read-only: they move through
their services, from the invoice page and the payer's page)."""

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from checkout.models import (
    Payment,
    PaymentHold,
    RefundRequest,
    SanctionedAddress,
    Screening,
    ScreeningResult,
)
from checkout.settlement import payment_release
from invoices.services import InvoiceStateError


@admin.register(Screening)
class ScreeningAdmin(admin.ModelAdmin):
    list_display = ("created_at", "address", "source", "result", "detail", "network", "transfer")
    list_filter = ("result", "source", "network")
    search_fields = ("address", "detail")
    actions = ["release_payments"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # every decision stays on record

    @admin.action(description="Release the payments these hits hold")
    def release_payments(self, request: HttpRequest, queryset: QuerySet[Screening]) -> None:
        released = 0
        for screening in queryset.filter(result=ScreeningResult.HIT, transfer__isnull=False):
            assert screening.transfer is not None
            payment = Payment.objects.filter(
                deposit_address_id=screening.transfer.deposit_address_id
            ).first()
            if payment is None or not payment.is_held:
                continue
            try:
                payment_release(payment=payment, by=request.user)  # type: ignore[arg-type]
            except InvoiceStateError as error:
                self.message_user(request, str(error), messages.WARNING)
                continue
            released += 1
        self.message_user(request, f"Released {released} held payment(s).")


@admin.register(PaymentHold)
class PaymentHoldAdmin(admin.ModelAdmin):
    """Every hold of a payment, with the source that started it and who released it."""

    list_display = (
        "payment",
        "number",
        "source",
        "detail",
        "moved",
        "held_at",
        "released_at",
        "released_by",
    )
    list_filter = ("source",)
    search_fields = ("payment__order_number", "detail")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(SanctionedAddress)
class SanctionedAddressAdmin(admin.ModelAdmin):
    list_display = ("address", "list_name", "imported_at")
    list_filter = ("list_name",)
    search_fields = ("address",)


@admin.register(RefundRequest)
class RefundRequestAdmin(admin.ModelAdmin):
    list_display = ("pk", "invoice", "kind", "status", "amount", "asset", "address", "created_at")
    list_filter = ("status", "kind", "network")
    search_fields = ("invoice__reference", "address", "tx_hash", "payment__order_number")
    readonly_fields = [f.name for f in RefundRequest._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
