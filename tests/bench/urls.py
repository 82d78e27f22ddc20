from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from ninja import NinjaAPI

from merchants.access import merchant_view
from merchants.api import ApiKeyAuth, PerKeyThrottle


@merchant_view()
def minimal(request):
    return HttpResponse("ok")


def public_minimal(request):
    """The baseline for public pages: the whole middleware stack, no view work."""
    return HttpResponse("ok")


# The baseline of the REST API: what every API request pays (routing, key lookup, throttle,
# JSON), no work.
minimal_api = NinjaAPI(
    title="Bench minimal",
    urls_namespace="bench-minimal-api",
    auth=ApiKeyAuth(),
    throttle=PerKeyThrottle(),
    docs_url=None,
    openapi_url=None,
)


@minimal_api.get("/ping")
def ping(request: HttpRequest) -> dict:
    return {"ok": True}


urlpatterns = [
    path("bench/minimal/", minimal),
    path("bench/public-minimal/", public_minimal),
    path("bench-min/", minimal_api.urls),
    path("", include("config.urls")),
]
