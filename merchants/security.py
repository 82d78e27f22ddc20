"""Account security: the security log, re-authentication before changes that move money, and
the owners' notice of every such change.

Views of any app guard a change with one decorator below `merchant_view`:

    @merchant_view(Role.OWNER)
    @require_recent_reauth("Wallet key changed", detail_fields=("xpub",))
    def wallet_settings(request): ...

A POST without a recent sign-in (and second factor, when the person has one) is parked and
sent through allauth's re-authentication, then replayed; a successful change (the view
answers with a redirect) is logged and emailed to every owner.
"""

import logging
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from allauth.account.adapter import get_adapter
from allauth.account.internal.flows.login import get_authentication_records
from allauth.account.internal.flows.reauthentication import suspend_request
from allauth.mfa.utils import is_mfa_enabled
from django.conf import settings
from django.contrib import messages
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db import OperationalError, transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from merchants.models import (
    ApiKey,
    Membership,
    Merchant,
    SecurityEvent,
    SecurityEventKind,
    User,
)
from merchants.validators import one_line

logger = logging.getLogger(__name__)

# allauth's notification emails, by template, as they read in the security log.
ACCOUNT_NOTICES = {
    "account/email/password_changed": "Password changed",
    "account/email/password_set": "Password set",
    "account/email/password_reset": "Password reset by email link",
    "account/email/email_changed": "Email address changed",
    "account/email/email_confirm": "Email address confirmed",
    "account/email/email_added": "Email address added",
    "account/email/email_deleted": "Email address removed",
    "mfa/email/totp_activated": "Authenticator app turned on",
    "mfa/email/totp_deactivated": "Authenticator app turned off",
    "mfa/email/recovery_codes_generated": "New recovery codes made",
    "mfa/email/webauthn_added": "Passkey or security key added",
    "mfa/email/webauthn_removed": "Passkey or security key removed",
}


def _client(request: HttpRequest | None) -> dict[str, Any]:
    if request is None:
        return {"ip": None, "user_agent": ""}
    try:
        ip = get_adapter(request).get_client_ip(request)
    except PermissionDenied:
        ip = None
    return {"ip": ip, "user_agent": request.headers.get("user-agent", "")[:200]}


def security_log_signin(*, request: HttpRequest, user: User) -> SecurityEvent:
    records = get_authentication_records(request, user)
    how = "with a passkey" if records and records[-1].get("passwordless") else ""
    if records and records[-1].get("method") == "mfa" and not how:
        how = "with password and second factor"
    return SecurityEvent.objects.create(
        user=user,
        kind=SecurityEventKind.SIGNIN,
        summary="Signed in",
        detail=how,
        **_client(request),
    )


def security_log_failed_signin(*, request: HttpRequest, email: str) -> SecurityEvent | None:
    # Only accounts that exist have a log to write to; guesses at unknown addresses are
    # counted by the throttle alone.
    user = User.objects.filter(email=(email or "").strip().lower()).first()
    if user is None:
        return None
    return SecurityEvent.objects.create(
        user=user,
        kind=SecurityEventKind.SIGNIN_FAILED,
        summary="Wrong password",
        **_client(request),
    )


def security_log_account_notice(
    *, request: HttpRequest | None, user: User, template: str
) -> SecurityEvent | None:
    summary = ACCOUNT_NOTICES.get(template)
    if summary is None:
        return None
    return SecurityEvent.objects.create(
        user=user, kind=SecurityEventKind.ACCOUNT, summary=summary, **_client(request)
    )


def security_log_api_key_address(*, request: HttpRequest, key: ApiKey) -> SecurityEvent | None:
    client = _client(request)
    if client["ip"] is None:
        return None
    cache_key = f"api-key-address:{key.pk}:{client['ip']}"
    if not cache.add(cache_key, 1, timeout=30 * 24 * 3600):
        return None
    summary = f"API key “{key.name}” used from a new address"
    detail = f"sb_{key.prefix}_…"
    if SecurityEvent.objects.filter(
        merchant_id=key.merchant_id,
        kind=SecurityEventKind.API_KEY_ADDRESS,
        detail=detail,
        ip=client["ip"],
    ).exists():
        return None
    try:
        # Bookkeeping beside an API answer: a busy database (SQLite while a worker writes) must
        # not fail the request. Its own savepoint; the cache entry goes so the next use retries.
        with transaction.atomic():
            return SecurityEvent.objects.create(
                merchant_id=key.merchant_id,
                kind=SecurityEventKind.API_KEY_ADDRESS,
                summary=summary[:200],
                detail=detail,
                **client,
            )
    except OperationalError as error:
        cache.delete(cache_key)
        logger.warning("API key %s: new address not logged: %s", key.prefix, error)
        return None


