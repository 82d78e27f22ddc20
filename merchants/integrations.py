"""API keys, webhook endpoints and Standard Webhooks signing: the merchant's integration kit.

Signing follows https://www.standardwebhooks.com: the signed content is
`{webhook-id}.{webhook-timestamp}.{body}`, HMAC-SHA256 keyed with the base64-decoded part of a
`whsec_` secret, sent as `v1,<base64>`; several signatures are separated by spaces, which is how
a rotated secret keeps working for its grace period.
"""

import base64
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import URLValidator
from django.db import OperationalError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from merchants.models import (
    ApiKey,
    IdempotencyRecord,
    InvoiceCallbackSigner,
    Merchant,
    Role,
    SigningSecret,
    User,
    WebhookEndpoint,
)
from merchants.outbound import BlockedURL, check_url
from merchants.validators import one_line

logger = logging.getLogger(__name__)

KEY_PREFIX = "sb_"
# A key's `last_used_at` is written at most this often.
LAST_USED_EVERY_SECONDS = 60
# The event types a merchant can subscribe to; the callbacks module sends exactly these.
EVENT_TYPES = (
    "invoice.created",
    "invoice.deposit_received",
    "invoice.deposit_confirmed",
    "invoice.paid",
    "invoice.unresolved",
    "invoice.failed",
    "invoice.cancelled",
    "invoice.marked_paid",
    "invoice.closed",
    "invoice.credited",
    "deposit.reverted",
    "refund.requested",
    "refund.sent",
    "refund.confirmed",
    "invoice.claimed",
)
TEST_EVENT = "webhook.test"


# API keys ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    plaintext: str  # shown to the merchant once, never stored


def _hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def api_key_create(*, merchant: Merchant, name: str, by: User | None) -> IssuedKey:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "Name the key after where it is used, e.g. “Shop”."})
    prefix = secrets.token_hex(6)
    plaintext = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        merchant=merchant, name=name[:80], prefix=prefix, hashed=_hash_key(plaintext), created_by=by
    )
    return IssuedKey(key=key, plaintext=plaintext)


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    ApiKey.objects.filter(pk=key.pk, revoked_at=None).update(revoked_at=timezone.now())
    key.refresh_from_db()
    return key


def api_key_authenticate(plaintext: str) -> ApiKey | None:
    """The active key this string is, or None; compared in constant time."""
    if not plaintext.startswith(KEY_PREFIX):
        return None
    prefix, _, _secret = plaintext[len(KEY_PREFIX) :].partition("_")
    key = ApiKey.objects.select_related("merchant").filter(prefix=prefix, revoked_at=None).first()
    if key is None or not hmac.compare_digest(key.hashed, _hash_key(plaintext)):
        return None
    _api_key_note_use(key=key)
    return key


def _api_key_note_use(*, key: ApiKey) -> None:
    """Record when a key was last used, at most once a minute, and never at a request's cost.

    The cache decides (an atomic add, no database write), so a busy key writes once a minute
    however many processes serve it. The timestamp is for humans: when the database is busy
    (SQLite's single writer held by a worker), the request goes on without it.
    """
    if not cache.add(f"api-key-used:{key.pk}", 1, timeout=LAST_USED_EVERY_SECONDS):
        return
    now = timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < timedelta(
        seconds=LAST_USED_EVERY_SECONDS
    ):
        return
    try:
        # Its own savepoint: a failed write must not break a transaction around the request.
        with transaction.atomic():
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    except OperationalError as error:
        logger.warning("API key %s: last use not recorded: %s", key.prefix, error)
        return
    key.last_used_at = now


# Signing -----------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(*, secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    *, signer: SigningSecret, message_id: str, body: bytes, now: datetime
) -> dict[str, str]:
    timestamp = int(now.timestamp())
    signatures = [
        sign(secret=secret, message_id=message_id, timestamp=timestamp, body=body)
        for secret in signer.secrets_at(now)
    ]
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signatures),
    }


def _rotate(signer: SigningSecret) -> None:
    signer.previous_secret = signer.secret
    signer.previous_secret_until = timezone.now() + timedelta(
        hours=settings.WEBHOOK_ROTATION_GRACE_HOURS
    )
    signer.secret = new_secret()
    signer.save(update_fields=["secret", "previous_secret", "previous_secret_until"])


