// The invoice page's refunds tab: send a refund from the merchant's browser wallet (EIP-1193).
// The server prepared the call (recipient, value, ERC-20 calldata); the wallet signs and sends
// it, and the page reports the transaction hash so the watcher can confirm it. Without a
// wallet the button stays hidden and the hash can be pasted instead.
(function () {
  "use strict";

  function show() {
    document.querySelectorAll(".refund-wallet").forEach(function (b) { b.hidden = !window.ethereum; });
  }
  document.addEventListener("DOMContentLoaded", show);
  document.addEventListener("htmx:afterSwap", show);
  document.addEventListener("click", function (event) {
    var button = event.target.closest(".refund-wallet");
    if (button) { event.preventDefault(); send(button); }
  });

  function csrf() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  async function send(button) {
    var eth = window.ethereum;
    var chainHex = "0x" + Number(button.dataset.chainId).toString(16);
    var label = button.textContent;
    button.disabled = true; button.textContent = "Confirm in your wallet…";
    try {
      var accounts = await eth.request({ method: "eth_requestAccounts" });
      var current = await eth.request({ method: "eth_chainId" });
      if (current !== chainHex) {
        await eth.request({ method: "wallet_switchEthereumChain", params: [{ chainId: chainHex }] });
      }
      var tx = { from: accounts[0], to: button.dataset.to };
      if (button.dataset.data && button.dataset.data !== "0x") tx.data = button.dataset.data;
      if (button.dataset.value && button.dataset.value !== "0") tx.value = "0x" + BigInt(button.dataset.value).toString(16);
      var hash = await eth.request({ method: "eth_sendTransaction", params: [tx] });
      button.textContent = "Sent. Recording…";
      var response = await fetch(button.dataset.report, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": csrf(), "Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ tx_hash: hash }),
      });
      var answer = await response.json();
      if (!answer.ok) throw new Error(answer.error || "The transaction could not be recorded.");
      window.location.reload();
    } catch (error) {
      button.textContent = label;
      button.disabled = false;
      var note = document.createElement("p");
      note.className = "errorlist small";
      note.textContent = (error && error.message) ? error.message : "The wallet refused the transaction.";
      button.after(note);
    }
  }
})();
