// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title TestForwarder
/// @notice For tests only: forwards the ETH it is sent with a contract call, the way smart-contract
/// wallets and exchange hot wallets pay, so the deposit arrives as an internal transaction.
contract TestForwarder {
    function forward(address payable to) external payable {
        (bool ok, ) = to.call{value: msg.value}("");
        require(ok, "TestForwarder: send failed");
    }

    /// Splits msg.value over two calls in one transaction (two internal transfers).
    function forwardSplit(address payable to, uint256 first) external payable {
        (bool ok, ) = to.call{value: first}("");
        require(ok, "TestForwarder: send failed");
        (ok, ) = to.call{value: msg.value - first}("");
        require(ok, "TestForwarder: send failed");
    }

    /// Sends and then reverts: nothing may be counted.
    function forwardThenFail(address payable to) external payable {
        (bool ok, ) = to.call{value: msg.value}("");
        require(ok && false, "TestForwarder: reverted on purpose");
    }
}
