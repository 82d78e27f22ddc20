from django.db import models

from merchants.models import Merchant, PostalAddress


class Customer(PostalAddress):
    """Someone a merchant bills. Archived customers keep their invoices but leave the pickers."""

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="customers")
    name = models.CharField(max_length=200)
    # Stored lower-cased so uniqueness per merchant ignores case.
    email = models.EmailField()
    company = models.CharField(max_length=200, blank=True)
    tax_id = models.CharField("Tax ID", max_length=64, blank=True)
    notes = models.TextField(blank=True, help_text="Private; never shown to the customer.")
    archived_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["merchant", "email"], name="customer_unique_email")
        ]
        indexes = [models.Index(fields=["merchant", "name"], name="customer_merchant_name_idx")]
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"

    @property
    def is_archived(self) -> bool:
        return self.archived_at is not None
