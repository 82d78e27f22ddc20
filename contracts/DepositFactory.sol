// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";
import {Create2} from "@openzeppelin/contracts/utils/Create2.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @title DepositForwarder
/// @notice The one implementation every deposit address (an EIP-1167 clone of it) delegates to.
/// @dev It has no storage and no initializer, so there is nothing to front-run: a clone does
///      not know its destination at all. Only the factory that created the implementation may
///      make it move funds, and the factory only ever names the destination the clone's own
///      address was derived from (see DepositFactory.claim).
contract DepositForwarder {
    using SafeERC20 for IERC20;

    /// The factory, baked into the implementation's code, so clones read it too.
    address private immutable FACTORY;

    error OnlyFactory();
    error EtherTransferFailed();

    constructor() {
        FACTORY = msg.sender;
    }

    /// ETH sent to a deployed forwarder stays there until the next claim.
    receive() external payable {}

    /// Move this forwarder's whole balance of each token, then its ETH, to `destination`.
    /// Returns the ETH moved. SafeERC20 accepts tokens whose transfer returns nothing (USDT).
    function sweep(address destination, address[] calldata tokens) external returns (uint256 eth) {
        if (msg.sender != FACTORY) revert OnlyFactory();
        for (uint256 i = 0; i < tokens.length; ++i) {
            IERC20 token = IERC20(tokens[i]);
            uint256 balance = token.balanceOf(address(this));
            if (balance > 0) token.safeTransfer(destination, balance);
        }
        eth = address(this).balance;
        if (eth > 0) {
            (bool ok, ) = destination.call{value: eth}("");
            if (!ok) revert EtherTransferFailed();
        }
    }
}

/// @title DepositFactory
/// @notice One per chain for the whole install. A deposit address is the CREATE2 address of a
///         clone of the forwarder under the salt keccak256(destination, salt): the destination
///         is part of the derivation, so whoever calls claim (it is permissionless) can only
///         ever move the funds to the address they were meant for.
contract DepositFactory {
    address public immutable forwarderImplementation;

    /// One per claim call: the watcher finds claims by this log of the factory.
    event Claimed(address indexed destination, uint256 forwarders);
    /// ETH has no Transfer log of its own; tokens are seen by their Transfer logs.
    event EtherClaimed(address indexed forwarder, address indexed destination, uint256 amount);

    error ZeroDestination();

    constructor() {
        forwarderImplementation = address(new DepositForwarder());
    }

    function forwarderSalt(address destination, bytes32 salt) public pure returns (bytes32) {
        return keccak256(abi.encode(destination, salt));
    }

    /// The deposit address of (destination, salt), deployed or not.
    function forwarderAddress(address destination, bytes32 salt) public view returns (address) {
        return Clones.predictDeterministicAddress(forwarderImplementation, forwarderSalt(destination, salt));
    }

    /// The EIP-1167 creation code hash, for computing addresses with Create2 off chain.
    function forwarderCodeHash() external view returns (bytes32) {
        return keccak256(
            abi.encodePacked(
                hex"3d602d80600a3d3981f3363d3d373d3d3d363d73",
                forwarderImplementation,
                hex"5af43d82803e903d91602b57fd5bf3"
            )
        );
    }

    /// Same answer as forwarderAddress, through OpenZeppelin's Create2 (tests compare both).
    function forwarderAddressByCreate2(address destination, bytes32 salt) external view returns (address) {
        return Create2.computeAddress(forwarderSalt(destination, salt), this.forwarderCodeHash());
    }

    /// Deploy each forwarder of (destination, salts[i]) that is not deployed yet and sweep the
    /// listed tokens and all ETH from it to `destination`. Anyone may call it and pay the gas.
    /// A forwarder already swept is simply swept again (permanent invoices receive often).
    function claim(address destination, bytes32[] calldata salts, address[] calldata tokens) external {
        if (destination == address(0)) revert ZeroDestination();
        address implementation = forwarderImplementation;
        for (uint256 i = 0; i < salts.length; ++i) {
            bytes32 salt = keccak256(abi.encode(destination, salts[i]));
            address forwarder = Clones.predictDeterministicAddress(implementation, salt);
            if (forwarder.code.length == 0) Clones.cloneDeterministic(implementation, salt);
            uint256 eth = DepositForwarder(payable(forwarder)).sweep(destination, tokens);
            if (eth > 0) emit EtherClaimed(forwarder, destination, eth);
        }
        emit Claimed(destination, salts.length);
    }
}
