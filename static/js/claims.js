// Claims: select deposits, open the "Sign claim" step the server prepared, and have the
// browser wallet (EIP-1193) send the factory call. Without a wallet the step shows the
// calldata and factory address to paste into any wallet. No key ever reaches the server.
(function () {
  "use strict";

  function csrf() {
    var input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  // Tell the server which account will sign, so its gas estimate is for that sender.
  function rememberSender() {
    if (!window.ethereum) return;
    window.ethereum.request({ method: "eth_accounts" }).then(function (accounts) {
      document.querySelectorAll("[data-claim-sender]").forEach(function (input) {
        input.value = accounts && accounts[0] ? accounts[0] : "";
      });
    }).catch(function () {});
  }
  document.addEventListener("DOMContentLoaded", rememberSender);

  document.addEventListener("change", function (event) {
    var all = event.target.closest("[data-select-all]");
    if (!all) return;
    all.closest("form").querySelectorAll("input[name=deposit]:not(:disabled)").forEach(function (box) {
      box.checked = all.checked;
    });
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var target = event.detail.target;
    if (target && target.id === "claims-tab") rememberSender();
    if (!target || target.id !== "claim-dialog-body") return;
    var dialog = document.getElementById("claim-dialog");
    var sign = target.querySelector("[data-claim]");
    var manual = target.querySelector("[data-claim-manual]");
    if (manual && !window.ethereum) {
      manual.open = true;
      var button = target.querySelector("[data-sign-claim]");
      if (button) button.hidden = true;
      status(target, "No browser wallet found: send the call below from any wallet.");
    }
    if (dialog && !dialog.open) dialog.showModal();
    if (sign) sign.focus && sign.focus();
  });
  // A refused preparation answers 400 with its message: show it in the dialog too.
  document.addEventListener("htmx:beforeSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "claim-dialog-body" && event.detail.xhr.status === 400) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
  document.addEventListener("htmx:configRequest", function (event) {
    if (event.detail.elt && event.detail.elt.matches && event.detail.elt.matches(".claim-group")) rememberSender();
  });

  function status(root, text, bad) {
    var line = root.querySelector("[data-claim-status]");
    if (!line) return;
    line.textContent = text;
    line.className = "small" + (bad ? " errorlist" : "");
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-sign-claim]");
    if (button) { event.preventDefault(); signClaim(button); }
  });

  async function signClaim(button) {
    var root = button.closest("[data-claim]");
    var eth = window.ethereum;
    if (!eth) { status(root, "No browser wallet found: send the call below from any wallet.", true); return; }
    button.disabled = true;
    status(root, "Confirm the claim in your wallet…");
    try {
      var accounts = await eth.request({ method: "eth_requestAccounts" });
      var chain = await eth.request({ method: "eth_chainId" });
      if (chain !== root.dataset.chain) {
        try {
          await eth.request({ method: "wallet_switchEthereumChain", params: [{ chainId: root.dataset.chain }] });
          chain = await eth.request({ method: "eth_chainId" });
        } catch (switchError) { /* reported below */ }
        if (chain !== root.dataset.chain) {
          throw new Error("Your wallet is on chain " + parseInt(chain, 16) + "; this claim is for chain " +
            parseInt(root.dataset.chain, 16) + ". Switch networks in the wallet and sign again.");
        }
      }
      var tx = { from: accounts[0], to: root.dataset.factory, data: root.dataset.calldata, value: "0x0" };
      if (root.dataset.gas) tx.gas = root.dataset.gas;
      var hash = await eth.request({ method: "eth_sendTransaction", params: [tx] });
      status(root, "Sent. Recording the transaction…");
      var body = new URLSearchParams({ tx_hash: hash, sender: accounts[0], chain_id: chain });
      var answer = await fetch(root.dataset.sentUrl, {
        method: "POST", body: body, credentials: "same-origin",
        headers: { "X-CSRFToken": csrf(), "Content-Type": "application/x-www-form-urlencoded" },
      });
      var result = await answer.json();
      if (!answer.ok) throw new Error(result.error || "The server did not record the claim.");
      status(root, "Claim sent (" + hash.slice(0, 10) + "…). It shows as pending until it is mined.");
      setTimeout(function () { window.location.reload(); }, 1200);
    } catch (error) {
      button.disabled = false;
      status(root, (error && error.message) ? error.message : "The wallet refused the claim.", true);
    }
  }
})();
