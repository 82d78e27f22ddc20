from django.conf import settings
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path, re_path

from config.api import api, unknown_api_path
from config.health import healthz, readyz
from config.metrics import metrics_view

urlpatterns: list[URLPattern | URLResolver] = [
    # The payer's page first: every open page asks for its status every few seconds, and
    # matching it behind the 340 other patterns took a tenth of its time. No other pattern
    # starts with its prefixes (pay/, payments/, refund/, refunds/, claims/).
    path("", include("checkout.urls")),
    # Operations (answered by config.health.HealthCheckMiddleware first; named here for reverse).
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    # Every character, line breaks included: "." stops at one and left such a path to the
    # site's HTML 404.
    re_path(r"^api/(?P<rest>[\s\S]*)\Z", unknown_api_path),
    # Sign-up, sign-in, email verification, password reset, re-authentication and
    # two-factor (/2fa/): django-allauth, with our templates.
    path("", include("allauth.urls")),
    path("", include("merchants.urls")),
    path("customers/", include("customers.urls")),
    path("", include("invoices.urls")),
    path("", include("wallets.urls")),
]

if settings.DEBUG:
    from django.conf.urls.static import static

    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
