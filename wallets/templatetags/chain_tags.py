from django import template

from wallets.chain import checksum_address

register = template.Library()


@register.filter
def checksum(address: str | None) -> str:
    """An address in EIP-55 mixed case, the way wallets and explorers print it."""
    if not address or len(address) != 42:
        return address or ""
    return checksum_address(address)
