"""The one module that talks to EVM nodes (and the only one importing web3).

Everything leaves here as plain Python values: lower-case 0x strings and ints. Callers never
see web3 types or exceptions, only `ChainError` and its two kinds.
"""

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import requests
from eth_utils import keccak, to_checksum_address

if TYPE_CHECKING:
    from eth_account import Account
    from web3 import EthereumTesterProvider, HTTPProvider, Web3
    from web3.exceptions import (
        BlockNotFound,
        ContractLogicError,
        MethodUnavailable,
        ProviderConnectionError,
        Web3RPCError,
    )
    from web3.providers.base import BaseProvider


def _load_web3() -> None:
    """Bind web3's names above on first use (every Chain calls it before it talks to a node).

    Importing web3 takes some 1.3 s of CPU (it imports eth_account, whose keyfile module
    builds py_ecc's BLS tables), and this module is imported by the admin, the settlement and
    the scanner, so every process paid it at django.setup(): each manage.py command, gunicorn
    worker and Celery worker, whether or not it ever asked a node anything."""
    global Account, EthereumTesterProvider, HTTPProvider, Web3
    global BlockNotFound, ContractLogicError, MethodUnavailable, ProviderConnectionError
    global Web3RPCError
    if "Web3" in globals():
        return
    from eth_account import Account
    from web3 import EthereumTesterProvider, HTTPProvider, Web3
    from web3.exceptions import (
        BlockNotFound,
        ContractLogicError,
        MethodUnavailable,
        ProviderConnectionError,
        Web3RPCError,
    )


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
# DepositFactory's logs (contracts/DepositFactory.sol).
CLAIMED_TOPIC = "0x" + keccak(text="Claimed(address,uint256)").hex()
ETHER_CLAIMED_TOPIC = "0x" + keccak(text="EtherClaimed(address,address,uint256)").hex()

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

# Addresses per Multicall3 call: RPC calls grow with addresses/500, never per address.
BALANCES_PER_CALL = 500
# Requests per JSON-RPC batch (hosted providers cap batches; 100 passes everywhere we know),
# and fewer for full blocks, whose answers are large.
BATCH_SIZE = 100
FULL_BLOCK_BATCH = 20
# Frame types in a callTracer trace that move ETH to their `to` (DELEGATECALL and STATICCALL
# carry no value of their own).
VALUE_FRAMES = frozenset({"CALL", "CREATE", "CREATE2", "SELFDESTRUCT"})

# Function selectors (first 4 bytes of the keccak of the signature).
AGGREGATE3 = bytes(keccak(text="aggregate3((address,bool,bytes)[])")[:4])
GET_ETH_BALANCE = bytes(keccak(text="getEthBalance(address)")[:4])
ERC20_TRANSFER = bytes(keccak(text="transfer(address,uint256)")[:4])
# The stablecoins' own freeze lists: USDT spells it isBlackListed, USDC isBlacklisted.
FREEZE_LIST_CALLS = {
    "isBlackListed": bytes(keccak(text="isBlackListed(address)")[:4]),
    "isBlacklisted": bytes(keccak(text="isBlacklisted(address)")[:4]),
}
ZERO_ADDRESS = "0x" + "0" * 40

T = TypeVar("T")


class ChainError(Exception):
    """A node could not answer."""


class ChainUnavailable(ChainError):
    """The node is unreachable or keeps failing; try again later."""


class RangeRefused(ChainError):
    """The node refuses a getLogs range this wide (result or range cap)."""


class Unsupported(ChainError):
    """The node does not offer this method (tracing on most hosted nodes)."""


class _NodeError(Exception):
    """One answer in a batch carried a JSON-RPC error."""

    def __init__(self, error: Any) -> None:
        self.code = error.get("code") if isinstance(error, dict) else None
        self.message = str(error.get("message", error) if isinstance(error, dict) else error)
        super().__init__(self.message)


