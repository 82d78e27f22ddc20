from datetime import datetime

from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.core.validators import MaxValueValidator, RegexValidator
from django.db import models
from django_countries.fields import CountryField

from merchants.money import CURRENCY_CHOICES
from merchants.validators import validate_logo


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra) -> "User":
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        # Accounts made with the operator's tools (createsuperuser, the demo seed) are trusted:
        # their address counts as verified, so sign-in does not wait for a confirmation email.
        # Sign-up through the site verifies by email instead (allauth makes that row itself).
        from allauth.account.models import EmailAddress

        EmailAddress.objects.create(user=user, email=user.email, primary=True, verified=True)
        return user

    def create_user(self, email: str, password: str | None = None, **extra) -> "User":
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra) -> "User":
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra)


class User(AbstractUser):
    """People sign in with their email address; there is no separate username."""

    username = None  # type: ignore[assignment]
    email = models.EmailField("email address", unique=True)

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS = []  # type: ignore[misc]

    objects = UserManager()  # type: ignore[assignment,misc]

    def __str__(self) -> str:
        return self.get_full_name() or self.email


class FeePayer(models.TextChoices):
    MERCHANT = "merchant", "Merchant (deducted from the amount credited)"
    PAYER = "payer", "Payer (added to the amount due)"


class PaperSize(models.TextChoices):
    A4 = "A4", "A4"
    LETTER = "letter", "US Letter"


hex_colour = RegexValidator(r"^#[0-9a-fA-F]{6}$", "Enter a colour as #RRGGBB, e.g. #4f46e5.")


class PostalAddress(models.Model):
    """An address in lines, as every country prints it, plus an ISO country code."""

    address_line1 = models.CharField("Address line 1", max_length=200, blank=True)
    address_line2 = models.CharField("Address line 2", max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    postal_code = models.CharField("Postal code", max_length=20, blank=True)
    region = models.CharField("State / region", max_length=100, blank=True)
    country = CountryField(blank=True)

    class Meta:
        abstract = True

    @property
    def address_lines(self) -> list[str]:
        # str() of a country is its code.
        return address_lines({key: str(getattr(self, key) or "") for key in ADDRESS_FIELDS})


ADDRESS_FIELDS = ("address_line1", "address_line2", "city", "postal_code", "region", "country")


# Countries that print the postal code after the town (the rest mostly put it before).
POSTCODE_LAST = frozenset({"GB", "US", "CA", "AU", "IE", "NZ", "IN", "BR", "JP", "ZA", "SG"})


def address_lines(address: dict[str, str]) -> list[str]:
    """The printed lines of an address dict (the snapshots keep addresses as dicts)."""
    from django_countries import countries

    country = address.get("country", "")
    city, region, postal = (address.get(k, "") for k in ("city", "region", "postal_code"))
    if country in POSTCODE_LAST:
        # "London SW1Y 4JH", "Hampton, Virginia 23681"
        town = " ".join(p for p in (", ".join(p for p in (city, region) if p), postal) if p)
    else:
        # "10115 Berlin"; the region, where one is given, after a comma
        town = ", ".join(p for p in (" ".join(p for p in (postal, city) if p), region) if p)
    lines = [
        address.get("address_line1", ""),
        address.get("address_line2", ""),
        town,
        countries.name(country) if country else "",
    ]
    return [line for line in lines if line]


class Merchant(PostalAddress):
    """The tenant: every customer, invoice and balance belongs to exactly one merchant."""

    name = models.CharField(max_length=120)
    default_currency = models.CharField(max_length=8, choices=CURRENCY_CHOICES, default="USD")
    default_fee_payer = models.CharField(
        max_length=16, choices=FeePayer.choices, default=FeePayer.MERCHANT
    )
    invoice_prefix = models.CharField(
        max_length=12,
        default="INV-",
        validators=[RegexValidator(r"^[A-Za-z0-9_/-]*$", "Letters, digits, - _ and / only.")],
        help_text="Put in front of every new invoice number, e.g. INV-00042.",
    )
    brand_colour = models.CharField(max_length=7, default="#4f46e5", validators=[hex_colour])
    logo = models.ImageField(
        upload_to="logos/",
        blank=True,
        validators=[validate_logo],
        help_text="PNG, JPEG or WebP, at most 1 MB.",
    )
    paper_size = models.CharField(
        "PDF paper size", max_length=8, choices=PaperSize.choices, default=PaperSize.A4
    )
    send_reminders = models.BooleanField(
        "Email payment reminders",
        default=True,
        help_text="Once a few days before the due date, and once when an invoice is overdue.",
    )
    require_two_factor = models.BooleanField(
        "Require two-factor sign-in for the whole team",
        default=False,
        help_text="Members without an authenticator app or passkey must add one before they "
        "can open this business.",
    )
    # Seller details printed on every document; the address comes from PostalAddress.
    legal_name = models.CharField(
        max_length=200, blank=True, help_text="As registered; the business name if empty."
    )
    tax_id = models.CharField("Tax ID", max_length=64, blank=True, help_text="VAT, GST or EIN.")
    registration_number = models.CharField("Company registration number", max_length=64, blank=True)
    contact_email = models.EmailField("Billing contact email", blank=True)
    contact_phone = models.CharField("Billing contact phone", max_length=40, blank=True)
    invoice_footer = models.TextField(
        "Default footer",
        max_length=1000,
        blank=True,
        help_text="Printed at the foot of every new invoice, e.g. bank or legal notices.",
    )
    default_terms_days = models.PositiveSmallIntegerField(
        "Default payment terms (days)",
        null=True,
        blank=True,
        validators=[MaxValueValidator(365)],
        help_text="Net N: new invoices fall due this many days after they are issued.",
    )
    # The number the next invoice will get. Incremented under a row lock in the same
    # transaction that creates the invoice, so numbers never repeat and never skip.
    next_invoice_number = models.PositiveIntegerField(default=1, editable=False)
    # Credit notes are numbered in their own series, under the same row lock.
    next_credit_note_number = models.PositiveIntegerField(default=1, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


# What business settings edit about the seller, as printed on documents.
SELLER_FIELDS = (
    "legal_name",
    *ADDRESS_FIELDS,
    "tax_id",
    "registration_number",
    "contact_email",
    "contact_phone",
    "invoice_footer",
    "default_terms_days",
)


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    STAFF = "staff", "Staff"
    VIEWER = "viewer", "Viewer"


# What each role may do, from least to most; a role may do everything the roles before it may.
ROLE_RANK = {Role.VIEWER: 0, Role.STAFF: 1, Role.OWNER: 2}


class Membership(models.Model):
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.STAFF)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "merchant"], name="membership_unique_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.merchant} ({self.role})"

    def has_role(self, role: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]

    @property
    def can_edit(self) -> bool:
        return self.has_role(Role.STAFF)

    @property
    def is_owner(self) -> bool:
        return self.role == Role.OWNER