@transaction.atomic
def money_change_record(
    *, request: HttpRequest, merchant: Merchant, user: User, what: str, detail: str = ""
) -> SecurityEvent:
    """Log a change that moves money and email every owner of the business about it."""
    event = SecurityEvent.objects.create(
        merchant=merchant,
        user=user,
        kind=SecurityEventKind.MONEY,
        summary=what[:200],
        detail=detail[:500],
        **_client(request),
    )
    from merchants.tasks import send_security_notice

    transaction.on_commit(lambda: send_security_notice.delay(event.pk))
    return event


def security_notice_send(*, event: SecurityEvent) -> None:
    from django.core.mail import send_mail
    from django.template.loader import render_to_string

    assert event.merchant is not None
    owners = list(
        Membership.objects.filter(merchant=event.merchant, role="owner")
        .select_related("user")
        .order_by("pk")
        .values_list("user__email", flat=True)
    )
    context = {
        "event": event,
        "merchant": event.merchant,
        "log_url": settings.SITE_URL + reverse("security_log"),
    }
    for email in owners:
        send_mail(
            subject=one_line(f"Stablebill: {event.summary} at {event.merchant.name}"),
            message=render_to_string("merchants/emails/security_notice.txt", context),
            from_email=None,
            recipient_list=[email],
        )


def security_log_for(*, merchant: Merchant, limit: int = 200) -> QuerySet[SecurityEvent]:
    """The business's own events, and the personal ones (sign-ins, two-factor changes) of
    the people who are its members now."""
    members = Membership.objects.filter(merchant=merchant).values("user_id")
    return (
        SecurityEvent.objects.filter(
            Q(merchant=merchant) | Q(merchant__isnull=True, user_id__in=members)
        )
        .select_related("user")
        .order_by("-created_at", "-pk")[:limit]
    )


# Re-authentication -------------------------------------------------------------------------


def reauthentication_missing(request: HttpRequest) -> str | None:
    """Which step a change still needs: None, "password" or "mfa".

    A sign-in or re-authentication within ACCOUNT_REAUTHENTICATION_TIMEOUT counts; someone
    with a second factor needs a recent use of it too, so a stolen password alone never
    moves money.
    """
    user = request.user
    records = get_authentication_records(request, user)  # type: ignore[arg-type]
    cutoff = time.time() - settings.ACCOUNT_REAUTHENTICATION_TIMEOUT
    recent = [r for r in records if isinstance(r.get("at"), int | float) and r["at"] >= cutoff]
    has_mfa = is_mfa_enabled(user)
    if has_mfa:
        return None if any(r.get("method") == "mfa" for r in recent) else "mfa"
    if any(r.get("method") in ("password", "mfa") for r in recent):
        return None
    return "password"


def require_recent_reauth(
    what: str | None = None, *, detail_fields: tuple[str, ...] = ()
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Guard a view's POSTs (see the module docstring). Goes below `merchant_view`.

    `what` names the change in the log and the owners' email, for a view that answers only a
    change made with a redirect (None: the view records it itself with `money_change_record`,
    as one must whose success is not a redirect, or that redirects a refused change too);
    `detail_fields` are POST fields worth quoting (never secrets).
    """

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method != "POST":
                return view(request, *args, **kwargs)
            missing = reauthentication_missing(request)
            if missing is not None:
                messages.info(request, "Confirm it is you to make this change.")
                step = "account_reauthenticate" if missing == "password" else "mfa_reauthenticate"
                return suspend_request(request, reverse(step))
            # The change and its record commit together: a change the log could not take
            # (it did refuse a NUL quoted from a field the view never reads) must not stand
            # unrecorded and unannounced to the owners.
            with transaction.atomic():
                response = view(request, *args, **kwargs)
                if what and 300 <= response.status_code < 400:
                    detail = ", ".join(
                        f"{name}: {one_line(request.POST[name])[:120]}"
                        for name in detail_fields
                        if request.POST.get(name)
                    )
                    money_change_record(
                        request=request,
                        merchant=request.merchant,  # type: ignore[attr-defined]
                        user=request.user,  # type: ignore[arg-type]
                        what=what,
                        detail=detail,
                    )
            return response

        return wrapped

    return decorator
