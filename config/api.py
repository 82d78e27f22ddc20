"""The REST API: one NinjaAPI, every app's router mounted under /api/v1/.

Every error is answered in one shape (see merchants.api); unknown body fields are refused,
and amounts travel as decimal strings.
"""

from http.client import responses as HTTP_PHRASES
from typing import Any

from django.core.exceptions import RequestDataTooBig, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled
from ninja.errors import ValidationError as SchemaError
from ninja.operation import Operation

from checkout.api import router as payments_router
from checkout.refund_api import POSITIVE_AMOUNT_PATTERN
from checkout.refund_api import invoice_router as invoice_refunds_router
from checkout.refund_api import router as refunds_router
from customers.api import router as customers_router
from invoices.api import (
    DISCOUNT_KINDS,
    PERCENT_PATTERN,
    POSITIVE_PRICE_PATTERN,
    PRICE_PATTERN,
    QUANTITY_PATTERN,
    catalog_router,
)
from invoices.api import router as invoices_router
from merchants.api import (
    DECIMAL_PATTERN,
    IDEMPOTENCY_HEADER,
    ApiError,
    ApiKeyAuth,
    PerKeyThrottle,
    body_too_large,
    error_response,
    from_validation_error,
)
from wallets.api import router as wallets_router

# What any operation may answer besides its own documented outcomes: every key may be wrong
# or throttled, every input may be refused, every object named in the path may not exist.
COMMON_ERRORS = {
    "401": "A valid API key is required.",
    "422": "The request does not validate; `fields` names each offending input, including "
    "any query parameter the operation does not declare.",
    "429": "Too many requests for this API key.",
}


# No text we store may hold a NUL character (PostgreSQL cannot), and the API refuses one in
# any input (merchants.api.refuse_nul_characters); every input string says so.
NO_NUL_PATTERN = "^[^\\u0000]*$"


def _no_nul(schema: Any) -> None:
    """Give every string in an input schema that has no pattern of its own the NUL rule."""
    if isinstance(schema, list):
        for item in schema:
            _no_nul(item)
        return
    if not isinstance(schema, dict):
        return
    plain = not {"pattern", "enum", "format"} & set(schema)
    if schema.get("type") == "string" and plain:
        schema["pattern"] = NO_NUL_PATTERN
    for value in schema.values():
        _no_nul(value)


class DocumentedApi(NinjaAPI):
    """The OpenAPI document states every status and error shape each operation answers."""

    def get_openapi_schema(self, *args: Any, **kwargs: Any) -> Any:
        schema = super().get_openapi_schema(*args, **kwargs)
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                # django-ninja keys the declared statuses by int: as strings, so that the
                # common ones below never add a second "409" or "422" to the JSON document.
                responses = {str(key): value for key, value in operation["responses"].items()}
                operation["responses"] = responses
                extra = dict(COMMON_ERRORS)
                if "{" in path:
                    extra["404"] = "No such object of yours."
                if "requestBody" in operation:
                    extra["400"] = "The body is not JSON."
                headers = {p["name"] for p in operation.get("parameters", [])}
                if IDEMPOTENCY_HEADER in headers:
                    extra["409"] = "The Idempotency-Key was used with another request."
                for status, text in extra.items():
                    declared = responses.setdefault(status, {"description": text, "content": error})
                    if declared["description"] == HTTP_PHRASES[int(status)]:
                        declared["description"] = text
                _no_nul(operation.get("parameters", []))
        for name, component in schema.get("components", {}).get("schemas", {}).items():
            if name.endswith("In"):
                _no_nul(component)
        return schema


api = DocumentedApi(
    title="Stablebill API",
    version="1",
    description=(
        "Invoices, customers, payments, refunds and balances of one merchant. Authenticate with "
        "`Authorization: Bearer <API key>` (created in Settings → API keys). Amounts are "
        'decimal strings such as `"19.99"`, never JSON numbers. Every POST accepts an '
        "`Idempotency-Key` header: a retry with the same key and body replays the first answer. "
        'Errors look like `{"detail": ..., "code": ..., "fields": {name: [messages]}}`.'
    ),
    urls_namespace="api",
    auth=ApiKeyAuth(),
    throttle=PerKeyThrottle(),
)
api.add_router("/v1/invoices", invoices_router)
api.add_router("/v1/invoices", payments_router)
api.add_router("/v1/invoices", invoice_refunds_router)
api.add_router("/v1/refunds", refunds_router)
api.add_router("/v1/customers", customers_router)
api.add_router("/v1", wallets_router)
api.add_router("/v1", catalog_router)


def _query_names(operation: Operation) -> frozenset[str]:
    names: set[str] = set()
    for model in operation.models:
        if model.__ninja_param_source__ == "query":
            names |= set(getattr(model, "__ninja_flatten_map__", None) or model.model_fields)
    return frozenset(names)


