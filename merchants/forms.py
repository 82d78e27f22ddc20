from django import forms
from django.contrib.auth import forms as auth_forms
from django.contrib.auth import password_validation
from django.contrib.auth.forms import AuthenticationForm

from merchants.models import Merchant, Role, User
from merchants.validators import LogoField


class LoginForm(AuthenticationForm):
    username = forms.EmailField(label="Email", widget=forms.EmailInput(attrs={"autofocus": True}))

    def clean_username(self) -> str:
        # Accounts are stored with lower-case emails; the lookup behind authenticate() is exact.
        return self.cleaned_data["username"].lower()


class SignupForm(forms.Form):
    full_name = forms.CharField(label="Your name", max_length=150)
    email = forms.EmailField(label="Work email")
    business_name = forms.CharField(label="Business name", max_length=120)
    password = forms.CharField(
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 8 characters, not only digits, not a common password.",
    )

    def clean_email(self) -> str:
        email = self.cleaned_data["email"].strip().lower()
        if User.objects.filter(email=email).exists():
            raise forms.ValidationError("An account with this email already exists.")
        return email

    def clean(self) -> dict:
        cleaned = super().clean() or {}
        password = cleaned.get("password")
        if password:
            probe = User(email=cleaned.get("email", ""), first_name=cleaned.get("full_name", ""))
            try:
                password_validation.validate_password(password, probe)
            except forms.ValidationError as error:
                self.add_error("password", error)
        return cleaned


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
        ]
        labels = {"name": "Business name", "brand_colour": "Brand colour"}
        widgets = {"brand_colour": forms.TextInput(attrs={"type": "color"})}


class MemberInviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=Role.choices, initial=Role.STAFF)


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class PasswordResetForm(auth_forms.PasswordResetForm):
    """Also reaches people invited to a team who have not chosen a password yet: Django's form
    skips accounts without a usable password, which would lock such a person out for good."""

    def get_users(self, email: str):  # type: ignore[override]
        return User.objects.filter(email__iexact=email.strip(), is_active=True)


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        max_length=80,
        help_text="Where the key is used, e.g. “Shop” or “ERP”, to know which to revoke.",
    )
