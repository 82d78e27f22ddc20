"""Everything `make run` (bin/devserver) prepares before it serves, in one process: the
migrations, the demo business, then the dev chain's contracts and the demo wallet.

One Django start instead of three (each about a second of CPU), and the migrations run while
anvil boots beside them.
"""

import socket
import time
from typing import Any
from urllib.parse import urlsplit

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

CHAIN_START_SECONDS = 30


class Command(BaseCommand):
    help = "Migrate, create the demo business and deploy the dev chain's contracts (make run)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--rpc-url", default="http://127.0.0.1:8545")
        parser.add_argument("--merchant-of", help="Email of the user whose business gets a wallet.")

    def handle(self, *args: Any, rpc_url: str, merchant_of: str | None, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        call_command("seed_demo", stdout=self.stdout)
        _wait_for_port(rpc_url, CHAIN_START_SECONDS)
        call_command("devchain_setup", rpc_url=rpc_url, merchant_of=merchant_of, stdout=self.stdout)


def _wait_for_port(url: str, seconds: float) -> None:
    """Until the node's port takes connections: quietly, where the chain client would log
    each refused attempt while anvil loads its saved state."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 8545
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise CommandError(f"No dev chain listens at {url} after {seconds:g} s.") from None
            time.sleep(0.1)
