import pytest

from checkout.services import payment_start
from checkout.settlement import settle_report
from tests.checkout import statuslog
from tests.evm import TesterChain
from tests.factories import make_invoice
from tests.wallets.test_addresses import ABANDON_XPUB
from wallets.addresses import wallet_set
from wallets.models import Asset
from wallets.scanner import scan_network


class Shop:
    """A merchant with a wallet, an in-process chain, and helpers to pay and watch."""

    def __init__(self, merchant, tester: TesterChain, network) -> None:
        self.merchant, self.tester, self.network = merchant, tester, network
        self.usdc = Asset.objects.get(network=network, symbol="USDC")
        wallet_set(merchant=merchant, xpub=ABANDON_XPUB)

    def invoice(self, total="100.00", **fields):
        return make_invoice(
            self.merchant, items=[("Service", "1", total)] if total else [], issue=True, **fields
        )

    def start(self, invoice, **kwargs):
        return payment_start(invoice=invoice, asset=self.usdc, **kwargs)

    def send(self, payment, units: int) -> str:
        return self.tester.pay(payment.deposit_address.address, units)

    def watch(self):
        report = scan_network(network=self.network, chain=self.tester.chain())
        settle_report(report)
        return report

    def confirm(self):
        self.tester.mine(self.network.confirmations)
        return self.watch()


@pytest.fixture
def shop(acme, tester, dev_network):
    return Shop(acme, tester, dev_network)


@pytest.fixture
def status_log(db):
    """Log every payment and invoice status change by database trigger (see statuslog.py)."""
    statuslog.install()
    yield statuslog
    statuslog.uninstall()
