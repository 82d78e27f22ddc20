"""The one door into merchant pages: who is signed in, for which merchant, with which role."""

from collections.abc import Callable
from functools import wraps

from allauth.mfa.utils import is_mfa_enabled
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django_htmx.middleware import HtmxDetails

from merchants.models import Membership, Merchant, Role, User
from merchants.selectors import membership_for_user


class AuthedRequest(HttpRequest):
    """What a view behind login_required receives."""

    user: User  # type: ignore[assignment]
    htmx: HtmxDetails


class MerchantRequest(AuthedRequest):
    """What a view behind `merchant_view` receives."""

    merchant: Merchant
    membership: Membership


SESSION_KEY = "merchant_id"


def merchant_view(min_role: str = Role.VIEWER) -> Callable:
    """Resolve `request.merchant` and `request.membership`, refusing roles below `min_role`.

    Views then scope every query by `request.merchant`; an object of another merchant is
    simply not found (404), which tells an outsider nothing about what exists.
    """

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @login_required
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            membership = membership_for_user(
                user=request.user,  # type: ignore[arg-type]  # login_required ran first
                merchant_id=request.session.get(SESSION_KEY),
            )
            if membership is None:
                return redirect("merchant_create")
            if not membership.has_role(min_role):
                raise PermissionDenied("Your role does not allow this.")
            if membership.merchant.require_two_factor and not is_mfa_enabled(request.user):
                messages.warning(
                    request,
                    f"{membership.merchant.name} requires two-factor sign-in: add an "
                    "authenticator app or a passkey to continue.",
                )
                return redirect("mfa_index")
            request.membership = membership  # type: ignore[attr-defined]
            request.merchant = membership.merchant  # type: ignore[attr-defined]
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