@dataclass(frozen=True)
class InternalTransfer:
    """ETH moved by a contract call inside a successful transaction (found by tracing)."""

    tx_hash: str
    ordinal: int  # its place among the value-moving frames of the transaction
    block_number: int
    block_hash: str
    sender: str
    recipient: str
    amount: int


@dataclass(frozen=True)
class MinedTransaction:
    """A transaction as its receipt tells it: where it was mined, whether it succeeded, and
    every value it moved at top level (ERC-20 Transfer logs, and the native value)."""

    tx_hash: str
    succeeded: bool
    block_number: int
    block_hash: str
    transfers: tuple["SeenTransfer", ...]


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


@dataclass(frozen=True)
class Move:
    """Value a claim moved: a token's Transfer log, or the factory's EtherClaimed (token "")."""

    token: str
    sender: str  # the forwarder (deposit address)
    recipient: str
    amount: int


@dataclass(frozen=True)
class ClaimReceipt:
    tx_hash: str
    succeeded: bool
    block_number: int
    block_hash: str
    sender: str
    gas_used: int
    fee_wei: int
    moves: tuple[Move, ...]
    reason: str = ""  # why it failed, as far as the node can tell


@dataclass(frozen=True)
class SeenClaim:
    """A Claimed log of a factory: some claim transaction was mined."""

    tx_hash: str
    block_number: int
    block_hash: str
    destination: str


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
        provider: "BaseProvider | None" = None,
        timeout: float = 10,
        attempts: int = 4,
        backoff: float = 0.5,
    ) -> None:
        _load_web3()
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
        # Called before every attempt: a watch round keeps its lease alive from here
        # (wallets.scanner.lease_kept); what it raises stops the call.
        self.before_call: Callable[[], None] | None = None

    @classmethod
    def in_process(cls) -> "Chain":
        """A fresh in-memory chain (eth-tester), for unit tests."""
        _load_web3()
        return cls(provider=EthereumTesterProvider())

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            if self.before_call is not None:
                self.before_call()
            self.calls += 1
            try:
                return fn()
            except (Web3RPCError, _NodeError) as error:
                message = str(getattr(error, "message", error)).lower()
                if any(phrase in message for phrase in RANGE_REFUSALS):
                    raise RangeRefused(message) from None
                if getattr(error, "code", None) == -32601 or (
                    "not found" in message and "method" in message
                ):
                    raise Unsupported(message) from None
                failure: Exception = error
            except (
                requests.RequestException,
                ProviderConnectionError,
                OSError,
                ValueError,  # an answer that is not JSON (a proxy's error page)
            ) as error:
                failure = error
            logger.warning("%s failed (attempt %s/%s): %s", what, attempt, self.attempts, failure)
            if attempt < self.attempts:
                time.sleep(delay)
                delay *= 2
        raise ChainUnavailable(f"{what} failed after {self.attempts} attempts: {failure}")

    def _batch(
        self, what: str, requests_: list[tuple[str, list[Any]]], size: int, *, required=False
    ) -> list[Any]:
        """Many requests in few HTTP round trips (JSON-RPC batches of `size`), answers in order.

        A batch that fails as a whole, or with an error in any answer, is retried as a whole.
        Providers without batch support (eth-tester) get the requests one by one. `required`:
        a null answer (a lagging backend that lacks the block or receipt yet) is retried too."""
        results: list[Any] = []
        for start in range(0, len(requests_), size):
            part = requests_[start : start + size]
            results += self._call(what, lambda part=part: self._send_batch(part, required))  # type: ignore[misc]
        return results

    def _send_batch(self, part: list[tuple[str, list[Any]]], required: bool = False) -> list[Any]:
        provider: Any = self.w3.provider
        if not isinstance(provider, HTTPProvider):
            self.calls += len(part) - 1  # one request each; _call counted one
            out = [self._single(method, params) for method, params in part]
        else:
            responses: Any = provider.make_batch_request(part)  # type: ignore[arg-type]
            if not isinstance(responses, list):
                raise _NodeError(responses.get("error", responses))
            if len(responses) != len(part):
                raise _NodeError(f"{len(responses)} answers to a batch of {len(part)}")
            out = []
            for response in responses:
                if response.get("error") is not None:
                    raise _NodeError(response["error"])
                out.append(response.get("result"))
        if required and any(answer is None for answer in out):
            raise _NodeError("the node has not got every requested item yet")
        return out

    def _single(self, method: str, params: list[Any]) -> Any:
        try:
            return self.w3.manager.request_blocking(method, params)  # type: ignore[arg-type]
        except (NotImplementedError, MethodUnavailable) as error:
            raise _NodeError({"code": -32601, "message": f"method not found: {error}"}) from None
        except BlockNotFound:
            return None

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

    def block_hashes(self, numbers: Iterable[int]) -> dict[int, str | None]:
        """Canonical hashes of many blocks in batched requests; None where the node has no
        block (yet): a lagging backend behind a load balancer answers null, not another hash."""
        wanted = sorted(set(numbers))
        answers = self._batch(
            "eth_getBlockByNumber",
            [("eth_getBlockByNumber", [hex(n), False]) for n in wanted],
            BATCH_SIZE,
        )
        return {n: (_hex(a["hash"]) if a else None) for n, a in zip(wanted, answers, strict=True)}

    def successful(self, tx_hashes: Iterable[str]) -> dict[str, bool | None]:
        """Whether each transaction succeeded (receipt status 1), batched; None while the
        node has no receipt for it (a lagging backend)."""
        wanted = sorted(set(tx_hashes))
        answers = self._batch(
            "eth_getTransactionReceipt",
            [("eth_getTransactionReceipt", [h]) for h in wanted],
            BATCH_SIZE,
            required=True,
        )
        return {
            h: (None if not a else _int(a["status"]) == 1)
            for h, a in zip(wanted, answers, strict=True)
        }

    def native_balances(
        self, multicall: str, addresses: list[str], *, block: int
    ) -> dict[str, int]:
        """ETH balances at `block`, 500 addresses per Multicall3 aggregate3 call."""
        target = to_checksum_address(multicall)
        balances: dict[str, int] = {}
        for start in range(0, len(addresses), BALANCES_PER_CALL):
            part = addresses[start : start + BALANCES_PER_CALL]
            data = encode_balance_calls(multicall, part)
            raw: Any = self._call(
                "Multicall3.aggregate3",
                lambda data=data: self.w3.eth.call(  # type: ignore[misc]
                    {"to": target, "data": data}, block_identifier=block
                ),
            )
            for address, answer in zip(part, decode_balance_results(bytes(raw)), strict=True):
                balances[address] = answer
        return balances

    def internal_transfers(
        self, from_block: int, to_block: int, recipients: set[str]
    ) -> list[InternalTransfer]:
        """ETH sent to `recipients` by contract calls, found by tracing each block
        (debug_traceBlockByNumber with callTracer); raises Unsupported where the node has no
        tracing. Reverted frames, and all below them, moved nothing and are skipped."""
        numbers = list(range(from_block, to_block + 1))
        if not numbers:
            return []
        traces = self._batch(
            "debug_traceBlockByNumber",
            [("debug_traceBlockByNumber", [hex(n), {"tracer": "callTracer"}]) for n in numbers],
            FULL_BLOCK_BATCH,
        )
        hashes = self.block_hashes(numbers)
        found = []
        for number, trace in zip(numbers, traces, strict=True):
            for item in trace or []:
                tx_hash = item.get("txHash")
                root = item.get("result")
                if not tx_hash or not isinstance(root, dict):
                    continue
                # The top frame is the transaction itself, counted from the block's transactions.
                frames = _value_frames(root.get("calls") or [], skip=bool(root.get("error")))
                for ordinal, frame in enumerate(frames, start=1):
                    recipient = str(frame.get("to", "")).lower()
                    if recipient in recipients:
                        found.append(
                            InternalTransfer(
                                tx_hash=_hex(tx_hash),
                                ordinal=ordinal,
                                block_number=number,
                                block_hash=hashes[number] or "",
                                sender=str(frame.get("from", "")).lower(),
                                recipient=recipient,
                                amount=_int(frame["value"]),
                            )
                        )
        return found

    def recorded_amounts(
        self, keys: Iterable[tuple[str, int]]
    ) -> dict[tuple[str, int], int | None]:
        """What the chain says each recorded (tx hash, log index) moved, read again in
        batches: an ERC-20 log's amount, a transaction's value, a traced call's value. 0 when
        the transaction failed or the log is not there; None where it cannot be re-read (no
        tracing, no receipt)."""
        keys = list(keys)
        hashes = sorted({tx for tx, _ in keys})
        receipts = dict(
            zip(
                hashes,
                self._batch(
                    "eth_getTransactionReceipt",
                    [("eth_getTransactionReceipt", [h]) for h in hashes],
                    BATCH_SIZE,
                ),
                strict=True,
            )
        )
        native = sorted({tx for tx, index in keys if index == -1})
        txs = dict(
            zip(
                native,
                self._batch(
                    "eth_getTransactionByHash",
                    [("eth_getTransactionByHash", [h]) for h in native],
                    BATCH_SIZE,
                ),
                strict=True,
            )
        )
        traced = sorted({tx for tx, index in keys if index <= -3})
        frames: dict[str, list[dict[str, Any]]] = {}
        if traced:
            try:
                traces = self._batch(
                    "debug_traceTransaction",
                    [("debug_traceTransaction", [h, {"tracer": "callTracer"}]) for h in traced],
                    FULL_BLOCK_BATCH,
                )
            except Unsupported:
                traces = [None] * len(traced)
            for tx_hash, root in zip(traced, traces, strict=True):
                if isinstance(root, dict):
                    calls = root.get("calls") or []
                    frames[tx_hash] = list(_value_frames(calls, skip=bool(root.get("error"))))
        amounts: dict[tuple[str, int], int | None] = {}
        for tx_hash, index in keys:
            receipt = receipts.get(tx_hash)
            if not receipt:
                amounts[(tx_hash, index)] = None
            elif _int(receipt["status"]) != 1:
                amounts[(tx_hash, index)] = 0
            elif index >= 0:
                logs = [log for log in receipt["logs"] if _int(log["logIndex"]) == index]
                parsed = _parse_transfer_log(logs[0]) if logs else None
                amounts[(tx_hash, index)] = parsed.amount if parsed else 0
            elif index == -1:
                tx = txs.get(tx_hash)
                amounts[(tx_hash, index)] = _int(tx["value"]) if tx else None
            else:
                found = frames.get(tx_hash)
                ordinal = -2 - index
                if found is None:
                    amounts[(tx_hash, index)] = None
                else:
                    amounts[(tx_hash, index)] = (
                        _int(found[ordinal - 1]["value"]) if ordinal <= len(found) else 0
                    )
        return amounts

    # Claims (DepositFactory) ---------------------------------------------------------------

    def claim_logs(self, from_block: int, to_block: int, factory: str) -> list[SeenClaim]:
        """The factory's Claimed logs in the range."""
        logs = self._logs(
            from_block,
            to_block,
            {"address": to_checksum_address(factory), "topics": [CLAIMED_TOPIC]},
        )
        return [
            SeenClaim(
                tx_hash=_hex(log["transactionHash"]),
                block_number=_int(log["blockNumber"]),
                block_hash=_hex(log["blockHash"]),
                destination=_topic_address(log["topics"][1]),
            )
            for log in logs
            if len(log["topics"]) == 2
        ]

    def claim_receipts(
        self, tx_hashes: Iterable[str], factory: str
    ) -> dict[str, ClaimReceipt | None]:
        """What each claim transaction did, from its receipt (batched); None while it is not
        mined. A reverted one says why where the node can replay it."""
        wanted = sorted(set(tx_hashes))
        answers = self._batch(
            "eth_getTransactionReceipt",
            [("eth_getTransactionReceipt", [h]) for h in wanted],
            BATCH_SIZE,
        )
        factory = factory.lower()
        out: dict[str, ClaimReceipt | None] = {}
        for tx_hash, receipt in zip(wanted, answers, strict=True):
            if not receipt or receipt.get("blockNumber") is None:
                out[tx_hash] = None
                continue
            moves = []
            for log in receipt["logs"]:
                topics = [_hex(t) for t in log["topics"]]
                address = _hex(log["address"])
                if address == factory and topics and topics[0] == ETHER_CLAIMED_TOPIC:
                    moves.append(
                        Move(
                            "", _topic_address(topics[1]), _topic_address(topics[2]), _data_int(log)
                        )
                    )
                elif topics and topics[0] == TRANSFER_TOPIC:
                    parsed = _parse_transfer_log(log)
                    if parsed is not None:
                        moves.append(Move(address, parsed.sender, parsed.recipient, parsed.amount))
            succeeded = _int(receipt["status"]) == 1
            gas_used = _int(receipt["gasUsed"])
            price = _int(receipt.get("effectiveGasPrice") or 0)
            out[tx_hash] = ClaimReceipt(
                tx_hash=tx_hash,
                succeeded=succeeded,
                block_number=_int(receipt["blockNumber"]),
                block_hash=_hex(receipt["blockHash"]),
                sender=str(receipt["from"]).lower(),
                gas_used=gas_used,
                fee_wei=gas_used * price,
                moves=tuple(moves) if succeeded else (),
                reason="" if succeeded else self._revert_reason(tx_hash, gas_used),
            )
        return out

    def _revert_reason(self, tx_hash: str, gas_used: int) -> str:
        """Replay a reverted transaction at its block to learn why (eth_call)."""
        try:
            tx: Any = self._call(
                "eth_getTransactionByHash",
                lambda: self.w3.eth.get_transaction(tx_hash),  # type: ignore[arg-type]
            )
        except ChainError:
            return "The transaction reverted."
        if tx is None:
            return "The transaction reverted."
        if int(tx["gas"]) == gas_used:
            return "The transaction ran out of gas (its gas limit was too low)."
        call = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "value": tx["value"]}
        try:
            self.w3.eth.call(call, block_identifier=int(tx["blockNumber"]) - 1)  # type: ignore[arg-type]
        except Web3RPCError as error:
            return explain_revert(getattr(error, "data", None) or str(error))
        except (ValueError, ContractLogicError) as error:
            return explain_revert(getattr(error, "data", None) or str(error))
        return "The transaction reverted (it succeeds when replayed now: the chain changed)."

    def estimate_gas(self, *, sender: str, to: str, data: str) -> int:
        call: Any = {"to": to_checksum_address(to), "data": data}
        if sender:
            call["from"] = to_checksum_address(sender)
        try:
            return self._call("eth_estimateGas", lambda: int(self.w3.eth.estimate_gas(call)))
        except ContractLogicError as error:
            raise ChainError(explain_revert(getattr(error, "data", None) or str(error))) from None

    def factory_check(self, factory: str, *, expected_implementation: str) -> str:
        """ "" when `factory` is a DepositFactory whose clones are where we compute them,
        else why not (a person's sentence)."""
        if not self.has_code(factory):
            return "There is no contract at this address on this network."
        selector = keccak(text="forwarderImplementation()")[:4]
        try:
            raw = self._call(
                "eth_call",
                lambda: self.w3.eth.call({"to": to_checksum_address(factory), "data": selector}),  # type: ignore[typeddict-item]
            )
        except ChainError as error:
            return f"The node could not read the contract: {error}"
        except (Web3RPCError, ContractLogicError):
            return "This contract is not a DepositFactory."
        answer = "0x" + bytes(raw)[-20:].hex() if len(bytes(raw)) == 32 else ""
        if answer != expected_implementation.lower():
            return "This contract is not a DepositFactory of this version."
        return ""

    def has_code(self, address: str) -> bool:
        code = self._call("eth_getCode", lambda: self.w3.eth.get_code(to_checksum_address(address)))
        return len(code) > 0

    def token_balance(self, token: str, owner: str) -> int:
        contract = self.w3.eth.contract(address=to_checksum_address(token), abi=ERC20_ABI)
        return self._call(
            "balanceOf",
            lambda: int(contract.functions.balanceOf(to_checksum_address(owner)).call()),
        )

    def freeze_listed(self, token: str, account: str) -> bool | None:
        """Whether the token contract's own freeze list holds `account` (asked by eth_call
        under both spellings); None when the contract has no such list."""
        target = to_checksum_address(token)
        answers = []
        for name, selector in FREEZE_LIST_CALLS.items():
            data = selector + bytes(12) + bytes.fromhex(account.lower().removeprefix("0x"))

            def ask(data: bytes = data) -> bytes | None:
                try:
                    return bytes(self.w3.eth.call({"to": target, "data": data}))  # type: ignore[typeddict-item]
                except ContractLogicError:
                    return None  # no such function: the call reverts

            raw = self._call(name, ask)
            if raw is not None and len(raw) == 32:
                answers.append(int.from_bytes(raw, "big") != 0)
        return any(answers) if answers else None

    def mined_transaction(self, tx_hash: str) -> MinedTransaction | None:
        """The receipt and value transfers of one transaction; None while it is not mined
        (or the node does not know it)."""
        receipts = self._batch(
            "eth_getTransactionReceipt", [("eth_getTransactionReceipt", [tx_hash])], 1
        )
        receipt = receipts[0]
        if not receipt:
            return None
        txs = self._batch("eth_getTransactionByHash", [("eth_getTransactionByHash", [tx_hash])], 1)
        tx = txs[0] or {}
        number = _int(receipt["blockNumber"])
        block_hash = _hex(receipt["blockHash"])
        succeeded = _int(receipt["status"]) == 1
        found: list[SeenTransfer] = []
        if succeeded:
            for log in receipt.get("logs") or []:
                topics = log.get("topics") or []
                if topics and _hex(topics[0]) == TRANSFER_TOPIC:
                    parsed = _parse_transfer_log(log)
                    if parsed is not None:
                        found.append(parsed)
            value = _int(tx.get("value") or 0)
            if value > 0 and tx.get("to"):
                found.append(
                    SeenTransfer(
                        tx_hash=_hex(tx_hash),
                        log_index=-1,
                        block_number=number,
                        block_hash=block_hash,
                        token="",
                        sender=str(tx["from"]).lower(),
                        recipient=str(tx["to"]).lower(),
                        amount=value,
                    )
                )
        return MinedTransaction(_hex(tx_hash), succeeded, number, block_hash, tuple(found))

    def _logs(self, from_block: int, to_block: int, query: dict[str, Any]) -> list[Any]:
        """eth_getLogs over the range, halved until the node accepts it: providers cap a
        range's blocks or results, and a single block that is still refused is an error."""
        if from_block > to_block:
            return []
        ranged = {"fromBlock": from_block, "toBlock": to_block, **query}
        try:
            return list(self._call("eth_getLogs", lambda: self.w3.eth.get_logs(ranged)))  # type: ignore[arg-type]
        except RangeRefused:
            if from_block == to_block:
                raise
            middle = (from_block + to_block) // 2
            logger.info("getLogs %s-%s refused; splitting at %s", from_block, to_block, middle)
            return self._logs(from_block, middle, query) + self._logs(middle + 1, to_block, query)

    def token_transfers_to(
        self, from_block: int, to_block: int, tokens: list[str], recipient: str
    ) -> list[SeenTransfer]:
        """ERC-20 Transfer logs of `tokens` to one recipient (its topic filtered by the node)."""
        if not tokens:
            return []
        topics = [TRANSFER_TOPIC, None, "0x" + "0" * 24 + recipient.lower()[2:]]
        logs = self._logs(
            from_block,
            to_block,
            {"address": [to_checksum_address(t) for t in tokens], "topics": topics},
        )
        return [p for p in (_parse_transfer_log(log) for log in logs) if p is not None]

    def token_transfers(
        self, from_block: int, to_block: int, tokens: list[str]
    ) -> list[SeenTransfer]:
        """ERC-20 Transfer logs of `tokens` in the range."""
        if not tokens:
            return []
        logs = self._logs(
            from_block,
            to_block,
            {"address": [to_checksum_address(t) for t in tokens], "topics": [TRANSFER_TOPIC]},
        )
        return [p for p in (_parse_transfer_log(log) for log in logs) if p is not None]

    def native_transfers(self, from_block: int, to_block: int) -> list[SeenTransfer]:
        """Top-level value transactions in the range, full blocks fetched in batches. Whether
        each succeeded is a separate question (`successful`): a block lists reverted ones too."""
        numbers = list(range(from_block, to_block + 1))
        blocks = self._batch(
            "eth_getBlockByNumber",
            [("eth_getBlockByNumber", [hex(n), True]) for n in numbers],
            FULL_BLOCK_BATCH,
            required=True,
        )
        found = []
        for number, block in zip(numbers, blocks, strict=True):
            if not block:
                # A lagging backend has not got this block yet: stop before it, so the range
                # is never recorded as scanned without it.
                raise ChainUnavailable(f"block {number} is not available yet")
            block_hash = _hex(block["hash"])
            tx: Any
            for tx in block["transactions"]:
                value = _int(tx["value"])
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
    """Signs and sends transactions with a local key: the dev chain's deploy script, tests
    (the demo payer), and the optional gas-only claim relayer (CHAIN_<SLUG>_RELAYER_KEY),
    which only ever sends DepositFactory.claim calls: their destination is fixed by the
    deposit addresses, so that key can spend its own ETH on gas and nothing else. No key
    that can move merchant money is ever on the server."""

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
        target = self.chain.w3.eth.contract(address=to_checksum_address(contract), abi=abi)
        converted = [to_checksum_address(a) if _is_address(a) else a for a in args]
        params: Any = {"from": self.address, "nonce": nonce}
        tx = target.functions[function](*converted).build_transaction(params)
        return self._send(dict(tx))

    def send_data(self, to: str, data: str, *, gas: int, nonce: int) -> str:
        """A plain contract call with calldata prepared elsewhere (a claim); its hash."""
        w3 = self.chain.w3
        price = self.chain._call("eth_gasPrice", lambda: int(w3.eth.gas_price))
        chain_id = self.chain.chain_id()
        tx: dict[str, Any] = {
            "to": to_checksum_address(to),
            "data": data,
            "value": 0,
            "gas": gas,
            "gasPrice": price,
            "nonce": nonce,
            "chainId": chain_id,
        }
        return self._send(tx)

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


