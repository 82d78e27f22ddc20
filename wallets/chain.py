"""The one module that talks to EVM nodes (and the only one importing web3).

Everything leaves here as plain Python values: lower-case 0x strings and ints. Callers never
see web3 types or exceptions, only `ChainError` and its two kinds.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.exceptions import BlockNotFound, ProviderConnectionError, Web3RPCError
from web3.providers.base import BaseProvider

logger = logging.getLogger(__name__)

# keccak("Transfer(address,address,uint256)"), as a 0x hex string: HexBytes topics silently
# match nothing on some providers.
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
ERC20_ABI = [
    {
        "name": "balanceOf",
        "type": "function",
        "stateMutability": "view",
        "inputs": [{"name": "owner", "type": "address"}],
        "outputs": [{"name": "", "type": "uint256"}],
    },
    {
        "name": "transfer",
        "type": "function",
        "stateMutability": "nonpayable",
        "inputs": [{"name": "to", "type": "address"}, {"name": "amount", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}],
    },
]
# Phrases nodes and hosted providers use when a getLogs range or result is too large.
RANGE_REFUSALS = (
    "more than",
    "too many",
    "range",
    "limit exceeded",
    "response size",
    "query timeout",
    "block range",
    "exceed",
    "10000 results",
)

T = TypeVar("T")


class ChainError(Exception):
    """A node could not answer."""


class ChainUnavailable(ChainError):
    """The node is unreachable or keeps failing; try again later."""


class RangeRefused(ChainError):
    """The node refuses a getLogs range this wide (result or range cap)."""


@dataclass(frozen=True)
class SeenTransfer:
    tx_hash: str
    log_index: int  # -1 for a native-coin transaction
    block_number: int
    block_hash: str
    token: str  # contract address, "" for the native coin
    sender: str
    recipient: str
    amount: int


def _hex(value: Any) -> str:
    text = value.hex() if hasattr(value, "hex") else str(value)
    text = text.lower()
    return text if text.startswith("0x") else "0x" + text


def _topic_address(topic: Any) -> str:
    return "0x" + _hex(topic)[-40:]


class Chain:
    """A node, with retries and backoff around every call and a count of the calls made."""

    def __init__(
        self,
        rpc_url: str = "",
        *,
        provider: BaseProvider | None = None,
        timeout: float = 10,
        attempts: int = 4,
        backoff: float = 0.5,
    ) -> None:
        if provider is None:
            if not rpc_url:
                raise ChainUnavailable("No RPC URL is configured for this network.")
            # Our own retry below; the provider's would multiply the attempts.
            provider = HTTPProvider(
                rpc_url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None
            )
        self.w3 = Web3(provider)
        self.attempts = attempts
        self.backoff = backoff
        self.calls = 0

    @classmethod
    def in_process(cls) -> "Chain":
        """A fresh in-memory chain (eth-tester), for unit tests."""
        return cls(provider=EthereumTesterProvider())

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            self.calls += 1
            try:
                return fn()
            except Web3RPCError as error:
                message = str(getattr(error, "message", error)).lower()
                if any(phrase in message for phrase in RANGE_REFUSALS):
                    raise RangeRefused(message) from None
                failure: Exception = error
            except (requests.RequestException, ProviderConnectionError, OSError) as error:
                failure = error
            logger.warning("%s failed (attempt %s/%s): %s", what, attempt, self.attempts, failure)
            if attempt < self.attempts:
                time.sleep(delay)
                delay *= 2
        raise ChainUnavailable(f"{what} failed after {self.attempts} attempts: {failure}")

    # Reads ---------------------------------------------------------------------------------

    def chain_id(self) -> int:
        return self._call("eth_chainId", lambda: int(self.w3.eth.chain_id))

    def head(self) -> int:
        return self._call("eth_blockNumber", lambda: int(self.w3.eth.block_number))

    def block_hash(self, number: int) -> str | None:
        """The hash of the canonical block at `number`, or None if there is none (yet)."""

        def fetch() -> str | None:
            try:
                return _hex(self.w3.eth.get_block(number)["hash"])
            except BlockNotFound:
                return None

        return self._call("eth_getBlockByNumber", fetch)

    def has_code(self, address: str) -> bool:
        code = self._call(
            "eth_getCode", lambda: self.w3.eth.get_code(Web3.to_checksum_address(address))
        )
        return len(code) > 0

    def token_balance(self, token: str, owner: str) -> int:
        contract = self.w3.eth.contract(address=Web3.to_checksum_address(token), abi=ERC20_ABI)
        return self._call(
            "balanceOf",
            lambda: int(contract.functions.balanceOf(Web3.to_checksum_address(owner)).call()),
        )

    def token_transfers(
        self, from_block: int, to_block: int, tokens: list[str]
    ) -> list[SeenTransfer]:
        """ERC-20 Transfer logs of `tokens` in the range, halving the range when refused."""
        if not tokens or from_block > to_block:
            return []
        query = {
            "fromBlock": from_block,
            "toBlock": to_block,
            "address": [Web3.to_checksum_address(t) for t in tokens],
            "topics": [TRANSFER_TOPIC],
        }
        try:
            logs = self._call("eth_getLogs", lambda: self.w3.eth.get_logs(query))  # type: ignore[arg-type]
        except RangeRefused:
            if from_block == to_block:
                raise
            middle = (from_block + to_block) // 2
            logger.info("getLogs %s-%s refused; splitting at %s", from_block, to_block, middle)
            return self.token_transfers(from_block, middle, tokens) + self.token_transfers(
                middle + 1, to_block, tokens
            )
        transfers = []
        for log in logs:
            parsed = _parse_transfer_log(log)
            if parsed is not None:
                transfers.append(parsed)
        return transfers

    def native_transfers(self, from_block: int, to_block: int) -> list[SeenTransfer]:
        """Plain value transfers in the range (one block fetch per block)."""
        found = []
        for number in range(from_block, to_block + 1):
            block: Any = self._call(
                "eth_getBlockByNumber",
                lambda n=number: self.w3.eth.get_block(n, full_transactions=True),  # type: ignore[misc]
            )
            block_hash = _hex(block["hash"])
            tx: Any
            for tx in block["transactions"]:
                value = int(tx["value"])
                if value <= 0 or not tx.get("to"):
                    continue
                found.append(
                    SeenTransfer(
                        tx_hash=_hex(tx["hash"]),
                        log_index=-1,
                        block_number=number,
                        block_hash=block_hash,
                        token="",
                        sender=str(tx["from"]).lower(),
                        recipient=str(tx["to"]).lower(),
                        amount=value,
                    )
                )
        return found


class Signer:
    """Signs and sends transactions with a local key: the dev chain's deploy script and tests
    (the demo payer). Production code never holds a key; nothing in the app signs."""

    def __init__(self, chain: Chain, private_key: str) -> None:
        self.chain = chain
        self.account = chain.w3.eth.account.from_key(private_key)
        self.address: str = self.account.address

    def next_nonce(self) -> int:
        w3 = self.chain.w3
        return self.chain._call(
            "eth_getTransactionCount",
            lambda: int(w3.eth.get_transaction_count(self.account.address, "pending")),
        )

    def deploy(self, abi: list, bytecode: str, args: list, *, nonce: int) -> str:
        """Send a contract creation; returns its transaction hash."""
        factory = self.chain.w3.eth.contract(abi=abi, bytecode=bytecode)
        params: Any = {"from": self.address, "nonce": nonce}
        tx = factory.constructor(*args).build_transaction(params)
        return self._send(dict(tx))

    def call(self, contract: str, abi: list, function: str, args: list, *, nonce: int) -> str:
        """Send a state-changing call to `contract`; returns its transaction hash."""
        target = self.chain.w3.eth.contract(address=Web3.to_checksum_address(contract), abi=abi)
        converted = [Web3.to_checksum_address(a) if _is_address(a) else a for a in args]
        params: Any = {"from": self.address, "nonce": nonce}
        tx = target.functions[function](*converted).build_transaction(params)
        return self._send(dict(tx))

    def _send(self, tx: dict[str, Any]) -> str:
        signed = self.account.sign_transaction(tx)
        return self.chain._call(
            "eth_sendRawTransaction",
            lambda: _hex(self.chain.w3.eth.send_raw_transaction(signed.raw_transaction)),
        )

    def wait(self, tx_hash: str, *, timeout: float = 60) -> dict[str, Any]:
        """The mined receipt as plain values; raises ChainError if the transaction reverted."""
        receipt = self.chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)  # type: ignore[arg-type]
        if receipt["status"] != 1:
            raise ChainError(f"Transaction {tx_hash} reverted.")
        address = receipt.get("contractAddress")
        return {
            "block_number": int(receipt["blockNumber"]),
            "contract_address": str(address) if address else "",
        }


def _is_address(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("0x") and len(value) == 42


def _parse_transfer_log(log: Any) -> SeenTransfer | None:
    """ERC-20 Transfer: 3 topics and a 32-byte amount. Anything else (ERC-721 with 4 topics,
    non-standard tokens) is skipped and logged, never guessed at."""
    topics = log["topics"]
    data = log["data"]
    raw = bytes(data) if not isinstance(data, str) else bytes.fromhex(data.removeprefix("0x"))
    if len(topics) != 3 or len(raw) != 32:
        logger.warning(
            "Skipping non-standard Transfer log %s:%s (%s topics, %s data bytes)",
            _hex(log["transactionHash"]),
            log["logIndex"],
            len(topics),
            len(raw),
        )
        return None
    return SeenTransfer(
        tx_hash=_hex(log["transactionHash"]),
        log_index=int(log["logIndex"]),
        block_number=int(log["blockNumber"]),
        block_hash=_hex(log["blockHash"]),
        token=_hex(log["address"]),
        sender=_topic_address(topics[1]),
        recipient=_topic_address(topics[2]),
        amount=int.from_bytes(raw, "big"),
    )
