"""What every API router shares: key authentication, the per-key rate limit, one error shape,
`Idempotency-Key` handling and cursor pagination.

Errors always look like `{"detail": "...", "code": "...", "fields": {"name": ["..."]}}`, so a
client needs one parser; `fields` names the offending input (`items.0.unit_price`).
"""

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from datetime import date
from functools import wraps
from typing import Annotated, Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import RequestDataTooBig, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import Field, Schema
from ninja.security import HttpBearer
from ninja.throttling import BaseThrottle
from pydantic import BeforeValidator

from merchants.integrations import api_key_authenticate
from merchants.models import ApiKey, IdempotencyRecord, Merchant

# A decimal written as a JSON string: JSON numbers become floats in most clients.
DECIMAL_PATTERN = r"^[0-9]{1,18}(\.[0-9]{1,18})?$"
IDEMPOTENCY_HEADER = "Idempotency-Key"
# Visible ASCII, spaces only inside: what `idempotent` accepts, stated in the schema.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]([ -~]{0,253}[!-~])?$"
# A page cursor is the id the next page continues below. Any such number is a valid cursor
# (at worst it answers an empty page), so the schema's pattern is the whole rule.
CURSOR_PATTERN = r"^[0-9]{1,19}$"
MAX_ID = 2**63 - 1


class Error(Schema):
    """Every error answer."""

    detail: str
    code: str
    fields: dict[str, list[str]]


# Documents the header on every POST (and lets schema-driven clients and fuzzers send it).
IDEMPOTENT_POST = {
    "parameters": [
        {
            "in": "header",
            "name": IDEMPOTENCY_HEADER,
            "required": False,
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": 255,
                "pattern": IDEMPOTENCY_KEY_PATTERN,
            },
            "description": "Any unique string per operation (e.g. your order id). A retry "
            "with the same key and body replays the first answer for 24 hours; the same key "
            "with another request is refused with 409.",
        }
    ]
}


