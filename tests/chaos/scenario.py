"""The chaos scenario, run in its own process by tests/chaos/test_chaos.py:

    DATABASE_URL=... python -m tests.chaos.scenario <rpc_url> <kills> <seconds>

Real payers pay six invoices on anvil (ERC-20 exact, split and overpaid; ETH above 10 ETH,
ETH through a forwarding contract, ETH split between a plain and a forwarded transaction)
while the real watch task runs in forked worker processes behind a fault-injecting proxy
and is SIGKILLed mid-round, again and again. Then the faults stop, the watcher catches up,
callbacks go out to a local receiver, and the last line printed is a JSON summary of what
the books, the chain and the receiver say, for the test to judge.

It runs in its own process because forked workers need a database they can all open (the
test database of an SQLite run lives in the test process's memory).
"""

import json
import os
import random
import signal
import sys
import time
import traceback
from collections import Counter, defaultdict
from io import StringIO

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.core.management import CommandError, call_command  # noqa: E402
from django.db import connections  # noqa: E402
from django.db.models import F  # noqa: E402
from django.utils import timezone  # noqa: E402
from web3 import Web3  # noqa: E402

from checkout.models import Payment  # noqa: E402
from checkout.services import payment_start  # noqa: E402
from checkout.tasks import native_watch_addresses, watch_network  # noqa: E402
from invoices.callbacks import callbacks_deliver_due  # noqa: E402
from invoices.models import CallbackDelivery, Invoice  # noqa: E402
from merchants.fields import exact_sum, exact_totals  # noqa: E402
from merchants.integrations import webhook_endpoint_create  # noqa: E402
from tests.factories import MerchantFactory, make_invoice  # noqa: E402
from tests.invoices.test_callbacks import Receiver  # noqa: E402
from tests.rpc_proxy import FaultProxy  # noqa: E402
from tests.wallets.test_addresses import ABANDON_XPUB  # noqa: E402
from tests.wallets.test_scanner_faults import EthAnvil  # noqa: E402
from wallets.addresses import wallet_set  # noqa: E402
from wallets.models import (  # noqa: E402
    Asset,
    LedgerEntry,
    LedgerTransaction,
    Network,
    Transfer,
    TransferStatus,
)
from wallets.scanner import cursor_reset  # noqa: E402


def _fork_round(network_id: int) -> int:
    connections.close_all()  # the child opens its own connection
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            watch_network(network_id)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    return pid


