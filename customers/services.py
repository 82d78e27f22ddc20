from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from customers.models import Customer
from merchants.models import ADDRESS_FIELDS, Merchant

EDITABLE_FIELDS = ("name", "email", "company", *ADDRESS_FIELDS, "tax_id", "notes")
DUPLICATE_EMAIL = "A customer with this email already exists."


def customer_create(
    *,
    merchant: Merchant,
    name: str,
    email: str,
    company: str = "",
    tax_id: str = "",
    notes: str = "",
    **address: str,
) -> Customer:
    """`address` takes the billing address fields (ADDRESS_FIELDS), each optional."""
    unknown = set(address) - set(ADDRESS_FIELDS)
    if unknown:
        raise ValueError(f"Not an address field: {', '.join(sorted(unknown))}")
    customer = Customer(
        merchant=merchant,
        name=name.strip(),
        email=email.strip().lower(),
        company=company.strip(),
        **{key: value.strip() for key, value in address.items()},
        tax_id=tax_id.strip(),
        notes=notes.strip(),
    )
    customer.full_clean(validate_unique=False, validate_constraints=False)
    return _save_unique(customer)


def customer_update(*, customer: Customer, **fields: str) -> Customer:
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"Not editable: {', '.join(sorted(unknown))}")
    for key, value in fields.items():
        value = value.strip()
        setattr(customer, key, value.lower() if key == "email" else value)
    customer.full_clean(validate_unique=False, validate_constraints=False)
    return _save_unique(customer)


def _save_unique(customer: Customer) -> Customer:
    # The database constraint decides; no check-then-insert race.
    try:
        with transaction.atomic():
            customer.save()
    except IntegrityError:
        raise ValidationError({"email": DUPLICATE_EMAIL}) from None
    return customer


def customer_archive(*, customer: Customer) -> Customer:
    Customer.objects.filter(pk=customer.pk, archived_at__isnull=True).update(
        archived_at=timezone.now()
    )
    customer.refresh_from_db(fields=["archived_at"])
    return customer


def customer_unarchive(*, customer: Customer) -> Customer:
    Customer.objects.filter(pk=customer.pk).update(archived_at=None)
    customer.archived_at = None
    return customer
