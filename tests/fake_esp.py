"""A local stand-in for Postmark's HTTP API, so the real anymail backend sends through HTTP and
meets real provider answers (accepted, refused, down) without leaving the machine."""

import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.local_http import serve_in_background


@dataclass
class FakePostmark:
    url: str
    received: list[dict] = field(default_factory=list)
    # What the next requests get: "ok"; "refuse" (422: the recipient is invalid); "bad_sender"
    # (422: the From address is not a confirmed sender signature); "down" (503).
    mode: str = "ok"

    def settings(self) -> dict:
        return {
            "default": {
                "BACKEND": "anymail.backends.postmark.EmailBackend",
                "OPTIONS": {"server_token": "test-token", "api_url": self.url},
            }
        }


def start_fake_postmark() -> tuple[FakePostmark, ThreadingHTTPServer]:
    state = FakePostmark(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.received.append(body)
            if state.mode == "down":
                self._answer(503, {"Message": "Service unavailable"})
            elif state.mode == "refuse":
                self._answer(
                    422, {"ErrorCode": 300, "Message": "Invalid 'To' address: 'ada@example.org'."}
                )
            elif state.mode == "bad_sender":
                message = "The 'From' address is not a confirmed Sender Signature."
                self._answer(422, {"ErrorCode": 400, "Message": message})
            else:
                self._answer(
                    200,
                    {
                        "To": body["To"],
                        "MessageID": f"pm-{len(state.received)}",
                        "ErrorCode": 0,
                        "Message": "OK",
                    },
                )

        def _answer(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/"
    serve_in_background(server)
    return state, server
