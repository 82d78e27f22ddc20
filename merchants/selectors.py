from django.db.models import QuerySet

from merchants.models import Membership, User


def membership_for_user(*, user: User, merchant_id: int | None = None) -> Membership | None:
    """The membership a signed-in person works in: the one they chose, else their first."""
    memberships = Membership.objects.select_related("merchant").filter(user=user)
    if merchant_id is not None:
        chosen = memberships.filter(merchant_id=merchant_id).first()
        if chosen is not None:
            return chosen
    return memberships.order_by("pk").first()


def membership_list(*, merchant_id: int) -> QuerySet[Membership]:
    return Membership.objects.select_related("user").filter(merchant_id=merchant_id).order_by("pk")


def memberships_of_user(*, user: User) -> QuerySet[Membership]:
    return Membership.objects.select_related("merchant").filter(user=user).order_by("pk")
