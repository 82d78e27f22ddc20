from typing import cast

from django import forms
from django.core.exceptions import ValidationError
from django.http import QueryDict

from wallets.addresses import AccountKey, parse_account_xpub
from wallets.forwarders import parse_account_address
from wallets.models import Network, TransferStatus


class AccountAddressForm(forms.Form):
    account_address = forms.CharField(
        label="Account address",
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "spellcheck": "false", "placeholder": "0x…"}
        ),
        help_text=(
            "Your wallet's address (an exchange deposit address works too if it accepts "
            "contract transfers). Each payment gets its own forwarder address that can only "
            "ever pass its funds on to this account."
        ),
        max_length=60,
    )

    def clean_account_address(self) -> str:
        try:
            return parse_account_address(self.cleaned_data["account_address"])
        except ValueError as error:
            raise ValidationError(str(error)) from None


class XpubForm(forms.Form):
    xpub = forms.CharField(
        label="Account extended public key (xpub)",
        widget=forms.TextInput(
            attrs={"autocomplete": "off", "spellcheck": "false", "placeholder": "xpub6…"}
        ),
        help_text=(
            "From your wallet's account m/44'/60'/0'. Only the public key: Stablebill derives a "
            "fresh receiving address per payment and can never spend."
        ),
        max_length=200,
    )
    account: AccountKey | None = None

    def clean_xpub(self) -> str:
        raw = self.cleaned_data["xpub"]
        try:
            self.account = parse_account_xpub(raw)
        except ValidationError as error:
            # Say why, and never echo a private key back into the page.
            self.data = cast(QueryDict, self.data).copy()
            self.data["xpub"] = ""
            raise error
        return self.account.xpub


class LedgerFilterForm(forms.Form):
    currency = forms.CharField(required=False, max_length=16)
    kind = forms.CharField(required=False, max_length=40)
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))


class TransferFilterForm(forms.Form):
    status = forms.ChoiceField(
        choices=[("", "All statuses"), *TransferStatus.choices], required=False
    )
    network = forms.ChoiceField(choices=[], required=False)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["network"].choices = [("", "All networks")] + [  # type: ignore[attr-defined]
            (slug, name) for slug, name in Network.objects.values_list("slug", "name")
        ]
