"""Dev-chain contracts: the demo ERC-20 source, its compiled artifact and a deploy helper.

Nothing here is part of the Django project; it exists for the local anvil chain (bin/anvil)
and the tests that run against it.
"""
