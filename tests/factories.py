from decimal import Decimal

import factory

from customers.models import Customer
from invoices.models import Invoice
from invoices.rules import LineItemInput
from invoices.services import InvoiceInput, invoice_create
from merchants.models import Membership, Merchant, Role, User

PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"person{n}@example.com")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    password = factory.django.Password(PASSWORD)

    @factory.post_generation
    def verified_email(self, create: bool, extracted: bool | None, **kwargs) -> None:
        """Everyone made here has confirmed their address, as after sign-up (allauth's row)."""
        if create and extracted is not False:
            from allauth.account.models import EmailAddress

            EmailAddress.objects.create(user=self, email=self.email, primary=True, verified=True)


class MerchantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Merchant

    name = factory.Sequence(lambda n: f"Merchant {n}")


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    merchant = factory.SubFactory(MerchantFactory)
    role = Role.OWNER


class CustomerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Customer

    merchant = factory.SubFactory(MerchantFactory)
    name = factory.Faker("name")
    email = factory.Sequence(lambda n: f"customer{n}@example.org")
    company = factory.Faker("company")


def make_invoice(
    merchant: Merchant,
    *,
    customer: Customer | None = None,
    items: list[tuple[str, str, str]] | None = None,
    issue: bool = False,
    by: User | None = None,
    **fields,
) -> Invoice:
    """An invoice made the way the product makes them: through invoice_create."""
    rows = items if items is not None else [("Consulting", "2", "150.00")]
    data = InvoiceInput(
        customer=customer,
        currency=fields.pop("currency", "USD"),
        items=[
            LineItemInput(name=n, quantity=Decimal(q), unit_price=Decimal(p)) for n, q, p in rows
        ],
        **fields,
    )
    return invoice_create(merchant=merchant, data=data, by=by, issue=issue)


def make_paid_payment(invoice: Invoice, units: int, *, symbol: str = "USDC", sender: str = ""):
    """An order of `invoice` in `symbol` on the seeded dev network with one confirmed
    deposit of `units` base units, settled as the watcher settles it (credited, books
    posted) but without a chain: for tests about what comes after the money arrived."""
    import secrets

    from checkout.services import payment_start
    from checkout.settlement import settle_transfer
    from tests.evm import seed_networks
    from tests.wallets.test_addresses import ABANDON_XPUB
    from wallets.addresses import wallet_set
    from wallets.models import Asset, Network, Transfer, TransferStatus, Wallet

    seed_networks()  # transactional tests flush the seeded networks
    Network.objects.filter(slug="anvil").update(enabled=True)
    if not Wallet.objects.filter(merchant=invoice.merchant).exists():
        wallet_set(merchant=invoice.merchant, xpub=ABANDON_XPUB)
    usdc = Asset.objects.select_related("network").get(network__slug="anvil", symbol="USDC")
    payment = payment_start(invoice=invoice, asset=usdc)
    asset = usdc if symbol == "USDC" else Asset.objects.get(network=usdc.network, symbol=symbol)
    transfer = Transfer.objects.create(
        network=asset.network,
        asset=asset,
        deposit_address=payment.deposit_address,
        tx_hash="0x" + secrets.token_hex(32),
        log_index=0,
        block_number=1,
        block_hash="0x" + secrets.token_hex(32),
        from_address=sender or "0x" + "9" * 40,
        to_address=payment.deposit_address.address,
        amount=Decimal(units),
        status=TransferStatus.CONFIRMED,
        confirmations=12,
    )
    settle_transfer(transfer.pk)
    payment.refresh_from_db()
    return payment
