from django import forms

from customers.models import Customer
from merchants.models import ADDRESS_FIELDS


class CustomerForm(forms.ModelForm):
    class Meta:
        model = Customer
        fields = ["name", "email", "company", *ADDRESS_FIELDS, "tax_id", "notes"]
        widgets = {
            "notes": forms.Textarea(attrs={"rows": 2}),
        }

    def clean_email(self) -> str:
        return self.cleaned_data["email"].strip().lower()


class InlineCustomerForm(forms.ModelForm):
    """The short form offered inside the invoice editor."""

    prefix = "new_customer"

    class Meta:
        model = Customer
        fields = ["name", "email", "company"]

    def clean_email(self) -> str:
        return self.cleaned_data["email"].strip().lower()