class ApiKey(models.Model):
    """A merchant's key to the REST API. Only a hash is stored; the key is shown once.

    Keys carry 32 random bytes, so a fast hash (SHA-256) cannot be brute-forced and keeps
    every API request cheap; `prefix` finds the row without scanning hashes.
    """

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=80)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed = models.CharField(max_length=64, editable=False)
    created_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.name} (sb_{self.prefix}_…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IdempotencyRecord(models.Model):
    """The first response to a POST that carried an Idempotency-Key, replayed for repeats.

    The row is inserted before the request's work, in the same transaction: a concurrent
    repeat waits on the unique index until the first commits, then replays its answer.
    """

    merchant = models.ForeignKey(Merchant, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=300)
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField(null=True)
    response_body = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["merchant", "key"], name="idempotency_unique_key")
        ]

    def __str__(self) -> str:
        return f"{self.merchant_id} {self.key}"


class SigningSecret(models.Model):
    """A Standard Webhooks secret (`whsec_` + base64 of 24 random bytes) with rotation.

    After a rotation the previous secret keeps signing beside the new one until
    `previous_secret_until`, so a receiver can switch secrets without losing a callback.
    """

    secret = models.CharField(max_length=64)
    previous_secret = models.CharField(max_length=64, blank=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True

    def secrets_at(self, now: datetime) -> list[str]:
        secrets = [self.secret]
        if self.previous_secret and self.previous_secret_until and now < self.previous_secret_until:
            secrets.append(self.previous_secret)
        return secrets


class WebhookEndpoint(SigningSecret):
    """Where a merchant wants every (or some) callback event sent."""

    merchant = models.ForeignKey(
        Merchant, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=120, blank=True)
    # Event types to send; empty means all of them.
    events = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.url

    def wants(self, event_type: str) -> bool:
        return self.enabled and (not self.events or event_type in self.events)


class InvoiceCallbackSigner(SigningSecret):
    """The secret that signs callbacks sent to invoices' own callback URLs."""

    merchant = models.OneToOneField(
        Merchant, on_delete=models.CASCADE, related_name="invoice_callback_signer"
    )

    def __str__(self) -> str:
        return f"Invoice callbacks of {self.merchant_id}"


class SecurityEventKind(models.TextChoices):
    SIGNIN = "signin", "Signed in"
    SIGNIN_FAILED = "signin_failed", "Failed sign-in"
    ACCOUNT = "account", "Account security change"
    MONEY = "money", "Change that moves money"
    API_KEY_ADDRESS = "api_key_address", "API key used from a new address"


class SecurityEvent(models.Model):
    """One line of a merchant's security log, shown to its owners.

    Sign-ins and account changes belong to a person, not a business (`merchant` is empty):
    each business the person belongs to sees them. Changes inside a business name it.
    Rows are only ever added.
    """

    merchant = models.ForeignKey(
        Merchant, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    user = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, blank=True, related_name="security_events"
    )
    kind = models.CharField(max_length=20, choices=SecurityEventKind.choices)
    summary = models.CharField(max_length=200)
    detail = models.CharField(max_length=500, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["merchant", "-created_at"], name="security_event_merchant")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.summary}"
