"""Django admin behind the same door as the dashboard.

The admin's own login form would be a second, unthrottled way in with no second factor, so
it sends people to allauth's sign-in (throttled per account and per address, two-factor),
then back. With ADMIN_REQUIRE_TWO_FACTOR, staff without a second factor are sent to set one
up before any admin page opens.
"""

from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any, TypeVar, cast

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.apps import AdminConfig
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.http.response import HttpResponseBase
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode


def _needs_second_factor(request: HttpRequest) -> bool:
    # Imported here: this module is loaded with INSTALLED_APPS, before any model exists.
    from allauth.mfa.utils import is_mfa_enabled

    return settings.ADMIN_REQUIRE_TWO_FACTOR and not is_mfa_enabled(request.user)


ViewType = TypeVar("ViewType", bound=Callable[..., HttpResponseBase])

# The date hierarchy's parameters (`created_at__year=2026`) and how many digits each may have.
DATE_PARTS = {"__year": 4, "__month": 2, "__day": 2}


def refused_admin_input(request: HttpRequest) -> str | None:
    """Why a request to the admin is refused before Django's admin code reads it, or None.

    The admin reads list filters, the date hierarchy and the ids an action is given straight
    from the request: a NUL character reached PostgreSQL (which refuses it in text), a year
    past 32 bits overflowed, and an id that is no number broke the action's query, each a 500.
    """
    for data in (request.GET, request.POST):
        for key, values in data.lists():
            if "\x00" in key or any("\x00" in value for value in values):
                return "Text may not contain NUL characters."
    for key, values in request.GET.lists():
        value = str(values[-1]) if values else ""
        for suffix, digits in DATE_PARTS.items():
            if key.endswith(suffix) and not (
                value.isascii() and value.isdigit() and len(value) <= digits
            ):
                return f"{key} takes a number of at most {digits} digits."
    from merchants.validators import parse_id

    if any(parse_id(raw) is None for raw in request.POST.getlist("_selected_action")):
        return "The selected rows are named by their ids."
    return None


class IdAutocompleteSelect(AutocompleteSelect):
    """The admin's autocomplete for a foreign key, shown again after a refused form without the
    posted values that are no ids: Django's own looks them up as they came ('  ', '1e999'),
    and the query raised ValueError, a 500 in place of the form's "Select a valid choice"."""

    def optgroups(
        self, name: str, value: Sequence[str], attr: dict[str, Any] | None = None
    ) -> list[Any]:
        from merchants.validators import parse_id

        ids = [v for v in value if v in (None, "") or parse_id(str(v)) is not None]
        return super().optgroups(name, ids, attr)


class IdAutocomplete:
    """For a ModelAdmin or an inline with autocomplete_fields: IdAutocompleteSelect for them."""

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        names = self.get_autocomplete_fields(request)  # type: ignore[attr-defined]
        if "widget" not in kwargs and db_field.name in names:
            site = self.admin_site  # type: ignore[attr-defined]
            kwargs["widget"] = IdAutocompleteSelect(db_field, site, using=kwargs.get("using"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]


class StablebillAdminSite(admin.AdminSite):
    site_header = "Stablebill administration"
    site_title = "Stablebill admin"

    def admin_view(self, view: ViewType, cacheable: bool = False) -> ViewType:
        guarded = super().admin_view(view, cacheable)

        @wraps(guarded)
        def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            refusal = refused_admin_input(request)
            if refusal is not None:
                return HttpResponseBadRequest(refusal, content_type="text/plain; charset=utf-8")
            return guarded(request, *args, **kwargs)

        return cast(ViewType, checked)

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
