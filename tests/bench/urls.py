from django.http import HttpResponse
from django.urls import include, path

from merchants.access import merchant_view


@merchant_view()
def minimal(request):
    return HttpResponse("ok")


urlpatterns = [path("bench/minimal/", minimal), path("", include("config.urls"))]
