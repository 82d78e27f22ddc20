import re
from decimal import Decimal

from django import forms
from django.http import QueryDict

from customers.models import Customer
from customers.selectors import customer_list
from invoices.models import Invoice, InvoiceKind, InvoiceStatus, PricingMode
from invoices.rules import LineItemInput, check_price, check_quantity
from merchants.models import FeePayer, Merchant
from merchants.money import (
    CURRENCY_CHOICES,
    PAYMENT_ASSET_CHOICES,
    Currency,
    UnknownCurrency,
    get_currency,
    price_gap,
    priced_currency_choices,
)

MAX_ITEM_ROWS = 200
ITEM_KEY = re.compile(r"^items-(\d{1,4})-(name|description|quantity|unit_price)$")


class CustomerChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Customer) -> str:  # type: ignore[override]
        label = f"{obj.name} — {obj.email}"
        return f"{label} (archived)" if obj.is_archived else label


class InvoiceForm(forms.Form):
    customer = CustomerChoiceField(
        queryset=Customer.objects.none(), required=False, empty_label="No customer"
    )
    currency = forms.ChoiceField(choices=CURRENCY_CHOICES)
    description = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}), max_length=5000
    )
    due_date = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    kind = forms.ChoiceField(
        choices=InvoiceKind.choices, initial=InvoiceKind.ONE_TIME, widget=forms.RadioSelect
    )
    pricing_mode = forms.ChoiceField(
        choices=PricingMode.choices, initial=PricingMode.NO_TIMER, widget=forms.RadioSelect
    )
    accepted_assets = forms.MultipleChoiceField(
        choices=PAYMENT_ASSET_CHOICES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Leave all unticked to accept every supported asset.",
    )
    fee_payer = forms.ChoiceField(choices=FeePayer.choices)
    foreign_id = forms.CharField(
        required=False,
        max_length=128,
        label="Foreign ID",
        help_text="Your own order or ERP reference; unique among your invoices.",
    )
    tracking_id = forms.CharField(required=False, max_length=128, label="Tracking ID")
    callback_url = forms.URLField(
        required=False, max_length=500, label="Callback URL", assume_scheme="https"
    )
    payment_page_url = forms.URLField(
        required=False, max_length=500, label="Back-to-merchant URL", assume_scheme="https"
    )
    payment_page_button = forms.CharField(required=False, max_length=40, label="Button label")

    def __init__(self, *args, merchant: Merchant, invoice: Invoice | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        customers = customer_list(merchant=merchant)
        if invoice is not None and invoice.customer_id is not None:
            # Keep an archived customer selectable on the draft that already names them.
            customers = customers | Customer.objects.filter(
                pk=invoice.customer_id, merchant=merchant
            )
        self.fields["customer"].queryset = customers.order_by("name", "pk")  # type: ignore[attr-defined]
        # Only currencies with a real price are offered (an invoice keeps its own).
        self.fields["currency"].choices = priced_currency_choices(  # type: ignore[attr-defined]
            keep=invoice.currency if invoice is not None else ""
        )
        kept = set(invoice.accepted_assets) if invoice is not None else set()
        self.fields["accepted_assets"].choices = [  # type: ignore[attr-defined]
            (code, label)
            for code, label in PAYMENT_ASSET_CHOICES
            if code in kept or not price_gap(code)
        ]
        if not self.is_bound and invoice is None:
            self.initial.setdefault("currency", merchant.default_currency)
            self.initial.setdefault("fee_payer", merchant.default_fee_payer)

    @property
    def currency_obj(self) -> Currency | None:
        raw = self.data.get("currency") if self.is_bound else self.initial.get("currency")
        try:
            return get_currency(str(raw))
        except UnknownCurrency:
            return None


class LineItemForm(forms.Form):
    name = forms.CharField(
        max_length=200, widget=forms.TextInput(attrs={"placeholder": "Item or service"})
    )
    description = forms.CharField(
        max_length=500,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "Description (optional)", "class": "desc"}),
    )
    # Text inputs with a decimal keyboard: number inputs would let the browser round or
    # reformat what was typed, and the server is the one that judges precision.
    quantity = forms.DecimalField(
        initial=Decimal("1"),
        widget=forms.TextInput(attrs={"inputmode": "decimal", "aria-label": "Quantity"}),
    )
    unit_price = forms.DecimalField(
        label="Unit price",
        widget=forms.TextInput(
            attrs={"inputmode": "decimal", "placeholder": "0.00", "aria-label": "Unit price"}
        ),
    )
    line_amount: Decimal | None = None  # set by the editor for display

    def __init__(self, *args, currency: Currency | None, index: int, **kwargs) -> None:
        kwargs["prefix"] = f"items-{index}"
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.index = index

    def clean_quantity(self) -> Decimal:
        quantity = self.cleaned_data["quantity"]
        check_quantity(quantity)
        return quantity

    def clean_unit_price(self) -> Decimal:
        price = self.cleaned_data["unit_price"]
        if self.currency is not None:
            check_price(price, self.currency)
        return price

    def is_blank(self) -> bool:
        return not any(
            str(self.data.get(self.add_prefix(name), "")).strip()
            for name in ("name", "description", "unit_price")
        )

    def to_input(self) -> LineItemInput:
        data = self.cleaned_data
        return LineItemInput(
            name=data["name"],
            quantity=data["quantity"],
            unit_price=data["unit_price"],
            description=data.get("description", ""),
        )


def item_indices(data: QueryDict) -> list[int]:
    indices = sorted({int(m.group(1)) for key in data if (m := ITEM_KEY.match(key))})
    return indices[:MAX_ITEM_ROWS]


def bound_item_forms(data: QueryDict, currency: Currency | None) -> list[LineItemForm]:
    forms_ = [LineItemForm(data, currency=currency, index=i) for i in item_indices(data)]
    return [form for form in forms_ if not form.is_blank()]


def initial_item_forms(invoice: Invoice | None, currency: Currency | None) -> list[LineItemForm]:
    if invoice is None:
        return [LineItemForm(currency=currency, index=0)]
    rows = [
        LineItemForm(
            currency=currency,
            index=i,
            initial={
                "name": item.name,
                "description": item.description,
                "quantity": _trimmed(item.quantity),
                "unit_price": _trimmed(item.unit_price),
            },
        )
        for i, item in enumerate(invoice.items.all())
    ]
    return rows or [LineItemForm(currency=currency, index=0)]


def _trimmed(value: Decimal) -> Decimal:
    """Without trailing zeros, and never in exponent form (normalize() turns 10 into 1E+1)."""
    return Decimal(format(value.normalize(), "f"))


class MarkPaidForm(forms.Form):
    reference = forms.CharField(
        max_length=500,
        label="Payment reference",
        help_text="How the money arrived: bank transfer reference, receipt number, wallet tx…",
    )


class IntegrationForm(forms.ModelForm):
    class Meta:
        model = Invoice
        fields = ["tracking_id", "callback_url", "payment_page_url", "payment_page_button"]
        labels = {
            "tracking_id": "Tracking ID",
            "callback_url": "Callback URL",
            "payment_page_url": "Back-to-merchant URL",
            "payment_page_button": "Button label",
        }


class InvoiceFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Search")
    status = forms.ChoiceField(
        choices=[("", "All statuses"), *InvoiceStatus.choices], required=False
    )
    customer = forms.IntegerField(required=False, min_value=1)
    overdue = forms.BooleanField(required=False)
    created_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    created_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
