"""Django admin behind the same door as the dashboard.

The admin's own login form would be a second, unthrottled way in with no second factor, so
it sends people to allauth's sign-in (throttled per account and per address, two-factor),
then back. With ADMIN_REQUIRE_TWO_FACTOR, staff without a second factor are sent to set one
up before any admin page opens.
"""

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.apps import AdminConfig
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode


def _needs_second_factor(request: HttpRequest) -> bool:
    # Imported here: this module is loaded with INSTALLED_APPS, before any model exists.
    from allauth.mfa.utils import is_mfa_enabled

    return settings.ADMIN_REQUIRE_TWO_FACTOR and not is_mfa_enabled(request.user)


class StablebillAdminSite(admin.AdminSite):
    site_header = "Stablebill administration"
    site_title = "Stablebill admin"

    def has_permission(self, request: HttpRequest) -> bool:
        return super().has_permission(request) and not _needs_second_factor(request)

    def login(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        user = request.user
        if user.is_authenticated:
            if not (user.is_active and user.is_staff):
                raise PermissionDenied("This account has no access to the administration.")
            if _needs_second_factor(request):
                messages.warning(
                    request, "The administration requires two-factor sign-in: add one first."
                )
                return redirect("mfa_index")
        target = request.GET.get("next", "")
        if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
            target = ""
        target = target or reverse("admin:index")
        if user.is_authenticated:
            return redirect(target)
        return redirect(f"{reverse('account_login')}?{urlencode({'next': target})}")


class StablebillAdminConfig(AdminConfig):
    default_site = "merchants.admin_site.StablebillAdminSite"
