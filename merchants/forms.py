from django import forms
from django.core.exceptions import ValidationError

from merchants.models import SELLER_FIELDS, Merchant, Role, User
from merchants.validators import LogoField


class SignupExtraForm(forms.Form):
    """What our sign-up asks beyond allauth's email and password: who, and which business.

    allauth builds its sign-up form on top of this one and calls `signup` once the account
    exists, in the same request; the new person owns the new business."""

    full_name = forms.CharField(label="Your name", max_length=150)
    business_name = forms.CharField(label="Business name", max_length=120)

    def signup(self, request, user: User) -> None:  # type: ignore[no-untyped-def]
        from merchants.services import merchant_create

        first, _, last = self.cleaned_data["full_name"].strip().partition(" ")
        user.first_name, user.last_name = first, last
        user.save(update_fields=["first_name", "last_name"])
        merchant_create(name=self.cleaned_data["business_name"], owner=user)


class MerchantCreateForm(forms.ModelForm):
    class Meta:
        model = Merchant
        fields = ["name", "default_currency"]
        labels = {"name": "Business name"}


class MerchantSettingsForm(forms.ModelForm):
    logo = LogoField(
        required=False,
        widget=forms.ClearableFileInput,
        help_text="PNG, JPEG or WebP, at most 1 MB and 4096 x 4096 pixels; stored as PNG.",
    )

    class Meta:
        model = Merchant
        fields = [
            "name",
            "default_currency",
            "default_fee_payer",
            "invoice_prefix",
            "brand_colour",
            "logo",
            "paper_size",
            "send_reminders",
            *SELLER_FIELDS,
        ]
        labels = {"name": "Business name", "brand_colour": "Brand colour"}
        widgets = {
            "brand_colour": forms.TextInput(attrs={"type": "color"}),
            "invoice_footer": forms.Textarea(attrs={"rows": 3}),
        }


class MemberInviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.STAFF)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class TeamSecurityForm(forms.ModelForm):
    class Meta:
        model = Merchant
        fields = ["require_two_factor"]


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=80,
        help_text="Where the key is used, e.g. “Shop” or “ERP”, to know which to revoke.",
    )


def form_add_service_errors(form: forms.BaseForm, error: ValidationError) -> None:
    """A service's field errors, put on the form's fields; the rest above the form."""
    for field, messages in error.message_dict.items():
        form.add_error(field if field in form.fields else None, messages)