class ApiError(Exception):
    """An answer other than success, raised anywhere below a handler."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str = "invalid",
        fields: dict[str, list[str]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.fields = fields or {}
        self.extra = extra or {}


def error_body(
    detail: str, *, code: str, fields: dict[str, list[str]] | None = None, **extra: Any
) -> dict[str, Any]:
    return {"detail": detail, "code": code, "fields": fields or {}, **extra}


def error_response(error: ApiError) -> JsonResponse:
    return JsonResponse(
        error_body(error.detail, code=error.code, fields=error.fields, **error.extra),
        status=error.status,
    )


def from_validation_error(error: ValidationError, *, prefix: str = "") -> ApiError:
    if hasattr(error, "error_dict"):
        fields = {
            (f"{prefix}{key}" if key != "__all__" else prefix.rstrip(".") or "body"): messages
            for key, messages in error.message_dict.items()
        }
    else:
        fields = {prefix.rstrip(".") or "body": error.messages}
    first = next(iter(fields.values()))[0]
    return ApiError(422, first, code="invalid", fields=fields)


def _nul_path(value: Any, path: str = "") -> str | None:
    """Where a NUL character hides in parsed JSON, as a field name (`items.0.name`)."""
    if isinstance(value, str):
        return path or "body" if "\x00" in value else None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)  # type: ignore[assignment]
    else:
        return None
    for key, item in items:
        if "\x00" in str(key):
            return f"{path}.{key}".lstrip(".")
        found = _nul_path(item, f"{path}.{key}".lstrip("."))
        if found:
            return found
    return None


def body_too_large() -> ApiError:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0
    return ApiError(
        413,
        f"The request body is larger than {limit // 1024} KB.",
        code="body_too_large",
        fields={"body": [f"At most {limit // 1024} KB."]},
    )


def request_body(request: HttpRequest) -> bytes:
    """The body, or a 413 in the API's error shape: Django raises on the first read of a body
    over DATA_UPLOAD_MAX_MEMORY_SIZE, which would otherwise surface as a 500 or an HTML 400."""
    try:
        return request.body
    except RequestDataTooBig:
        raise body_too_large() from None


def refuse_nul_characters(request: HttpRequest) -> None:
    """No text we store may hold a NUL character (PostgreSQL cannot), so it is refused at the
    door with the field's name, for query parameters and JSON bodies alike."""
    fields = [name for name, values in request.GET.lists() if any("\x00" in v for v in values)]
    if b"\\u0000" in request_body(request):
        try:
            found = _nul_path(json.loads(request.body))
        except ValueError:
            found = None  # not JSON: the body parser answers that
        if found:
            fields.append(found)
    if fields:
        raise ApiError(
            422,
            f"{fields[0]}: text may not contain NUL characters.",
            fields={name: ["May not contain NUL characters."] for name in fields},
        )


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer sb_…`; the request then carries `request.auth` (the ApiKey)."""

    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        key = api_key_authenticate(token.strip())
        if key is not None:
            request.merchant = key.merchant  # type: ignore[attr-defined]
            # Checked here because it runs before any handler parses input.
            refuse_nul_characters(request)
        return key


class PerKeyThrottle(BaseThrottle):
    """A fixed one-minute window per key, counted atomically in the cache (Redis in
    production), so concurrent requests cannot slip past the limit."""

    def allow_request(self, request: HttpRequest) -> bool:
        key = getattr(request, "auth", None)
        if not isinstance(key, ApiKey):
            return True
        window = 60
        slot = int(time.time() // window)
        cache_key = f"api-rate:{key.pk}:{slot}"
        cache.add(cache_key, 0, timeout=window + 5)
        try:
            count = cache.incr(cache_key)
        except ValueError:  # evicted between add and incr
            cache.set(cache_key, 1, timeout=window + 5)
            count = 1
        return count <= settings.API_RATE_PER_MINUTE

    def wait(self) -> float | None:
        # Stateless (one throttle serves every thread): the window ends on the minute.
        return max(1, math.ceil(60 - time.time() % 60))


def merchant_of(request: HttpRequest) -> Merchant:
    return request.auth.merchant  # type: ignore[attr-defined]


def render(result: Any) -> HttpResponse:
    """A handler's `(status, body)` or body as the JSON response it will be."""
    status, body = result if isinstance(result, tuple) else (200, result)
    return JsonResponse(body, status=status, encoder=DjangoJSONEncoder, safe=False)


def _run(view: Callable[..., Any], request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    try:
        return render(view(request, *args, **kwargs))
    except ApiError as error:
        return error_response(error)
    except ValidationError as error:
        return error_response(from_validation_error(error))
    except Http404:
        return error_response(ApiError(404, "Not found.", code="not_found"))


def idempotent(view: Callable[..., Any]) -> Callable[..., HttpResponse]:
    """Make a POST safe to retry: with an `Idempotency-Key`, the first answer is kept and
    replayed for the same key and body; the same key with another body is refused.

    The key's row is inserted before the work, in the work's transaction. A concurrent
    duplicate blocks on the unique index until the first commits, then replays its answer;
    if the first rolled back, the duplicate does the work itself. Either way the work is
    done once.
    """

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None:
            return _run(view, request, *args, **kwargs)
        if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
            return error_response(
                ApiError(
                    422,
                    "An Idempotency-Key is 1 to 255 visible ASCII characters.",
                    fields={IDEMPOTENCY_HEADER: ["1 to 255 visible ASCII characters."]},
                )
            )
        method = request.method or "POST"
        fingerprint = hashlib.sha256(
            method.encode() + b" " + request.path.encode() + b"\n" + request.body
        ).hexdigest()
        with transaction.atomic():
            record, created = IdempotencyRecord.objects.get_or_create(
                merchant=merchant_of(request),
                key=key,
                defaults={
                    "method": method,
                    "path": request.path[:300],
                    "fingerprint": fingerprint,
                },
            )
            if not created:
                return _replay(record, fingerprint)
            response = _run(view, request, *args, **kwargs)
            record.status_code = response.status_code
            record.response_body = response.content.decode()
            record.save(update_fields=["status_code", "response_body"])
        return response

    return wrapped


def _replay(record: IdempotencyRecord, fingerprint: str) -> HttpResponse:
    if record.fingerprint != fingerprint:
        # 409, not 422: the request itself is fine; it conflicts with what the key is bound to.
        return error_response(
            ApiError(
                409,
                "This Idempotency-Key was used with a different request; use a new key.",
                code="idempotency_mismatch",
                fields={IDEMPOTENCY_HEADER: ["Used before with a different request."]},
            )
        )
    response = HttpResponse(
        record.response_body, status=record.status_code, content_type="application/json"
    )
    response["Idempotent-Replayed"] = "true"
    return response


# Dates ---------------------------------------------------------------------------------------


def _iso_date(value: Any) -> Any:
    # pydantic would also read "0" or 1700000000 as a Unix time; the schema says
    # `format: date`, so only YYYY-MM-DD is a date here.
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError("Send a date as YYYY-MM-DD.")
    if not isinstance(value, str | date):
        raise ValueError("Send a date as YYYY-MM-DD.")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date)]


# Cursor pagination ---------------------------------------------------------------------------


def encode_cursor(pk: int) -> str:
    return str(pk)


def decode_cursor(cursor: str) -> int:
    """The primary key to continue below; newest first, so new rows never shift a page."""
    if not re.fullmatch(CURSOR_PATTERN, cursor):
        raise ApiError(
            422, "A cursor is a next_cursor we gave out.", fields={"cursor": ["Unknown cursor."]}
        )
    # Beyond the largest id it simply means "from the start" (and SQLite compares no further).
    return min(int(cursor), MAX_ID)


def cursor_field() -> Any:
    return Field(
        None,
        pattern=CURSOR_PATTERN,
        description="`next_cursor` of the previous page; the first page without it.",
    )


def page(queryset: Any, *, cursor: str | None, limit: int) -> tuple[list[Any], str | None]:
    """One page of a queryset ordered by -pk, and the cursor of the next (None at the end)."""
    if cursor is not None:
        queryset = queryset.filter(pk__lt=decode_cursor(cursor))
    rows = list(queryset.order_by("-pk")[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (encode_cursor(rows[-1].pk) if more and rows else None)