# Custom errors of DepositFactory, DepositForwarder and OpenZeppelin, by selector.
KNOWN_ERRORS = {
    bytes(keccak(text=signature)[:4]).hex(): text
    for signature, text in (
        ("ZeroDestination()", "The claim names no destination."),
        ("OnlyFactory()", "Only the factory may move a forwarder's funds."),
        (
            "EtherTransferFailed()",
            "The account address refused the ETH (a contract that takes none).",
        ),
        ("SafeERC20FailedOperation(address)", "A token refused the transfer."),
        ("FailedDeployment()", "A forwarder could not be deployed."),
    )
}


def explain_revert(data: Any) -> str:
    """A person's sentence for a revert's data (custom error or Error(string))."""
    text = data if isinstance(data, str) else str(data)
    hex_part = text.lower()
    if "0x" in hex_part:
        hex_part = hex_part[hex_part.index("0x") + 2 :]
    selector = hex_part[:8]
    if selector in KNOWN_ERRORS:
        return KNOWN_ERRORS[selector]
    if selector == "08c379a0":  # Error(string)
        try:
            raw = bytes.fromhex(hex_part[8:])
            length = int.from_bytes(raw[32:64], "big")
            return f"The transaction reverted: {raw[64 : 64 + length].decode(errors='replace')}"
        except ValueError:
            pass
    return f"The transaction reverted ({text[:120]})."


