// Admin: deploy the DepositFactory from the operator's browser wallet (EIP-1193), wait for the
// receipt, and fill in the created address for the server to check and save.
(function () {
  "use strict";
  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  document.addEventListener("click", async function (event) {
    var button = event.target.closest("[data-deploy-factory]");
    if (!button) return;
    event.preventDefault();
    var root = document.getElementById("deploy-factory");
    var status = root.querySelector("[data-deploy-status]");
    var eth = window.ethereum;
    if (!eth) { status.textContent = "No browser wallet found: send the creation code below from any wallet."; return; }
    button.disabled = true;
    try {
      var accounts = await eth.request({ method: "eth_requestAccounts" });
      var chain = await eth.request({ method: "eth_chainId" });
      if (chain !== root.dataset.chain) {
        await eth.request({ method: "wallet_switchEthereumChain", params: [{ chainId: root.dataset.chain }] });
      }
      status.textContent = "Confirm the deployment in your wallet…";
      var hash = await eth.request({ method: "eth_sendTransaction", params: [{ from: accounts[0], data: root.dataset.bytecode }] });
      status.textContent = "Sent " + hash + "; waiting for it to be mined…";
      for (var i = 0; i < 300; i++) {
        var receipt = await eth.request({ method: "eth_getTransactionReceipt", params: [hash] });
        if (receipt) {
          if (receipt.status !== "0x1") throw new Error("The deployment reverted.");
          root.querySelector("[data-factory-address]").value = receipt.contractAddress;
          status.textContent = "Deployed at " + receipt.contractAddress + ". Check and save it below.";
          return;
        }
        await sleep(2000);
      }
      throw new Error("Not mined after 10 minutes; paste the address once it is.");
    } catch (error) {
      button.disabled = false;
      status.textContent = (error && error.message) ? error.message : "The wallet refused.";
    }
  });
})();
