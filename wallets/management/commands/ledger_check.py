"""Check the books three ways: cached balances against their entries, holdings against the
confirmed transfers they came from, and the recorded transfers against the chain itself."""

from collections import defaultdict
from decimal import Decimal

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Q

from merchants.fields import amount_storage_faults, exact_totals
from wallets.chain import Chain, ChainError
from wallets.ledger import OUTGOING_KINDS, balances_drift, balances_rebuild
from wallets.models import (
    BALANCE_TX_PREFIX,
    LedgerEntry,
    Network,
    Transfer,
    TransferStatus,
)

# Transfers re-read from the node per batch of requests.
CHAIN_BATCH = 200


class Command(BaseCommand):
    help = (
        "Recompute balances from ledger entries and report drift (--fix rewrites the cache); "
        "compare holdings with confirmed transfers, and confirmed transfers with the chain."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--fix", action="store_true", help="Rewrite drifted cached balances.")
        parser.add_argument(
            "--no-chain", action="store_true", help="Skip re-reading transfers from the nodes."
        )
        parser.add_argument(
            "--balances-only", action="store_true", help="Only cached balances against entries."
        )

    def handle(
        self,
        *args,
        fix: bool = False,
        no_chain: bool = False,
        balances_only: bool = False,
        **options,
    ) -> None:
        # An amount that is not stored exactly cannot be trusted by any sum below: say so
        # first, and never "fix" balances from it.
        faults = amount_storage_faults()
        for fault in faults:
            self.stdout.write(f"inexact amount: {fault}")
        if faults:
            raise CommandError(f"{len(faults)} amount(s) are not stored exactly.")
        problems = []
        drift = balances_drift()
        for item in drift:
            self.stdout.write(
                f"{item.account} {item.currency}: "
                f"cached {item.cached}, entries say {item.from_entries}"
            )
        if drift and fix:
            self.stdout.write(self.style.WARNING(f"Rewrote {balances_rebuild()} balance(s)."))
        elif drift:
            problems.append(f"{len(drift)} balance(s) drifted; run with --fix to rewrite them")
        else:
            self.stdout.write(self.style.SUCCESS("Balances match their entries."))
        if not balances_only:
            if count := self._holdings():
                problems.append(f"{count} holding(s) differ from the confirmed transfers")
            if not no_chain and (count := self._chain()):
                problems.append(f"{count} transfer(s) differ from the chain or could not be read")
        if problems:
            raise CommandError("; ".join(problems) + ".")

    def _holdings(self) -> int:
        """Holdings per network and asset equal the confirmed transfers settled into them."""
        settled: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        # Exact sums (merchants.fields): SQLite's SUM() would add these in floats.
        rows = exact_totals(
            # Held as awaiting valuation: confirmed and shown, not posted until it has a price.
            Transfer.objects.filter(
                status=TransferStatus.CONFIRMED,
                handled_status=TransferStatus.CONFIRMED,
                awaiting_valuation_since__isnull=True,
            ),
            ["network__slug", "asset__symbol", "asset__decimals"],
            "amount",
        )
        for row in rows:
            key = (row["network__slug"], row["asset__symbol"])
            settled[key] = Decimal(int(row["total"])).scaleb(-row["asset__decimals"])
        held: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        # Money paid out of holdings (refunds) left by transfers this app does not record
        # as deposits; those postings are checked by whoever verified the payout on chain.
        # A network's holdings are at deposit addresses ("holdings:<network>") or, claimed
        # from forwarders, at merchants' accounts ("claimed:<network>:<merchant>").
        entries = exact_totals(
            LedgerEntry.objects.filter(
                Q(account__code__startswith="holdings:") | Q(account__code__startswith="claimed:")
            ).exclude(transaction__kind__in=OUTGOING_KINDS),
            ["account__code", "currency"],
            "amount",
        )
        for row in entries:
            # Holdings are debit-normal: stored negative.
            network = row["account__code"].split(":")[1]
            held[(network, row["currency"])] -= row["total"]
        problems = 0
        for key in sorted(set(settled) | set(held)):
            if settled[key] != held[key]:
                problems += 1
                self.stdout.write(
                    f"holdings {key[0]} {key[1]}: ledger {held[key]}, confirmed transfers "
                    f"{settled[key]}"
                )
        if not problems:
            self.stdout.write(self.style.SUCCESS("Holdings match the confirmed transfers."))
        return problems

    def _chain(self) -> int:
        """Every confirmed transfer's amount, read again from its network's node, to the
        base unit. Transfers recorded from a balance alone have no transaction to re-read."""
        problems = 0
        for network in Network.objects.filter(enabled=True):
            confirmed = Transfer.objects.filter(network=network, status=TransferStatus.CONFIRMED)
            if not confirmed.exists() or not network.effective_rpc_url:
                continue
            checkable = confirmed.exclude(tx_hash__startswith=BALANCE_TX_PREFIX)
            unverifiable = confirmed.count() - checkable.count()
            try:
                chain = Chain(network.effective_rpc_url)
                differences, unread, checked = self._compare(chain, checkable)
            except ChainError as error:
                problems += 1
                self.stdout.write(f"{network.slug}: the node could not be read: {error}")
                continue
            for transfer, on_chain in differences:
                self.stdout.write(
                    f"{network.slug} transfer {transfer.pk} ({transfer.tx_hash}:"
                    f"{transfer.log_index}): recorded {transfer.amount}, chain says {on_chain}"
                )
            problems += len(differences)
            note = f"{checked} transfer(s) match the chain"
            if unread:
                note += f"; {unread} could not be re-read (no receipt or no tracing)"
            if unverifiable:
                note += f"; {unverifiable} recorded from balances alone"
            self.stdout.write(f"{network.slug}: {note}.")
        return problems

    def _compare(self, chain: Chain, transfers) -> tuple[list, int, int]:
        differences = []
        unread = checked = 0
        batch: list[Transfer] = []

        def flush() -> None:
            nonlocal unread, checked
            amounts = chain.recorded_amounts((t.tx_hash, t.log_index) for t in batch)
            for transfer in batch:
                on_chain = amounts[(transfer.tx_hash, transfer.log_index)]
                if on_chain is None:
                    unread += 1
                elif Decimal(on_chain) != transfer.amount:
                    differences.append((transfer, on_chain))
                else:
                    checked += 1
            batch.clear()

        for transfer in transfers.order_by("pk").iterator():
            batch.append(transfer)
            if len(batch) >= CHAIN_BATCH:
                flush()
        if batch:
            flush()
        return differences, unread, checked