def main(rpc_url: str, kills_wanted: int, seconds: float) -> dict:
    call_command("migrate", verbosity=0)
    rng = random.Random(20261201)
    anvil = EthAnvil(rpc_url)
    proxy = FaultProxy(
        rpc_url,
        lag=0.15,
        drop=0.03,
        delay=0.02,
        bad_gateway=0.05,
        delay_seconds=1.0,  # the watcher's client times out after 0.4 s (CHAIN_RPC_TIMEOUT_SECONDS)
        max_log_range=4,
        seed=11,
    )
    receiver = Receiver()
    network = Network.objects.get(slug="anvil")
    network.rpc_url, network.enabled, network.confirmations = proxy.url, True, 2
    network.save()
    for symbol in ("USDT", "USDC"):
        network.assets.filter(symbol=symbol).update(contract_address=anvil.deployed[symbol].lower())
    cursor_reset(network=network, next_block=0)
    usdc = Asset.objects.get(network=network, symbol="USDC")
    eth = Asset.objects.get(network=network, symbol="ETH")
    merchant = MerchantFactory(name="Chaos Ltd")
    wallet_set(merchant=merchant, xpub=ABANDON_XPUB)
    webhook_endpoint_create(merchant=merchant, url=receiver.url)

    def open_payment(total: str, asset: Asset) -> Payment:
        invoice = make_invoice(merchant, items=[("Service", "1", total)], issue=True)
        return payment_start(invoice=invoice, asset=asset)

    cases = {
        "usdc_exact": open_payment("100.00", usdc),
        "usdc_split": open_payment("100.00", usdc),
        "usdc_over": open_payment("100.00", usdc),
        "eth_big": open_payment("40000.00", eth),  # 13.33 ETH at the static rate
        "eth_forwarded": open_payment("300.00", eth),
        "eth_split": open_payment("600.00", eth),
    }
    sent: dict[str, int] = defaultdict(int)

    def usdc_pay(case: str, units: int) -> None:
        anvil.pay(cases[case].deposit_address.address, units)
        sent[case] += units

    def eth_pay(case: str, wei: int, *, forward: bool = False, split: int | None = None) -> None:
        address = cases[case].deposit_address.address
        if forward or split is not None:
            _tx, status = anvil.forward(address, wei, split=split)
        else:
            _tx, status = anvil.send_eth(address, wei)
        assert status == 1
        sent[case] += wei

    def due(case: str) -> int:
        return int(cases[case].amount_due)

    # Who pays when, by the count of kills so far: some money lands mid-chaos.
    schedule = {
        0: [
            lambda: usdc_pay("usdc_exact", due("usdc_exact")),
            lambda: usdc_pay("usdc_split", due("usdc_split") * 2 // 5),
            lambda: eth_pay("eth_big", due("eth_big")),
        ],
        max(1, kills_wanted // 4): [
            lambda: usdc_pay("usdc_over", due("usdc_over") + 20 * 10**6),
            lambda: eth_pay("eth_forwarded", due("eth_forwarded"), forward=True),
        ],
        max(2, kills_wanted // 2): [
            lambda: usdc_pay("usdc_split", due("usdc_split") - due("usdc_split") * 2 // 5),
            lambda: eth_pay("eth_split", due("eth_split") // 2),
        ],
        max(3, 3 * kills_wanted // 4): [
            lambda: eth_pay(
                "eth_split",
                due("eth_split") - due("eth_split") // 2,
                split=(due("eth_split") - due("eth_split") // 2) // 3,
            ),
        ],
    }

    kills = completed = failed = 0
    started = time.monotonic()
    while (kills < kills_wanted or schedule) and time.monotonic() - started < seconds:
        for action in schedule.pop(kills, []) if kills in schedule else []:
            action()
        # A dead worker's lease runs out by itself; wait for it rather than fork in vain.
        lease = Network.objects.filter(pk=network.pk).values_list("round_lease_until", flat=True)[0]
        if lease is not None and lease > timezone.now():
            time.sleep(max(0.0, (lease - timezone.now()).total_seconds()) + 0.05)
        pid = _fork_round(network.pk)
        # Up to 2.5 s: some rounds finish (progress between kills), most are cut short.
        deadline = time.monotonic() + rng.uniform(0.05, 2.5)
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.01)
        else:
            # Mid-round: the child holds the network's lease (it is scanning or writing).
            mid_round = Network.objects.filter(
                pk=network.pk, round_lease_until__gt=timezone.now()
            ).exists()
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            kills += mid_round
            status = None
        if status is not None:
            if os.waitstatus_to_exitcode(status) == 0:
                completed += 1
            else:
                failed += 1
        if rng.random() < 0.5:
            anvil.mine(1)

    chaos_seconds = time.monotonic() - started
    faults = dict(proxy.faults)
    # The node behaves again: the watcher catches up in ordinary rounds.
    proxy.enabled = False
    Network.objects.filter(pk=network.pk).update(round_lease_until=None, round_token="")
    for _ in range(40):
        anvil.mine(1)
        watch_network(network.pk)
        unsettled = Transfer.objects.exclude(handled_status=F("status")).exists()
        confirming = Transfer.objects.filter(status=TransferStatus.EXECUTED).exists()
        if not unsettled and not confirming:
            break
    for _ in range(20):
        if (
            callbacks_deliver_due() == 0
            and not CallbackDelivery.objects.filter(delivered_at__isnull=True).exists()
        ):
            break
        time.sleep(0.1)

    return _summary(
        anvil=anvil,
        cases=cases,
        sent=sent,
        network=network,
        receiver=receiver,
        kills=kills,
        completed=completed,
        failed=failed,
        faults=faults,
        chaos_seconds=chaos_seconds,
        watch=native_watch_addresses(network=network),
    )


def _summary(*, anvil, cases, sent, network, receiver, kills, completed, failed, faults, **extra):
    usdc = anvil.usdc
    per_case = {}
    for case, payment in cases.items():
        payment.refresh_from_db()
        address = payment.deposit_address.address
        transfers = Transfer.objects.filter(deposit_address=payment.deposit_address)
        confirmed = transfers.filter(status=TransferStatus.CONFIRMED)
        if payment.asset.is_native:
            on_chain = anvil.w3.eth.get_balance(Web3.to_checksum_address(address))
        else:
            on_chain = usdc.functions.balanceOf(Web3.to_checksum_address(address)).call()
        per_case[case] = {
            "sent": str(sent[case]),
            "on_chain": str(on_chain),
            "recorded": str(int(exact_sum(confirmed, "amount"))),
            "confirmed_transfers": confirmed.count(),
            "live_transfers": transfers.exclude(status=TransferStatus.ORPHANED).count(),
            "payment": payment.status,
            "invoice": Invoice.objects.get(pk=payment.invoice_id).status,
            "deposit_postings": LedgerTransaction.objects.filter(
                idempotency_key__in=[
                    f"deposit:{pk}" for pk in confirmed.values_list("pk", flat=True)
                ]
            ).count(),
        }
    holdings = {
        row["currency"]: str(-row["total"])
        for row in exact_totals(
            LedgerEntry.objects.filter(account__code=f"holdings:{network.slug}"),
            ["currency"],
            "amount",
        )
    }
    ids = [r["headers"].get("webhook-id", "") for r in receiver.requests]
    deliveries = CallbackDelivery.objects.all()
    expected_ids = sorted(deliveries.values_list("message_id", flat=True))
    out = StringIO()
    try:
        call_command("ledger_check", stdout=out)
        ledger_check = "ok"
    except CommandError as error:
        ledger_check = f"{error}\n{out.getvalue()}"
    return {
        "cases": per_case,
        "holdings": holdings,
        "kills": kills,
        "completed_rounds": completed,
        "failed_rounds": failed,
        "faults": faults,
        "callbacks": {
            "deliveries": deliveries.count(),
            "events_with_deliveries": deliveries.values("event_id").distinct().count(),
            "confirmed_events": deliveries.filter(event_type="invoice.deposit_confirmed").count(),
            "undelivered": deliveries.filter(delivered_at__isnull=True).count(),
            "received": len(ids),
            "distinct_ids": len(set(ids)),
            "repeated_ids": sorted(i for i, n in Counter(ids).items() if n > 1),
            "missing_ids": sorted(set(expected_ids) - set(ids)),
        },
        "ledger_check": ledger_check,
        "transfers": [
            [t.tx_hash, t.log_index, str(t.amount), t.status]
            for t in Transfer.objects.order_by("pk")
        ],
        **{k: (round(v, 1) if isinstance(v, float) else v) for k, v in extra.items()},
    }


if __name__ == "__main__":
    summary = main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
    print(json.dumps(summary, default=str))
    sys.stdout.flush()
    os._exit(0)  # the proxy's and receiver's threads need no orderly goodbye
