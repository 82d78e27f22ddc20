// The payment page: live countdown, copy buttons (app.js is not loaded here), and paying
// from a browser wallet (EIP-1193). Everything works without it; this only makes it nicer.
(function () {
  "use strict";

  function tick() {
    document.querySelectorAll("[data-countdown]").forEach(function (el) {
      if (!el.dataset.deadline) el.dataset.deadline = String(Date.now() + Number(el.dataset.countdown) * 1000);
      var left = Math.max(0, Math.round((Number(el.dataset.deadline) - Date.now()) / 1000));
      var m = Math.floor(left / 60), s = left % 60;
      var value = el.querySelector(".countdown-value");
      if (value) value.textContent = m + ":" + (s < 10 ? "0" : "") + s;
      el.classList.toggle("low", left < 120);
    });
  }
  setInterval(tick, 1000);
  document.addEventListener("htmx:afterSwap", function () { tick(); showWalletButton(); });

  // The status section asks again when its answer is swapped in; an answer that never came
  // (network down, server restarting) would end that chain, so it asks again a bit later.
  document.addEventListener("htmx:afterRequest", function (event) {
    var elt = event.detail.elt;
    if (event.detail.successful || !elt || elt.id !== "status" || !window.htmx) return;
    setTimeout(function () { if (elt.isConnected) window.htmx.trigger(elt, "retry"); }, 3000);
  });

  // A refused choice (400: that currency is no longer offered; 429: too many tries) answers
  // the status section with its message; htmx leaves 4xx answers out unless told to take them.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var elt = event.detail.requestConfig && event.detail.requestConfig.elt;
    var status = event.detail.xhr.status;
    if (elt && elt.matches("form.pay-start") && (status === 400 || status === 429)) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  document.addEventListener("click", function (event) {
    var copy = event.target.closest("[data-copy]");
    if (copy && navigator.clipboard) {
      event.preventDefault();
      navigator.clipboard.writeText(copy.getAttribute("data-copy")).then(function () {
        var label = copy.textContent; copy.textContent = "Copied";
        setTimeout(function () { copy.textContent = label; }, 1500);
      });
    }
    var pay = event.target.closest(".wallet-pay");
    if (pay) { event.preventDefault(); payWithWallet(pay); }
  });

  function showWalletButton() {
    document.querySelectorAll(".wallet-pay").forEach(function (b) { b.hidden = !window.ethereum || !b.dataset.amount; });
  }
  document.addEventListener("DOMContentLoaded", showWalletButton);

  function pad(hex) { return hex.replace(/^0x/, "").padStart(64, "0"); }

  async function payWithWallet(button) {
    var eth = window.ethereum;
    var chainHex = "0x" + Number(button.dataset.chainId).toString(16);
    var amountHex = "0x" + BigInt(button.dataset.amount).toString(16);
    var label = button.textContent;
    button.disabled = true; button.textContent = "Confirm in your wallet…";
    try {
      var accounts = await eth.request({ method: "eth_requestAccounts" });
      var current = await eth.request({ method: "eth_chainId" });
      if (current !== chainHex) {
        await eth.request({ method: "wallet_switchEthereumChain", params: [{ chainId: chainHex }] });
      }
      var tx = { from: accounts[0] };
      if (button.dataset.token) {
        // ERC-20 transfer(address,uint256): selector a9059cbb, then both arguments padded.
        tx.to = button.dataset.token;
        tx.data = "0xa9059cbb" + pad(button.dataset.to) + pad(amountHex);
      } else {
        tx.to = button.dataset.to;
        tx.value = amountHex;
      }
      await eth.request({ method: "eth_sendTransaction", params: [tx] });
      button.textContent = "Sent. Waiting for the network…";
    } catch (error) {
      button.textContent = label;
      button.disabled = false;
      var note = document.createElement("p");
      note.className = "errorlist small";
      note.textContent = (error && error.message) ? error.message : "The wallet refused the payment.";
      button.after(note);
    }
  }
})();
