"""A browser wallet for Playwright pages: an EIP-1193 provider (`window.ethereum`) injected
into every page of a context, forwarding to a node whose account is unlocked (anvil's).

    wallet = InjectedWallet(rpc_url, account=ACCOUNT)
    wallet.install(page)            # before page.goto
    ... page clicks "Sign claim" ...
    assert wallet.sent              # the transactions the page asked the wallet to send

The page sees what a real wallet offers: eth_requestAccounts / eth_accounts answer the one
account, eth_chainId the node's chain (or `chain_id`, to play a wallet on another network),
wallet_switchEthereumChain succeeds only towards that chain, and everything else, including
eth_sendTransaction, goes to the node, which signs with the unlocked account. `refuse=True`
plays a person who rejects every request (EIP-1193 error 4001). The init script runs before
any page script and is not subject to the page's CSP.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from playwright.sync_api import Page

PROVIDER = """
(() => {
  const listeners = {};
  const provider = {
    isStablebillTestWallet: true,
    async request({ method, params }) {
      const answer = JSON.parse(await window.__walletRpc(method, JSON.stringify(params || [])));
      if (answer.error) {
        const error = new Error(answer.error.message);
        error.code = answer.error.code;
        throw error;
      }
      return answer.result;
    },
    on(event, handler) { (listeners[event] = listeners[event] || []).push(handler); },
    removeListener(event, handler) {
      listeners[event] = (listeners[event] || []).filter((h) => h !== handler);
    },
  };
  window.ethereum = provider;
})();
"""


class InjectedWallet:
    def __init__(
        self, rpc_url: str, *, account: str, chain_id: int | None = None, refuse: bool = False
    ) -> None:
        self.rpc_url = rpc_url
        self.account = account
        self.chain_id = chain_id
        self.refuse = refuse
        self.calls: list[str] = []
        self.sent: list[str] = []  # transaction hashes of eth_sendTransaction

    def install(self, page: Page) -> None:
        page.expose_function("__walletRpc", self._handle)
        page.add_init_script(PROVIDER)

    def _node(self, method: str, params: list[Any]) -> dict:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        request = urllib.request.Request(
            self.rpc_url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)

    def _chain(self) -> int:
        if self.chain_id is not None:
            return self.chain_id
        return int(self._node("eth_chainId", [])["result"], 16)

    def _handle(self, method: str, raw_params: str) -> str:
        params = json.loads(raw_params)
        self.calls.append(method)
        if self.refuse and method in ("eth_requestAccounts", "eth_sendTransaction"):
            return json.dumps({"error": {"code": 4001, "message": "User rejected the request."}})
        if method in ("eth_requestAccounts", "eth_accounts"):
            return json.dumps({"result": [self.account]})
        if method == "eth_chainId":
            return json.dumps({"result": hex(self._chain())})
        if method == "wallet_switchEthereumChain":
            wanted = int(params[0]["chainId"], 16)
            if wanted != self._chain():
                return json.dumps(
                    {
                        "error": {
                            "code": 4902,
                            "message": f"This wallet does not know chain {wanted}.",
                        }
                    }
                )
            return json.dumps({"result": None})
        if method == "eth_sendTransaction":
            tx = dict(params[0])
            tx["from"] = self.account
            answer = self._node(method, [tx])
            if "result" in answer:
                self.sent.append(answer["result"])
            return json.dumps(answer)
        return json.dumps(self._node(method, params))