# Endpoints ---------------------------------------------------------------------------------


def check_callback_url(url: str, *, field: str = "url") -> str:
    """Refuse a URL we would never deliver to. DNS is checked again at every delivery, since
    a name may point elsewhere by then; here literal addresses and bad syntax are caught."""
    url = url.strip()
    try:
        URLValidator(schemes=["https", "http"])(url)
        check_url(url, resolve=False)
    except ValidationError:
        raise ValidationError({field: "Enter a full http(s) URL."}) from None
    except BlockedURL as error:
        raise ValidationError({field: str(error)}) from None
    return url


def _clean_events(events: list[str]) -> list[str]:
    unknown = sorted(set(events) - set(EVENT_TYPES))
    if unknown:
        raise ValidationError({"events": f"Unknown event type: {', '.join(unknown)}."})
    return [event for event in EVENT_TYPES if event in events]


def webhook_endpoint_create(
    *, merchant: Merchant, url: str, description: str = "", events: list[str] | None = None
) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        merchant=merchant,
        url=check_callback_url(url),
        description=description.strip()[:120],
        events=_clean_events(events or []),
        secret=new_secret(),
    )


def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    url: str,
    description: str = "",
    events: list[str] | None = None,
    enabled: bool = True,
) -> WebhookEndpoint:
    endpoint.url = check_callback_url(url)
    endpoint.description = description.strip()[:120]
    endpoint.events = _clean_events(events or [])
    if enabled and not endpoint.enabled:
        endpoint.disabled_reason = ""
    endpoint.enabled = enabled
    endpoint.save()
    return endpoint


@transaction.atomic
def webhook_endpoint_rotate(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    _rotate(locked)
    return locked


def webhook_endpoint_disable(*, endpoint_id: int, reason: str) -> bool:
    """Turn an endpoint off (e.g. its receiver answered 410 Gone); True if it was on."""
    return bool(
        WebhookEndpoint.objects.filter(pk=endpoint_id, enabled=True).update(
            enabled=False, disabled_reason=reason[:300], updated_at=timezone.now()
        )
    )


def invoice_callback_signer(*, merchant: Merchant) -> InvoiceCallbackSigner:
    signer, _ = InvoiceCallbackSigner.objects.get_or_create(
        merchant=merchant, defaults={"secret": new_secret()}
    )
    return signer


@transaction.atomic
def invoice_callback_signer_rotate(*, merchant: Merchant) -> InvoiceCallbackSigner:
    invoice_callback_signer(merchant=merchant)
    locked = InvoiceCallbackSigner.objects.select_for_update().get(merchant=merchant)
    _rotate(locked)
    return locked


def webhook_disabled_notify(*, merchant_id: int, url: str, reason: str) -> None:
    """Tell the owners, after commit, that an endpoint was switched off and why."""
    from merchants.tasks import send_webhook_disabled

    transaction.on_commit(lambda: send_webhook_disabled.delay(merchant_id, url, reason))


def webhook_disabled_send(*, merchant_id: int, url: str, reason: str) -> None:
    merchant = Merchant.objects.get(pk=merchant_id)
    owners = sorted(
        merchant.memberships.filter(role=Role.OWNER, user__is_active=True).values_list(
            "user__email", flat=True
        )
    )
    if not owners:
        return
    context = {
        "merchant": merchant,
        "url": url,
        "reason": reason,
        "link": settings.SITE_URL + reverse("webhook_list"),
    }
    send_mail(
        subject=f"Webhook endpoint disabled for {one_line(merchant.name)}",
        message=render_to_string("merchants/emails/webhook_disabled.txt", context),
        from_email=None,
        recipient_list=owners,
    )


# Idempotency keys are kept a day: long enough for any client's retries, short enough that
# the table stays small.
IDEMPOTENCY_KEEP = timedelta(hours=24)


def idempotency_prune(*, now: datetime | None = None) -> int:
    cutoff = (now or timezone.now()) - IDEMPOTENCY_KEEP
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
