"""API keys and idempotency records: what is stored and how long."""

from datetime import timedelta

from django.utils import timezone

from merchants.integrations import (
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    idempotency_prune,
)
from merchants.models import ApiKey, IdempotencyRecord


def test_api_key_is_stored_only_as_a_hash(acme, alice):
    issued = api_key_create(merchant=acme, name="Shop", by=alice)
    stored = ApiKey.objects.get()
    assert issued.plaintext.startswith(f"sb_{stored.prefix}_")
    assert issued.plaintext not in str(ApiKey.objects.values().get())
    assert len(stored.hashed) == 64
    assert api_key_authenticate(issued.plaintext) == stored


def test_wrong_revoked_and_malformed_keys_authenticate_nobody(acme, alice):
    issued = api_key_create(merchant=acme, name="Shop", by=alice)
    assert api_key_authenticate(issued.plaintext[:-1] + "x") is None
    assert api_key_authenticate("sb_") is None
    assert api_key_authenticate("not-a-key") is None
    api_key_revoke(key=issued.key)
    assert api_key_authenticate(issued.plaintext) is None


def test_idempotency_records_are_pruned_after_a_day(acme):
    now = timezone.now()
    old = IdempotencyRecord.objects.create(
        merchant=acme, key="old", method="POST", path="/api/v1/invoices", fingerprint="x"
    )
    fresh = IdempotencyRecord.objects.create(
        merchant=acme, key="fresh", method="POST", path="/api/v1/invoices", fingerprint="y"
    )
    IdempotencyRecord.objects.filter(pk=old.pk).update(created_at=now - timedelta(hours=25))
    assert idempotency_prune(now=now) == 1
    assert list(IdempotencyRecord.objects.values_list("pk", flat=True)) == [fresh.pk]
