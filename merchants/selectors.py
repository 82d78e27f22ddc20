from django.db.models import QuerySet

from merchants.models import Membership, User


def membership_for_user(*, user: User, merchant_id: int | None = None) -> Membership | None:
    """The membership a signed-in person works in: the one they chose, else their first.

    Every membership of the person is read in that one query (a person works in a handful
    of businesses) and kept on the one returned as `all_of_user`, so the business switcher
    every page shows costs no second query."""
    memberships = list(memberships_of_user(user=user))
    chosen = next((m for m in memberships if m.merchant_id == merchant_id), None)
    if chosen is None and memberships:
        chosen = memberships[0]
    if chosen is not None:
        chosen.all_of_user = memberships  # type: ignore[attr-defined]
    return chosen


def membership_list(*, merchant_id: int) -> QuerySet[Membership]:
    return Membership.objects.select_related("user").filter(merchant_id=merchant_id).order_by("pk")


def memberships_of_user(*, user: User) -> QuerySet[Membership]:
    return Membership.objects.select_related("merchant").filter(user=user).order_by("pk")
