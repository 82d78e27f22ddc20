// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title DemoToken
/// @notice A minimal ERC-20 for Stablebill's local dev chain: demo USDT and USDC stand-ins.
/// @dev Self-contained on purpose (no imports). The owner may mint, which backs the demo faucet,
///      and freeze addresses the way the real stablecoins do, so compliance screening can be
///      tested on a dev chain: USDT answers `isBlackListed(address)`, USDC
///      `isBlacklisted(address)`; this token answers both. A frozen address cannot send.
///      Never deploy this anywhere that holds real value.
contract DemoToken {
    string public name;
    string public symbol;
    uint8 public immutable decimals;
    uint256 public totalSupply;
    address public immutable owner;

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    /// @notice Frozen addresses, under USDT's name for the getter.
    mapping(address => bool) public isBlackListed;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    event FrozenSet(address indexed account, bool frozen);

    error NotOwner();
    error ZeroAddress();
    error InsufficientBalance(uint256 balance, uint256 needed);
    error InsufficientAllowance(uint256 allowed, uint256 needed);
    error AccountFrozen(address account);

    constructor(string memory name_, string memory symbol_, uint8 decimals_) {
        name = name_;
        symbol = symbol_;
        decimals = decimals_;
        owner = msg.sender;
    }

    function transfer(address to, uint256 value) external returns (bool) {
        _transfer(msg.sender, to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        if (spender == address(0)) revert ZeroAddress();
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            if (allowed < value) revert InsufficientAllowance(allowed, value);
            unchecked {
                allowance[from][msg.sender] = allowed - value;
            }
        }
        _transfer(from, to, value);
        return true;
    }

    /// @notice Create `value` new tokens for `to`. Only the deployer may call it.
    function mint(address to, uint256 value) external {
        if (msg.sender != owner) revert NotOwner();
        if (to == address(0)) revert ZeroAddress();
        totalSupply += value;
        unchecked {
            balanceOf[to] += value; // cannot overflow: bounded by totalSupply
        }
        emit Transfer(address(0), to, value);
    }

    /// @notice USDC's name for the same freeze list.
    function isBlacklisted(address account) external view returns (bool) {
        return isBlackListed[account];
    }

    /// @notice Freeze or unfreeze `account`. Only the deployer may call it.
    function setFrozen(address account, bool frozen) external {
        if (msg.sender != owner) revert NotOwner();
        isBlackListed[account] = frozen;
        emit FrozenSet(account, frozen);
    }

    function _transfer(address from, address to, uint256 value) private {
        if (to == address(0)) revert ZeroAddress();
        if (isBlackListed[from]) revert AccountFrozen(from);
        uint256 balance = balanceOf[from];
        if (balance < value) revert InsufficientBalance(balance, value);
        unchecked {
            balanceOf[from] = balance - value;
            balanceOf[to] += value; // cannot overflow: bounded by totalSupply
        }
        emit Transfer(from, to, value);
    }
}
