from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.http import HttpRequest

from merchants.admin_site import IdAutocomplete
from merchants.models import (
    ApiKey,
    IdempotencyRecord,
    Membership,
    Merchant,
    SecurityEvent,
    User,
    WebhookEndpoint,
)


class MembershipInline(IdAutocomplete, admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    actions = ["unlock_sign_in"]
    list_display = ["email", "first_name", "last_name", "is_staff", "is_active", "date_joined"]
    list_filter = ["is_staff", "is_superuser", "is_active"]
    search_fields = ["email", "first_name", "last_name"]
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Personal info", {"fields": ("first_name", "last_name")}),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
        ("Important dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    @admin.action(description="Unlock sign-in (clear failed attempts)")
    def unlock_sign_in(self, request: HttpRequest, queryset) -> None:  # type: ignore[no-untyped-def]
        """The same unlock a password reset does: the account's failed-attempt count is gone."""
        from allauth.account.adapter import get_adapter
        from allauth.account.models import EmailAddress

        adapter = get_adapter(request)
        emails = EmailAddress.objects.filter(user__in=queryset).values_list("email", flat=True)
        for email in {*emails, *queryset.values_list("email", flat=True)}:
            adapter._delete_login_attempts_cached_email(request, email=email)
        self.message_user(request, f"Sign-in unlocked for {queryset.count()} account(s).")


@admin.register(Merchant)
class MerchantAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "default_currency",
        "default_fee_payer",
        "next_invoice_number",
        "created_at",
    ]
    list_filter = ["default_currency", "default_fee_payer"]
    search_fields = ["name", "memberships__user__email"]
    readonly_fields = ["next_invoice_number", "created_at"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(IdAutocomplete, admin.ModelAdmin):
    list_display = ["user", "merchant", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__email", "merchant__name"]
    list_select_related = ["user", "merchant"]
    autocomplete_fields = ["user", "merchant"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are made on the merchant's settings page (shown once there); admin can revoke."""

    list_display = ["name", "merchant", "prefix", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix", "merchant__name"]
    list_select_related = ["merchant"]
    readonly_fields = ["merchant", "prefix", "hashed", "created_by", "created_at", "last_used_at"]
    fields = [*readonly_fields, "name", "revoked_at"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ["url", "merchant", "enabled", "disabled_reason", "created_at"]
    list_filter = ["enabled"]
    search_fields = ["url", "description", "merchant__name"]
    list_select_related = ["merchant"]
    # The events are chosen on the merchant's webhook page, which checks them; a raw JSON box
    # here took an empty list as null (IntegrityError) and NaN as JSON PostgreSQL refuses.
    readonly_fields = ["secret", "previous_secret", "previous_secret_until", "events"]


@admin.register(IdempotencyRecord)
class IdempotencyRecordAdmin(admin.ModelAdmin):
    list_display = ["key", "merchant", "method", "path", "status_code", "created_at"]
    search_fields = ["key", "path", "merchant__name"]
    list_select_related = ["merchant"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[override]
        return False


@admin.register(SecurityEvent)
class SecurityEventAdmin(admin.ModelAdmin):
    """The security log is written by the app only; admin reads it."""

    list_display = ["created_at", "kind", "summary", "user", "merchant", "ip"]
    list_filter = ["kind"]
    search_fields = ["summary", "detail", "user__email", "merchant__name", "ip"]
    list_select_related = ["user", "merchant"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[override]
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[override]
        return False
