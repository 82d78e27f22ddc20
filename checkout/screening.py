"""Compliance screening of the addresses money comes from and goes back to.

A source answers for one address on one network: a hit, clear, or nothing to ask. Two are
built in: the token contracts' own freeze lists (USDT's `isBlackListed(address)`, USDC's
`isBlacklisted(address)`, asked by `eth_call`; our demo tokens answer both) and the operator's
local list of sanctioned addresses (`manage.py sanctions_import`). More sources implement the
same `ask`.

Every answer is recorded as a `Screening` row naming its source. A deposit is screened once it
is confirmed and before settlement credits it: a hit holds its payment (settlement books the
money to the merchant's held account), the merchant and the admins are told, an admin may
release it, and when the payment's timer ends the invoice fails "compliance" and the payer is
asked where to send the money back. A node that cannot answer delays the deposit (settlement
retries it next round); it never lets it through unscreened.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from django.conf import settings
from django.db import transaction

from checkout.models import SanctionedAddress, Screening, ScreeningResult
from wallets.chain import Chain
from wallets.models import Network, Transfer

ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}(?![0-9a-fA-F])")


@dataclass(frozen=True)
class Answer:
    source: str
    result: str
    detail: str = ""

    @property
    def hit(self) -> bool:
        return self.result == ScreeningResult.HIT


class Source(Protocol):
    name: str

    def ask(self, *, network: Network, address: str) -> Answer: ...


class FreezeListSource:
    """The token contracts' own freeze lists, for every enabled token of the network: an
    address frozen by one stablecoin is screened out for all of them."""

    name = "token freeze list"

    def ask(self, *, network: Network, address: str) -> Answer:
        tokens = list(
            network.assets.filter(enabled=True)
            .exclude(contract_address="")
            .values_list("symbol", "contract_address")
        )
        if not settings.SCREENING_FREEZE_LISTS or not tokens:
            return Answer(self.name, ScreeningResult.NO_LIST, "freeze lists not asked")
        chain = Chain(network.effective_rpc_url, timeout=settings.CHAIN_RPC_TIMEOUT_SECONDS)
        listed = []
        for symbol, contract in tokens:
            frozen = chain.freeze_listed(contract, address)  # ChainError: settlement retries
            if frozen is not None:
                listed.append(symbol)
                if frozen:
                    return Answer(
                        self.name, ScreeningResult.HIT, f"frozen by {symbol} ({contract})"
                    )
        if not listed:
            return Answer(self.name, ScreeningResult.NO_LIST, "no token has a freeze list")
        return Answer(self.name, ScreeningResult.CLEAR, "not frozen by " + ", ".join(listed))


class LocalListSource:
    name = "local sanctions list"

    def ask(self, *, network: Network, address: str) -> Answer:
        row = SanctionedAddress.objects.filter(address=address.lower()).first()
        if row is None:
            return Answer(self.name, ScreeningResult.CLEAR)
        return Answer(self.name, ScreeningResult.HIT, f"on the {row.list_name} list")


def sources() -> list[Source]:
    return [FreezeListSource(), LocalListSource()]


def screen_deposit(transfer: Transfer) -> bool:
    """Screen a confirmed deposit's sender with every source not asked yet; True on a hit.

    Called outside any transaction (it may wait on a node). Decisions already recorded for
    the transfer are reused, so a retried round asks nothing twice."""
    asked = set(Screening.objects.filter(transfer=transfer).values_list("source", flat=True))
    sender = (transfer.from_address or "").lower()
    answers = []
    for source in sources():
        if source.name in asked:
            continue
        if not sender:
            answers.append(Answer(source.name, ScreeningResult.NO_LIST, "sender unknown"))
        else:
            answers.append(source.ask(network=transfer.network, address=sender))
    if answers:
        with transaction.atomic():
            Screening.objects.bulk_create(
                [
                    Screening(
                        address=sender,
                        source=a.source,
                        result=a.result,
                        detail=a.detail[:300],
                        network_id=transfer.network_id,
                        transfer=transfer,
                    )
                    for a in answers
                ],
                ignore_conflicts=True,  # a twin round recorded the same decision
            )
    return Screening.objects.filter(transfer=transfer, result=ScreeningResult.HIT).exists()


def deposit_hit(transfer: Transfer) -> Screening | None:
    return Screening.objects.filter(transfer=transfer, result=ScreeningResult.HIT).first()


def screen_refund_address(*, network: Network, address: str) -> Answer:
    """The local list only: a payer's page never waits on a node."""
    return LocalListSource().ask(network=network, address=address)


# The local list -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Imported:
    added: int
    already: int
    removed: int
    lines_without_address: int


def addresses_in(lines: Iterable[str]) -> tuple[list[str], int]:
    """Every 0x address in the lines, lower-case and once: one address per line, or the usual
    CSV export (a header and an address column among others). Lines without one (headers,
    comments, other chains' addresses) are counted, not guessed at."""
    found: dict[str, None] = {}
    without = 0
    for line in lines:
        matches = ADDRESS.findall(line)
        if not matches:
            if line.strip():
                without += 1
            continue
        for address in matches:
            found[address.lower()] = None
    return list(found), without


def sanctions_import(*, path: Path, list_name: str = "local", replace: bool = False) -> Imported:
    """Load a file into the local list. `replace`: addresses of the same list that the file
    no longer holds are removed (a new edition of the list)."""
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        addresses, without = addresses_in(handle)
    with transaction.atomic():
        existing = set(
            SanctionedAddress.objects.filter(address__in=addresses).values_list(
                "address", flat=True
            )
        )
        SanctionedAddress.objects.bulk_create(
            [
                SanctionedAddress(address=a, list_name=list_name)
                for a in addresses
                if a not in existing
            ],
            ignore_conflicts=True,
            batch_size=1000,
        )
        removed = 0
        if replace:
            removed, _ = (
                SanctionedAddress.objects.filter(list_name=list_name)
                .exclude(address__in=addresses)
                .delete()
            )
    return Imported(len(addresses) - len(existing), len(existing), removed, without)
