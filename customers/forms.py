from django import forms

from customers.models import Customer


class CustomerForm(forms.ModelForm):
    class Meta:
        model = Customer
        fields = ["name", "email", "company", "address", "tax_id", "notes"]
        widgets = {
            "address": forms.Textarea(attrs={"rows": 3}),
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
