import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import QueryDict
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.translation import get_language

from customers.models import Customer
from customers.selectors import customer_list
from invoices.models import (
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    PaymentMethod,
    PricingMode,
    TaxRate,
)
from invoices.rules import (
    NO_DISCOUNT,
    Discount,
    DiscountKind,
    LineItemInput,
    check_percent,
    check_price,
    check_quantity,
)
from invoices.selectors import credited_quantities
from merchants.models import FeePayer, Merchant
from merchants.money import (
    CURRENCY_CHOICES,
    PAYMENT_ASSET_CHOICES,
    QUANTITY_DECIMALS,
    Currency,
    UnknownCurrency,
    get_currency,
    price_gap,
    priced_currency_choices,
)
from merchants.validators import MAX_ID, parse_id

MAX_ITEM_ROWS = 200
ITEM_KEY = re.compile(
    r"^items-(\d{1,4})-(name|description|quantity|unit_price|discount_kind|discount_value|tax_rate)$"
)


class CustomerChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Customer) -> str:  # type: ignore[override]
        label = f"{obj.name} — {obj.email}"
        return f"{label} (archived)" if obj.is_archived else label


class IdsChoiceField(forms.ModelMultipleChoiceField):
    """Choices by id, where a value that cannot be an id (past 64 bits, or not digits) is
    refused as an invalid choice instead of reaching the database, where SQLite raises
    OverflowError on an integer past 64 bits."""

    def clean(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            for raw in value:
                if parse_id(str(raw)) is None:
                    raise ValidationError(
                        self.error_messages["invalid_pk_value"],
                        code="invalid_pk_value",
                        params={"pk": str(raw)[:40]},
                    )
        return super().clean(value)


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
    discount_kind = forms.ChoiceField(
        choices=DiscountKind.CHOICES, required=False, label="Invoice discount"
    )
    discount_value = forms.DecimalField(
        required=False,
        label="Discount value",
        widget=forms.TextInput(attrs={"inputmode": "decimal", "placeholder": "0"}),
    )
    po_number = forms.CharField(required=False, max_length=64, label="PO number")
    terms_days = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=365,
        label="Payment terms (Net days)",
        help_text="Sets the due date this many days after the invoice is issued.",
    )
    notes = forms.CharField(
        required=False,
        max_length=5000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Shown to the customer on the invoice and in the email.",
    )
    terms = forms.CharField(
        required=False, max_length=5000, widget=forms.Textarea(attrs={"rows": 3})
    )
    footer = forms.CharField(
        required=False, max_length=1000, widget=forms.Textarea(attrs={"rows": 2})
    )
    payment_methods = IdsChoiceField(
        queryset=PaymentMethod.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Other ways to pay",
        help_text="Their instructions appear beside the stablecoin checkout.",
    )

    def __init__(self, *args, merchant: Merchant, invoice: Invoice | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._kept_due_date = invoice.due_date if invoice is not None else None
        self.fields["payment_methods"].queryset = PaymentMethod.objects.filter(  # type: ignore[attr-defined]
            merchant=merchant, archived_at__isnull=True
        )
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
            self.initial.setdefault("footer", merchant.invoice_footer)
            self.initial.setdefault("terms_days", merchant.default_terms_days)

    def clean_due_date(self) -> date | None:
        # A typo guard for people typing dates; the API takes a past due date (an import, or
        # work billed late), and the invoice is then simply overdue. A draft keeps its own.
        due = self.cleaned_data.get("due_date")
        if due is not None and due < timezone.localdate() and due != self._kept_due_date:
            raise forms.ValidationError("The due date is in the past.")
        return due

    def clean(self) -> dict:
        cleaned = super().clean() or {}
        kind, value = cleaned.get("discount_kind") or "", cleaned.get("discount_value")
        if kind and value is None:
            self.add_error("discount_value", "Enter the discount.")
        elif kind == DiscountKind.PERCENT and value is not None:
            try:
                check_percent(value, what="The discount")
            except forms.ValidationError as error:
                self.add_error("discount_value", error)
        elif not kind and value:
            self.add_error("discount_kind", "Choose a percent or an amount.")
        return cleaned

    @property
    def discount(self) -> Discount:
        data = getattr(self, "cleaned_data", {})
        kind, value = data.get("discount_kind") or "", data.get("discount_value")
        if not kind or value is None:
            return NO_DISCOUNT
        return Discount(kind, value)

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
    discount_kind = forms.ChoiceField(
        choices=[("", "No discount"), ("percent", "% off"), ("amount", "Amount off")],
        required=False,
        widget=forms.Select(attrs={"aria-label": "Line discount"}),
    )
    discount_value = forms.DecimalField(
        required=False,
        widget=forms.TextInput(
            attrs={"inputmode": "decimal", "placeholder": "0", "aria-label": "Discount value"}
        ),
    )
    tax_rate = forms.TypedChoiceField(
        coerce=int,
        required=False,
        empty_value=None,
        widget=forms.Select(attrs={"aria-label": "Tax"}),
    )
    line_amount: Decimal | None = None  # set by the editor for display

    def __init__(
        self,
        *args,
        currency: Currency | None,
        index: int,
        tax_rates: Sequence[TaxRate] = (),
        **kwargs,
    ) -> None:
        kwargs["prefix"] = f"items-{index}"
        super().__init__(*args, **kwargs)
        self.currency = currency
        self.index = index
        self.tax_rates = {rate.pk: rate for rate in tax_rates}
        self.fields["tax_rate"].choices = [  # type: ignore[attr-defined]
            ("", "No tax"),
            *((rate.pk, str(rate)) for rate in tax_rates),
        ]
        if not self.is_bound and "tax_rate" not in self.initial:
            default = next((rate for rate in tax_rates if rate.is_default), None)
            self.initial["tax_rate"] = default.pk if default else ""

    def clean(self) -> dict:
        cleaned = super().clean() or {}
        kind, value = cleaned.get("discount_kind") or "", cleaned.get("discount_value")
        if kind and value is None:
            self.add_error("discount_value", "Enter the discount.")
        elif kind == DiscountKind.PERCENT and value is not None:
            try:
                check_percent(value, what="The discount")
            except forms.ValidationError as error:
                self.add_error("discount_value", error)
        elif kind == DiscountKind.AMOUNT and value is not None and self.currency is not None:
            try:
                check_price(value, self.currency, what="The discount")
            except forms.ValidationError as error:
                self.add_error("discount_value", error)
        elif not kind and value:
            self.add_error("discount_kind", "Choose % off or an amount off.")
        return cleaned

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
        kind, value = data.get("discount_kind") or "", data.get("discount_value")
        rate = self.tax_rates.get(data["tax_rate"]) if data.get("tax_rate") else None
        return LineItemInput(
            name=data["name"],
            quantity=data["quantity"],
            unit_price=data["unit_price"],
            description=data.get("description", ""),
            discount=Discount(kind, value) if kind and value is not None else NO_DISCOUNT,
            tax=rate.spec if rate is not None else None,
        )


def item_indices(data: QueryDict) -> list[int]:
    indices = sorted({int(m.group(1)) for key in data if (m := ITEM_KEY.match(key))})
    return indices[:MAX_ITEM_ROWS]


def editor_tax_rates(merchant: Merchant, invoice: Invoice | None = None) -> list[TaxRate]:
    """The rates a line may pick: the active ones, and archived ones a draft already uses."""
    rates = TaxRate.objects.filter(merchant=merchant)
    used = (
        set(invoice.items.values_list("tax_rate_id", flat=True)) - {None}
        if invoice is not None
        else set()
    )
    return [rate for rate in rates if rate.archived_at is None or rate.pk in used]


def bound_item_forms(
    data: QueryDict, currency: Currency | None, tax_rates: Sequence[TaxRate] = ()
) -> list[LineItemForm]:
    forms_ = [
        LineItemForm(data, currency=currency, index=i, tax_rates=tax_rates)
        for i in item_indices(data)
    ]
    return [form for form in forms_ if not form.is_blank()]


def initial_item_forms(
    invoice: Invoice | None, currency: Currency | None, tax_rates: Sequence[TaxRate] = ()
) -> list[LineItemForm]:
    if invoice is None:
        return [LineItemForm(currency=currency, index=0, tax_rates=tax_rates)]
    rows = [
        LineItemForm(
            currency=currency,
            index=i,
            tax_rates=tax_rates,
            initial={
                "name": item.name,
                "description": item.description,
                "quantity": _trimmed(item.quantity),
                "unit_price": _trimmed(item.unit_price),
                "discount_kind": item.discount_kind,
                "discount_value": _trimmed(item.discount_value) if item.discount_kind else None,
                "tax_rate": item.tax_rate_id or "",
            },
        )
        for i, item in enumerate(invoice.items.all())
    ]
    return rows or [LineItemForm(currency=currency, index=0, tax_rates=tax_rates)]


def _trimmed(value: Decimal) -> Decimal:
    """Without trailing zeros, and never in exponent form (normalize() turns 10 into 1E+1)."""
    return Decimal(format(value.normalize(), "f"))


class MarkPaidForm(forms.Form):
    method = forms.ModelChoiceField(
        queryset=PaymentMethod.objects.none(),
        required=False,
        empty_label="Other (say in the reference)",
        label="Paid by",
    )
    reference = forms.CharField(
        max_length=500,
        label="Payment reference",
        help_text="How the money arrived: bank transfer reference, receipt number, wallet tx…",
    )

    def __init__(self, *args, merchant: Merchant, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["method"].queryset = PaymentMethod.objects.filter(  # type: ignore[attr-defined]
            merchant=merchant
        )


class TaxRateForm(forms.ModelForm):
    class Meta:
        model = TaxRate
        fields = ["name", "percent", "inclusive", "country", "is_default"]
        widgets = {"percent": forms.TextInput(attrs={"inputmode": "decimal"})}

    def clean_percent(self) -> Decimal:
        percent = self.cleaned_data["percent"]
        check_percent(percent, what="The rate")
        return percent


class PaymentMethodForm(forms.ModelForm):
    class Meta:
        model = PaymentMethod
        fields = ["name", "kind", "account_holder", "bank_name", "iban", "bic", "instructions"]
        widgets = {"instructions": forms.Textarea(attrs={"rows": 3})}


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


class RenderedOnce:
    """A widget whose HTML is rendered once per class, name, value, attributes and language,
    then reused. For the invoice list's filters, drawn on every visit and every search
    keystroke: Django renders a widget through its form templates, and the status select and
    two date inputs cost more than the 25 rows below them. For widgets whose choices and
    attributes are fixed by their declaration. Only plain values are kept (what a query
    string holds), a bounded number of them, so a stream of odd values cannot grow it."""

    rendered: "OrderedDict[tuple, SafeString]" = OrderedDict()
    KEEP = 256
    _lock = threading.Lock()

    def render(self, name, value, attrs=None, renderer=None):
        if not (value is None or isinstance(value, str)):
            return super().render(name, value, attrs, renderer)  # type: ignore[misc]
        written = tuple(sorted((attrs or {}).items()))
        key = (type(self), name, value, written, renderer, get_language())
        kept = self.rendered.get(key)
        if kept is None:
            kept = super().render(name, value, attrs, renderer)  # type: ignore[misc]
            with self._lock:
                self.rendered[key] = kept
                while len(self.rendered) > self.KEEP:
                    self.rendered.popitem(last=False)
        return kept


class OnceSelect(RenderedOnce, forms.Select):
    pass


class OnceDateInput(RenderedOnce, forms.DateInput):
    pass


@receiver(setting_changed)
def _forget_rendered_widgets(**kwargs: object) -> None:
    # Format and template settings change how a widget is written (in tests).
    RenderedOnce.rendered.clear()


class InvoiceFilterForm(forms.Form):
    q = forms.CharField(required=False, label="Search")
    status = forms.ChoiceField(
        choices=[("", "All statuses"), *InvoiceStatus.choices], required=False, widget=OnceSelect
    )
    customer = forms.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    overdue = forms.BooleanField(required=False)
    created_from = forms.DateField(required=False, widget=OnceDateInput(attrs={"type": "date"}))
    created_to = forms.DateField(required=False, widget=OnceDateInput(attrs={"type": "date"}))


class CreditNoteForm(forms.Form):
    """A reason, and per line the units to credit (blank: none of it). All blank credits
    everything left. `rows` pairs each line with its field, for the table."""

    reason = forms.CharField(max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args, invoice: Invoice, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        credited = credited_quantities(invoice)
        self.rows: list[dict] = []
        for item in invoice.items.all():
            left = item.quantity - credited.get(item.position, Decimal(0))
            name = f"quantity_{item.position}"
            if left > 0:
                self.fields[name] = forms.DecimalField(
                    required=False,
                    min_value=Decimal("0.0001"),
                    max_value=left,
                    decimal_places=QUANTITY_DECIMALS,
                    label=f"Units of {item.name} to credit",
                    widget=forms.NumberInput(attrs={"step": "any", "inputmode": "decimal"}),
                )
            self.rows.append(
                {
                    "item": item,
                    "credited": credited.get(item.position, Decimal(0)),
                    "left": left,
                    "field": self[name] if left > 0 else None,
                }
            )

    @property
    def creditable(self) -> bool:
        return any(row["field"] is not None for row in self.rows)

    @property
    def quantities(self) -> dict[int, Decimal | None] | None:
        """Position -> units for the service; None (everything left) when all are blank."""
        chosen = {
            row["item"].position: self.cleaned_data[row["field"].name]
            for row in self.rows
            if row["field"] is not None and self.cleaned_data.get(row["field"].name) is not None
        }
        return chosen or None
