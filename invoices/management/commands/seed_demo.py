"""Create the demo business `make run` signs you into, once; later runs only print the login."""

import secrets
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from customers.services import customer_create
from invoices.models import Actor, InvoiceKind, PricingMode
from invoices.rules import LineItemInput
from invoices.services import InvoiceInput, invoice_create, invoice_mark_paid
from merchants.models import Merchant, User
from merchants.services import merchant_create

DEMO_EMAIL = "demo@stablebill.localhost"


class Command(BaseCommand):
    help = "Create a demo merchant with customers and invoices, and print its login."

    def handle(self, *args, **options) -> None:
        login_file = Path(settings.VAR_DIR) / "demo-login.txt"
        user = User.objects.filter(email=DEMO_EMAIL).first()
        if user is None or not login_file.exists():
            password = secrets.token_urlsafe(9)
            with transaction.atomic():
                if user is None:
                    user = User.objects.create_user(
                        email=DEMO_EMAIL, password=password, first_name="Dana", last_name="Demo"
                    )
                    try:
                        self._populate(user)
                    except ValidationError as error:
                        # Outside DEBUG no static price is approved unless the operator says
                        # so, and the demo bills in EUR and GBP too: say what to set, and
                        # leave nothing half-made (the transaction rolls back).
                        raise CommandError(
                            "The demo business could not be made: "
                            + " ".join(error.messages)
                            + " Run it with DEBUG=1 (make run does), or set "
                            "RATE_STATIC_APPROVED='*' or a live rate source."
                        ) from None
                else:
                    user.set_password(password)
                    user.save(update_fields=["password"])
            login_file.parent.mkdir(parents=True, exist_ok=True)
            login_file.write_text(password)
        password = login_file.read_text().strip()
        self.stdout.write(
            self.style.SUCCESS(
                f"\n  Stablebill is starting at {settings.SITE_URL}/\n"
                f"  Sign in as {DEMO_EMAIL} with password {password}\n"
                f"  Admin: {settings.SITE_URL}/admin/ (same login)\n"
            )
        )

    def _populate(self, user: User) -> None:
        user.is_staff = user.is_superuser = True  # the demo login doubles as the admin
        user.save(update_fields=["is_staff", "is_superuser"])
        merchant = merchant_create(name="Northwind Studio", owner=user)
        Merchant.objects.filter(pk=merchant.pk).update(
            brand_colour="#0f766e",
            legal_name="Northwind Studio Ltd",
            address_line1="1 Harbour Street",
            city="Bristol",
            postal_code="BS1 4RN",
            country="GB",
            tax_id="GB987654321",
            contact_email="billing@northwind.example",
        )
        merchant.refresh_from_db()
        ada = customer_create(
            merchant=merchant,
            name="Ada Lovelace",
            email="ada@analytical.example",
            company="Analytical Engines Ltd",
            address_line1="12 St James's Square",
            city="London",
            postal_code="SW1Y 4JH",
            country="GB",
        )
        grace = customer_create(
            merchant=merchant,
            name="Grace Hopper",
            email="grace@cobol.example",
            company="Compiler Works",
        )
        customer_create(merchant=merchant, name="Alan Turing", email="alan@bletchley.example")
        due = timezone.localdate() + timedelta(days=14)

        def items(*rows: tuple[str, str, str]) -> list[LineItemInput]:
            return [
                LineItemInput(name=n, quantity=Decimal(q), unit_price=Decimal(p))
                for n, q, p in rows
            ]

        paid = invoice_create(
            merchant=merchant,
            by=user,
            issue=True,
            data=InvoiceInput(
                customer=ada,
                currency="USD",
                due_date=due,
                description="Brand refresh, phase one.",
                items=items(
                    ("Discovery workshop", "1", "1200.00"), ("Logo design", "1", "2400.00")
                ),
            ),
        )
        invoice_mark_paid(
            invoice=paid, reference="Wire 2026-11-18 / ref 88231", by=user, actor=Actor.USER
        )
        invoice_create(
            merchant=merchant,
            by=user,
            issue=True,
            data=InvoiceInput(
                customer=grace,
                currency="USDC",
                due_date=due,
                accepted_assets=["USDC", "USDT"],
                items=items(
                    ("Compiler consulting", "12.5", "150.00"), ("Code review", "4", "120.00")
                ),
            ),
        )
        invoice_create(
            merchant=merchant,
            by=user,
            issue=True,
            data=InvoiceInput(
                customer=ada,
                currency="USD",
                pricing_mode=PricingMode.TIMER,
                items=items(("Website hosting, December", "1", "49.00")),
            ),
        )
        invoice_create(
            merchant=merchant,
            by=user,
            issue=True,
            data=InvoiceInput(
                currency="USDT",
                kind=InvoiceKind.PERMANENT,
                description="Tips and donations",
                accepted_assets=["USDT", "USDC"],
            ),
        )
        invoice_create(
            merchant=merchant,
            by=user,
            data=InvoiceInput(
                customer=grace,
                currency="EUR",
                due_date=due,
                items=items(("Workshop: modern tooling", "2", "900.00")),
            ),
        )