def refuse_unknown_query_parameters(api: NinjaAPI) -> None:
    """A query parameter no operation declares is refused (422), like an unknown body field:
    a misspelt filter (`?stauts=paid`) must not silently list everything. django-ninja has no
    option for it, so each operation's checks (auth, throttle) gain this one after them."""
    # The bound routers hold the operations the URLs serve (clones of the routers' own).
    # `_get_bound_routers` is django-ninja's own (1.7), kept for want of a public way: its
    # public `add_decorator` wraps either the whole view before the key check ("view": an
    # unknown parameter would answer 422 where a missing key must answer 401) or the endpoint
    # function after parsing ("operation"), and neither is told which query parameters the
    # operation declares; only the bound Operation knows. An upgrade that moves it fails
    # tests/api/test_documents_api.py and the Schemathesis runs, which send undeclared query
    # parameters to every operation.
    for router in api._get_bound_routers():
        for path_view in router.path_operations.values():
            for operation in path_view.operations:
                known = _query_names(operation)
                checks = operation._run_checks

                def checked(request: HttpRequest, checks: Any = checks, known: Any = known) -> Any:
                    refused = checks(request)
                    if refused is not None:
                        return refused
                    unknown = [name for name in request.GET if name not in known]
                    if not unknown:
                        return None
                    fields = {
                        name or "(empty name)": ["Unknown query parameter."] for name in unknown
                    }
                    name = next(iter(fields))
                    return error_response(
                        ApiError(422, f"{name}: Unknown query parameter.", fields=fields)
                    )

                operation._run_checks = checked  # type: ignore[method-assign]


refuse_unknown_query_parameters(api)


def _field_name(loc: tuple | list) -> str:
    # ("body", "payload", "items", 0, "unit_price") → "items.0.unit_price"
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        source = parts.pop(0)
        if source == "body" and parts:
            parts.pop(0)  # the handler's parameter name tells a client nothing
    # pydantic names the branch of a discount it checked ("discount", "percent", "value"):
    # the client sent no such field.
    parts = [
        part
        for index, part in enumerate(parts)
        if not (index and parts[index - 1] == "discount" and part in DISCOUNT_KINDS)
    ]
    return ".".join(str(part) for part in parts) or "body"


PATTERN_MESSAGES = {
    DECIMAL_PATTERN: 'Send a decimal string such as "19.99".',
    PRICE_PATTERN: 'Send a decimal string such as "19.99", at most 1000000000000.',
    POSITIVE_PRICE_PATTERN: 'Send a decimal string above zero such as "19.99".',
    QUANTITY_PATTERN: 'Send a quantity above zero such as "2", at most 1000000, 4 decimals.',
    POSITIVE_AMOUNT_PATTERN: 'Send a decimal string above zero such as "12.5".',
    PERCENT_PATTERN: 'Send a percent from 0 to 100 such as "10", at most 4 decimals.',
}


@api.exception_handler(SchemaError)
def schema_error(request: HttpRequest, error: SchemaError) -> HttpResponse:
    fields: dict[str, list[str]] = {}
    for item in error.errors:
        message = item.get("msg", "Invalid.")
        if item.get("type") == "extra_forbidden":
            message = "Unknown field."
        elif item.get("type") == "string_type":
            message = 'Send a string; amounts are decimal strings such as "19.99".'
        elif item.get("type") == "string_pattern_mismatch":
            pattern = (item.get("ctx") or {}).get("pattern")
            message = PATTERN_MESSAGES.get(str(pattern), "Not a valid value.")
        elif item.get("type") == "missing":
            message = "This field is required."
        fields.setdefault(_field_name(item.get("loc", ())), []).append(message)
    name, messages = next(iter(fields.items()), ("body", ["Invalid request."]))
    return error_response(ApiError(422, f"{name}: {messages[0]}", fields=fields))


@api.exception_handler(ApiError)
def api_error(request: HttpRequest, error: ApiError) -> HttpResponse:
    return error_response(error)


@api.exception_handler(ValidationError)
def domain_error(request: HttpRequest, error: ValidationError) -> HttpResponse:
    return error_response(from_validation_error(error))


@api.exception_handler(AuthenticationError)
def unauthenticated(request: HttpRequest, error: AuthenticationError) -> HttpResponse:
    response = error_response(
        ApiError(401, "A valid API key is required (Authorization: Bearer …).", code="unauthorized")
    )
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(Throttled)
def throttled(request: HttpRequest, error: Throttled) -> HttpResponse:
    return error_response(
        ApiError(429, "Too many requests for this API key; retry later.", code="rate_limited")
    )


@api.exception_handler(Http404)
def not_found(request: HttpRequest, error: Http404) -> HttpResponse:
    return error_response(ApiError(404, "Not found.", code="not_found"))


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, error: HttpError) -> HttpResponse:
    return error_response(ApiError(error.status_code, str(error), code="http_error"))


@api.exception_handler(RequestDataTooBig)
def too_large(request: HttpRequest, error: RequestDataTooBig) -> HttpResponse:
    # Wherever the body is first read (the key check reads it to refuse NUL characters).
    return error_response(body_too_large())


@csrf_exempt  # an API client has no CSRF cookie: it must get the JSON 404, not a 403 page
def unknown_api_path(request: HttpRequest, rest: str = "") -> HttpResponse:
    """Any path under /api/ that no route serves: the JSON error, never an HTML page."""
    return error_response(ApiError(404, "No such API endpoint.", code="not_found"))
