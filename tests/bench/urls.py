from django.http import HttpResponse
from django.urls import include, path

from merchants.access import merchant_view


@merchant_view()
def minimal(request):
    return HttpResponse("ok")


def public_minimal(request):
    """The baseline for public pages: the whole middleware stack, no view work."""
    return HttpResponse("ok")


urlpatterns = [
    path("bench/minimal/", minimal),
    path("bench/public-minimal/", public_minimal),
    path("", include("config.urls")),
]
