"""/metrics: for the operator's token only; the numbers after a real payment on chain."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.checkout.conftest import Shop
from tests.ops.conftest import rpc

USDC = 10**6
TOKEN = "scrape-token-for-tests"


@pytest.fixture
def scrape(client, settings):
    settings.METRICS_TOKEN = TOKEN

    def scrape():
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain")
        samples = {}
        for family in text_string_to_metric_families(response.content.decode()):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    return scrape


def test_metrics_are_off_without_a_token(client, settings):
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404


def test_metrics_refuse_a_missing_or_wrong_token(client, settings):
    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer guess")
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"] == 'Bearer realm="metrics"'


def test_metrics_after_a_payment(acme, tester, dev_network, anvil_url, scrape, client, alice):
    shop = Shop(acme, tester, dev_network)
    paid = shop.start(shop.invoice("25.00"))
    shop.send(paid, 25 * USDC)
    shop.watch()
    shop.confirm()
    paid.refresh_from_db()
    assert paid.status == "paid"
    shop.start(shop.invoice("10.00"))  # a second one, still awaiting
    # The node /metrics asks is a real anvil (same chain id); the payment ran on eth-tester.
    dev_network.rpc_url = anvil_url
    dev_network.save()
    cursor = dev_network.cursor
    rpc(anvil_url, "anvil_mine", hex(7))
    head = int(rpc(anvil_url, "eth_blockNumber"), 16)
    cursor.next_block = head - 2
    cursor.save()
    client.get("/login/")

    samples = scrape()
    assert samples[("stablebill_payments", (("status", "paid"),))] == 1
    assert samples[("stablebill_payments", (("status", "awaiting"),))] == 1
    assert samples[("stablebill_payments", (("status", "expired"),))] == 0
    assert samples[("stablebill_node_up", (("network", "anvil"),))] == 1
    assert samples[("stablebill_scanner_lag_blocks", (("network", "anvil"),))] == 3
    last_round = samples[
        ("stablebill_scanner_last_round_timestamp_seconds", (("network", "anvil"),))
    ]
    cursor.refresh_from_db()
    assert last_round == pytest.approx(cursor.updated_at.timestamp())
    assert ("stablebill_callbacks", (("status", "pending"),)) in samples
    assert ("stablebill_callbacks", (("status", "failed"),)) in samples
    assert samples[("stablebill_emails", (("status", "failed"),))] == 0
    for section in ("payments", "callbacks", "emails", "networks"):
        assert samples[(f"stablebill_metrics_{section}_error", ())] == 0
    login = (("method", "GET"), ("route", "login/"), ("status", "200"))
    assert samples[("stablebill_http_request_duration_seconds_count", login)] >= 1


def test_callbacks_and_emails_by_status(acme, scrape):
    from invoices.models import CallbackDelivery, EmailDelivery
    from tests.factories import make_invoice

    invoice = make_invoice(acme, items=[("Service", "1", "5.00")], issue=True)
    before = scrape()
    for status in ("pending", "pending", "failed"):
        CallbackDelivery.objects.create(
            merchant=acme,
            invoice=invoice,
            url="https://example.org/hook",
            event_type="invoice.paid",
            message_id=f"msg_{status}_{CallbackDelivery.objects.count()}",
            payload="{}",
            status=status,
        )
    EmailDelivery.objects.create(invoice=invoice, kind="invoice", key="k-failed", status="failed")
    after = scrape()
    pending, failed = (
        ("stablebill_callbacks", (("status", "pending"),)),
        (
            "stablebill_callbacks",
            (("status", "failed"),),
        ),
    )
    assert after[pending] - before[pending] == 2
    assert after[failed] - before[failed] == 1
    email_failed = ("stablebill_emails", (("status", "failed"),))
    assert after[email_failed] - before[email_failed] == 1


def test_a_dead_node_is_a_zero_not_a_failed_scrape(dev_network, scrape):
    from tests.ops.conftest import closed_port

    dev_network.rpc_url = f"http://127.0.0.1:{closed_port()}"
    dev_network.save()
    samples = scrape()
    assert samples[("stablebill_node_up", (("network", "anvil"),))] == 0
    assert ("stablebill_scanner_lag_blocks", (("network", "anvil"),)) not in samples
    assert samples[("stablebill_metrics_networks_error", ())] == 0