def _data_int(log: Any) -> int:
    data = log["data"]
    raw = bytes(data) if not isinstance(data, str) else bytes.fromhex(data.removeprefix("0x"))
    return int.from_bytes(raw[:32], "big")


def address_of_key(private_key: str) -> str:
    """The lower-case address a private key signs for (the relayer's)."""
    _load_web3()
    return str(Account.from_key(private_key).address).lower()


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def checksum_address(address: str) -> str:
    """The EIP-55 spelling of a 0x address (raises ValueError for anything else)."""
    if not _is_address(address) or not all(c in "0123456789abcdefABCDEF" for c in address[2:]):
        raise ValueError("not a 0x address of 20 bytes")
    return str(to_checksum_address(address.lower()))


def checksum_ok(address: str) -> bool:
    """A mixed-case address must match its EIP-55 checksum; one case only carries none."""
    body = address[2:]
    if body == body.lower() or body == body.upper():
        return True
    return checksum_address(address) == address


def erc20_transfer_data(recipient: str, amount: int) -> str:
    """Calldata of `transfer(recipient, amount)`, for a browser wallet to send."""
    target = bytes(12) + bytes.fromhex(recipient.lower().removeprefix("0x"))
    return "0x" + (ERC20_TRANSFER + target + _word(amount)).hex()


