"""Local HTTP servers for the tests' fakes at the edge (a rate ticker, an email provider, a
webhook receiver, a faulty node)."""

import threading
from socketserver import BaseServer

# socketserver's serve_forever looks for shutdown() every poll_interval, 0.5 s by default:
# every test that stopped a local server waited up to half a second for it.
POLL_SECONDS = 0.02


def serve_in_background(server: BaseServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, args=(POLL_SECONDS,), daemon=True)
    thread.start()
    return thread
