from django.db.models import Q, QuerySet

from customers.models import Customer
from merchants.models import Merchant


def customer_list(
    *, merchant: Merchant, query: str = "", include_archived: bool = False
) -> QuerySet[Customer]:
    customers = Customer.objects.filter(merchant=merchant)
    if not include_archived:
        customers = customers.filter(archived_at__isnull=True)
    query = query.strip()
    if query:
        customers = customers.filter(
            Q(name__icontains=query) | Q(email__icontains=query) | Q(company__icontains=query)
        )
    return customers.order_by("name", "pk")


def customer_scope(*, merchant: Merchant) -> QuerySet[Customer]:
    """Every customer of the merchant, archived too: for lookups by id."""
    return Customer.objects.filter(merchant=merchant)