def encode_balance_calls(multicall: str, addresses: list[str]) -> bytes:
    """aggregate3([(multicall, false, getEthBalance(address))...]) calldata, by hand.

    Laid out as the ABI spec lays out a dynamic array of dynamic tuples; every element has
    the same size, so the offsets are arithmetic. Done by hand because eth_abi (and web3's
    contract layer even more) spends milliseconds per element, which at 10,000 watched
    addresses would cost more than the node's own work. tests check it against eth_abi."""
    target = bytes(12) + bytes.fromhex(multicall.removeprefix("0x"))
    count = len(addresses)
    element = 32 * 4 + 64  # target, allowFailure, offset, length, 36 bytes padded to 64
    head = [_word(32 * count + element * i) for i in range(count)]
    body = [
        target
        + _word(0)
        + _word(96)
        + _word(36)
        + GET_ETH_BALANCE
        + bytes(12)
        + bytes.fromhex(address.removeprefix("0x"))
        + bytes(28)
        for address in addresses
    ]
    return AGGREGATE3 + _word(32) + _word(count) + b"".join(head) + b"".join(body)


def decode_balance_results(raw: bytes) -> list[int]:
    """The uint256 balances out of aggregate3's (bool success, bytes returnData)[] answer."""
    base = int.from_bytes(raw[0:32], "big")
    count = int.from_bytes(raw[base : base + 32], "big")
    items = base + 32
    balances = []
    for i in range(count):
        at = items + int.from_bytes(raw[items + 32 * i : items + 32 * i + 32], "big")
        data_at = at + int.from_bytes(raw[at + 32 : at + 64], "big")
        length = int.from_bytes(raw[data_at : data_at + 32], "big")
        if length != 32:
            raise ChainError("Multicall3 answered a balance that is not one word")
        balances.append(int.from_bytes(raw[data_at + 32 : data_at + 64], "big"))
    return balances


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _value_frames(frames: list[Any], *, skip: bool) -> Iterable[dict[str, Any]]:
    """Depth-first, in execution order: the frames that really moved ETH."""
    if skip:
        return
    for frame in frames:
        if frame.get("error"):
            continue  # reverted: it and everything it called moved nothing
        if frame.get("type", "CALL").upper() in VALUE_FRAMES and _int(frame.get("value") or 0):
            yield frame
        yield from _value_frames(frame.get("calls") or [], skip=False)


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
        log_index=_int(log["logIndex"]),
        block_number=_int(log["blockNumber"]),
        block_hash=_hex(log["blockHash"]),
        token=_hex(log["address"]),
        sender=_topic_address(topics[1]),
        recipient=_topic_address(topics[2]),
        amount=int.from_bytes(raw, "big"),
    )
