from django.http import HttpRequest

from merchants.selectors import memberships_of_user


def current_merchant(request: HttpRequest) -> dict:
    user = getattr(request, "user", None)
    membership = getattr(request, "membership", None)

    def businesses() -> list:
        # Called only by templates that show the switcher, and then in one query.
        if user is None or not user.is_authenticated or membership is None:
            return []
        return list(memberships_of_user(user=user))

    return {
        "merchant": getattr(request, "merchant", None),
        "membership": membership,
        "businesses": businesses,
    }
