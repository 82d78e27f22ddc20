from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import TooManyFieldsSent
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest


class QueryLimitMiddleware:
    """More query parameters than DATA_UPLOAD_MAX_NUMBER_FIELDS: a 400 saying so, the API's
    in its JSON error shape, before anything reads request.GET and raises.

    Django answers that exception with a 400 of its own outside DEBUG; under DEBUG (`make
    run`) its error page reads request.GET again and fails with a 500. Only a query string
    with that many separators is parsed here; any other costs a count."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
        query = request.META.get("QUERY_STRING", "")
        if limit is not None and query.count("&") + query.count(";") >= limit:
            try:
                request.GET  # noqa: B018 (parsing is the check)
            except TooManyFieldsSent:
                return _too_many_parameters(request, limit)
        return self.get_response(request)


def _too_many_parameters(request: HttpRequest, limit: int) -> HttpResponse:
    message = f"At most {limit} query parameters."
    if request.path.startswith("/api/"):
        from merchants.api import ApiError, error_response

        error = ApiError(
            400, message, code="too_many_parameters", fields={"query": [f"At most {limit}."]}
        )
        return error_response(error)
    return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")


class NoStoreMiddleware:
    """Every page we render is someone's private data (a merchant's dashboard, a payer's
    invoice and deposit address): no browser or proxy cache may keep a copy, so the back
    button after signing out on a shared computer shows nothing. Static files never get here
    (WhiteNoise answers them first); a view that chose its own caching (PDF revalidation)
    keeps it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not response.has_header("Cache-Control"):
            response["Cache-Control"] = "no-store"
        return response


class ApiKeyAddressMiddleware:
    """Logs the first use of each API key from each client address (security log), after
    the API has authenticated the request. A cache entry makes repeats cost nothing; the
    database decides on a cache miss, so a restart never logs an address twice."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        from merchants.models import ApiKey

        key = getattr(request, "auth", None)
        if isinstance(key, ApiKey):
            from merchants.security import security_log_api_key_address

            security_log_api_key_address(request=request, key=key)
        return response
