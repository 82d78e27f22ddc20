from django.http import HttpRequest

from merchants.access import SESSION_KEY
from merchants.selectors import membership_for_user, memberships_of_user


def current_merchant(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    membership = getattr(request, "membership", None)
    if membership is None and user is not None and user.is_authenticated:
        # Pages outside `merchant_view` (allauth's two-factor and password pages) still show
        # the business the person works in, so the sidebar looks the same everywhere.
        membership = membership_for_user(
            user=user,  # type: ignore[arg-type]
            merchant_id=request.session.get(SESSION_KEY),
        )

    def businesses() -> list:
        # Called only by templates that show the switcher. membership_for_user read them
        # all with the membership itself; a membership from elsewhere costs one query.
        if user is None or not user.is_authenticated or membership is None:
            return []
        known = getattr(membership, "all_of_user", None)
        if known is not None:
            return known
        return list(memberships_of_user(user=user))  # type: ignore[arg-type]

    return {
        "merchant": membership.merchant if membership is not None else None,
        "membership": membership,
        "businesses": businesses,
    }
