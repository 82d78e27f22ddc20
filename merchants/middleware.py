from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


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
