"""Callbacks end to end against a real HTTP receiver on this machine, verified by the
`standardwebhooks` package (a verifier nobody here wrote)."""

import json
import multiprocessing
import os
import signal
import threading
import time
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import connections, transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from invoices.callbacks import (
    RETRY_DELAYS,
    callback_deliver,
    callback_redeliver,
    callback_test_send,
    callbacks_deliver_due,
    callbacks_due,
    callbacks_queue_due,
)
from invoices.models import CallbackDelivery, CallbackStatus
from invoices.services import credit_note_issue, invoice_cancel
from merchants.integrations import (
    invoice_callback_signer,
    webhook_endpoint_create,
    webhook_endpoint_rotate,
)
from merchants.models import WebhookEndpoint
from tests.conftest import require_postgres
from tests.factories import make_invoice
from tests.local_http import serve_in_background


class Receiver:
    """A real HTTP server that answers from a script: each request takes the next answer
    (status, body, extra headers, delay); the last answer repeats."""

    def __init__(self, answers=((200, "ok", {}, 0),)):
        self.answers = list(answers)
        self.requests: list[dict] = []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                receiver.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": self.rfile.read(length),
                    }
                )
                receiver.arrived.set()
                index = min(len(receiver.requests), len(receiver.answers)) - 1
                status, body, headers, delay = receiver.answers[index]
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body.encode())))
                    self.end_headers()
                    self.wfile.write(body.encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        serve_in_background(self.server)

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def webhook_ids(self) -> list[str]:
        return [r["headers"]["webhook-id"] for r in self.requests]


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(*answers):
        r = Receiver(answers or ((200, "ok", {}, 0),))
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def _endpoint(acme, url, events=None) -> WebhookEndpoint:
    return webhook_endpoint_create(merchant=acme, url=url, events=events or [])


def _headers(request: dict) -> dict:
    return {
        k: request["headers"][k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }


def test_callback_is_signed_so_standard_webhooks_verifies_it(acme, acme_customer, receiver):
    r = receiver()
    endpoint = _endpoint(acme, r.url)
    invoice = make_invoice(acme, customer=acme_customer, issue=True, foreign_id="ord-7")

    assert callbacks_deliver_due() == 1

    request = r.requests[0]
    payload = Webhook(endpoint.secret).verify(request["body"], _headers(request))
    assert payload["type"] == "invoice.created"
    assert payload["data"]["invoice"]["id"] == invoice.pk
    assert payload["data"]["invoice"]["status"] == "open"
    assert payload["data"]["invoice"]["total"] == "300.00"
    assert payload["data"]["foreign_id"] == "ord-7"
    assert payload["data"]["invoice"]["pay_url"] == invoice.pay_url
    assert request["headers"]["content-type"] == "application/json"
    assert (
        request["headers"]["webhook-id"] == f"msg_{invoice.events.get(type='invoice.created').pk}"
    )
    delivery = CallbackDelivery.objects.get()
    assert delivery.status == CallbackStatus.DELIVERED
    assert list(delivery.log.values_list("number", "status_code")) == [(1, 200)]


def test_verifier_rejects_a_signature_with_another_secret(acme, receiver):
    r = receiver()
    _endpoint(acme, r.url)
    make_invoice(acme, issue=True)
    callbacks_deliver_due()
    other = webhook_endpoint_create(merchant=acme, url="https://elsewhere.example/")
    with pytest.raises(WebhookVerificationError):
        Webhook(other.secret).verify(r.requests[0]["body"], _headers(r.requests[0]))


def test_verifier_rejects_a_replay_older_than_its_tolerance(acme, receiver):
    r = receiver()
    endpoint = _endpoint(acme, r.url)
    make_invoice(acme, issue=True)
    delivery = CallbackDelivery.objects.get()
    # The attempt is signed at the time it is made: one made ten minutes ago, replayed now.
    CallbackDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=10)
    )
    callback_deliver(delivery_id=delivery.pk, now=timezone.now() - timedelta(minutes=10))

    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(endpoint.secret).verify(r.requests[0]["body"], _headers(r.requests[0]))


def test_rotation_signs_with_old_and_new_secret_until_the_grace_period_ends(
    acme, receiver, settings
):
    settings.WEBHOOK_ROTATION_GRACE_HOURS = 24
    r = receiver()
    endpoint = _endpoint(acme, r.url)
    old_secret = endpoint.secret
    rotated = webhook_endpoint_rotate(endpoint=endpoint)
    make_invoice(acme, issue=True)
    make_invoice(acme, issue=True)
    first, second = CallbackDelivery.objects.order_by("pk")

    callback_deliver(delivery_id=first.pk)
    during = r.requests[0]
    assert len(during["headers"]["webhook-signature"].split(" ")) == 2
    assert Webhook(old_secret).verify(during["body"], _headers(during))
    assert Webhook(rotated.secret).verify(during["body"], _headers(during))

    after_grace = rotated.previous_secret_until + timedelta(seconds=1)
    callback_deliver(delivery_id=second.pk, now=after_grace)
    after = r.requests[1]
    assert len(after["headers"]["webhook-signature"].split(" ")) == 1
    # Verified at the attempt's own time (the verifier checks the timestamp against now).
    timestamp = int(after["headers"]["webhook-timestamp"])
    assert timestamp == int(after_grace.timestamp())
    wh_new, wh_old = Webhook(rotated.secret), Webhook(old_secret)
    expected = wh_new.sign(after["headers"]["webhook-id"], after_grace, after["body"].decode())
    assert after["headers"]["webhook-signature"] == expected
    assert wh_old.sign(after["headers"]["webhook-id"], after_grace, after["body"].decode()) not in (
        after["headers"]["webhook-signature"].split(" ")
    )


def test_invoice_callback_url_is_signed_with_the_merchants_invoice_secret(acme, receiver):
    r = receiver()
    make_invoice(acme, issue=True, callback_url=r.url, tracking_id="trk-9")
    callbacks_deliver_due()
    secret = invoice_callback_signer(merchant=acme).secret
    payload = Webhook(secret).verify(r.requests[0]["body"], _headers(r.requests[0]))
    assert payload["data"]["tracking_id"] == "trk-9"
    assert CallbackDelivery.objects.get().endpoint is None


def test_failing_receiver_gets_exactly_the_scheduled_attempts_then_succeeds(acme, receiver):
    fails = 4
    r = receiver(*[(500, "down", {}, 0)] * fails, (204, "", {}, 0))
    _endpoint(acme, r.url)
    make_invoice(acme, issue=True)
    delivery = CallbackDelivery.objects.get()
    now = timezone.now()

    assert callbacks_deliver_due(now=now) == 1
    for attempt in range(1, fails + 1):
        delivery.refresh_from_db()
        assert delivery.status == CallbackStatus.PENDING
        assert delivery.next_attempt_at - now == timedelta(seconds=RETRY_DELAYS[attempt])
        # A second early is too early: nothing is sent.
        assert callbacks_deliver_due(now=delivery.next_attempt_at - timedelta(seconds=1)) == 0
        now = delivery.next_attempt_at
        assert callbacks_deliver_due(now=now) == 1

    delivery.refresh_from_db()
    assert delivery.status == CallbackStatus.DELIVERED
    assert len(r.requests) == fails + 1
    assert len(set(r.webhook_ids())) == 1
    assert list(delivery.log.values_list("number", "status_code")) == [
        (1, 500),
        (2, 500),
        (3, 500),
        (4, 500),
        (5, 204),
    ]
    assert delivery.log.first().response_excerpt == "down"


def test_delivery_gives_up_after_the_last_scheduled_attempt(acme, receiver):
    r = receiver((503, "busy", {}, 0))
    _endpoint(acme, r.url)
    make_invoice(acme, issue=True)
    delivery = CallbackDelivery.objects.get()
    now = timezone.now()
    for _ in RETRY_DELAYS:
        callbacks_deliver_due(now=now)
        delivery.refresh_from_db()
        now = delivery.next_attempt_at or now
    assert delivery.status == CallbackStatus.FAILED
    assert delivery.attempts == len(RETRY_DELAYS) == 8
    assert callbacks_deliver_due(now=now + timedelta(days=2)) == 0
    assert len(r.requests) == 8


def test_redirect_is_logged_and_not_followed(acme, receiver):
    target = receiver()
    r = receiver((302, "", {"Location": target.url}, 0))
    _endpoint(acme, r.url)
    make_invoice(acme, issue=True)
    callbacks_deliver_due()
    attempt = CallbackDelivery.objects.get().log.get()
    assert attempt.status_code == 302
    assert attempt.error == f"Redirect to {target.url} not followed."
    assert target.requests == []
    assert CallbackDelivery.objects.get().status == CallbackStatus.PENDING


def test_slow_receiver_times_out_and_is_retried(acme, receiver, settings):
    settings.CALLBACK_TIMEOUT_SECONDS = 1
    r = receiver((200, "late", {}, 2.5))
    _endpoint(acme, r.url)
    make_invoice(acme, issue=True)
    started = time.monotonic()
    callbacks_deliver_due()
    assert time.monotonic() - started < 2.4
    delivery = CallbackDelivery.objects.get()
    attempt = delivery.log.get()
    assert attempt.status_code is None
    assert attempt.error == "Timed out after 1 s."
    assert delivery.status == CallbackStatus.PENDING


def test_gone_disables_the_endpoint_cancels_its_queue_and_tells_the_owner(
    acme, alice, receiver, django_capture_on_commit_callbacks
):
    r = receiver((410, "gone", {}, 0))
    endpoint = _endpoint(acme, r.url)
    make_invoice(acme, issue=True)
    make_invoice(acme, issue=True)
    first, second = CallbackDelivery.objects.order_by("pk")

    with django_capture_on_commit_callbacks(execute=True):
        callback_deliver(delivery_id=first.pk)

    endpoint.refresh_from_db()
    assert endpoint.enabled is False
    assert endpoint.disabled_reason.startswith("The receiver answered 410 Gone")
    assert CallbackDelivery.objects.get(pk=first.pk).status == CallbackStatus.FAILED
    assert CallbackDelivery.objects.get(pk=second.pk).status == CallbackStatus.CANCELLED
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == [alice.email]
    assert r.url in mail.outbox[0].body
    # A disabled endpoint gets nothing new.
    make_invoice(acme, issue=True)
    assert CallbackDelivery.objects.count() == 2


def test_manual_redeliver_sends_again_under_the_same_id(acme, receiver):
    r = receiver()
    _endpoint(acme, r.url)
    make_invoice(acme, issue=True)
    callbacks_deliver_due()
    delivery = CallbackDelivery.objects.get()
    callback_redeliver(delivery=delivery)
    callback_deliver(delivery_id=delivery.pk, manual=True)
    assert len(r.requests) == 2
    assert r.webhook_ids()[0] == r.webhook_ids()[1]
    assert list(delivery.log.values_list("number", "manual")) == [(1, False), (2, True)]


def test_event_filter_sends_only_chosen_types(acme, receiver):
    r = receiver()
    _endpoint(acme, r.url, events=["invoice.cancelled"])
    invoice = make_invoice(acme, issue=True)
    assert CallbackDelivery.objects.count() == 0
    invoice_cancel(invoice=invoice, note="customer changed their mind")
    callbacks_deliver_due()
    payload = json.loads(r.requests[0]["body"])
    assert payload["type"] == "invoice.cancelled"
    assert payload["data"]["invoice"]["status"] == "failed"
    assert payload["data"]["invoice"]["failure_reason"] == "cancelled"
    assert payload["data"]["note"] == "customer changed their mind"


def test_outbox_row_commits_with_the_change_or_not_at_all(acme, receiver):
    r = receiver()
    _endpoint(acme, r.url)
    with pytest.raises(RuntimeError), transaction.atomic():
        make_invoice(acme, issue=True)
        assert CallbackDelivery.objects.count() == 1
        raise RuntimeError("the change fails after the event was recorded")
    assert CallbackDelivery.objects.count() == 0


def test_blocked_address_is_logged_and_never_contacted(acme, settings):
    settings.CALLBACKS_ALLOW_PRIVATE = False
    endpoint = WebhookEndpoint.objects.create(
        merchant=acme, url="http://0x7f000001:9/hooks", secret="whsec_" + "A" * 32
    )
    make_invoice(acme, issue=True)
    callbacks_deliver_due()
    attempt = CallbackDelivery.objects.get(endpoint=endpoint).log.get()
    assert attempt.status_code is None
    assert "loopback" in attempt.error


def _deliver_in_child(delivery_id: int) -> None:
    connections.close_all()  # the parent's connection must not be shared across fork
    callback_deliver(delivery_id=delivery_id)
    os._exit(0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_worker_killed_during_delivery_leads_to_redelivery_not_loss(acme, receiver):
    require_postgres()
    r = receiver((200, "slow", {}, 30), (200, "ok", {}, 0))
    endpoint = _endpoint(acme, r.url)
    # Written directly: an outbox row made by an event would also be sent on commit, here in
    # this process, and the point is the worker's death.
    delivery = CallbackDelivery.objects.create(
        merchant=acme,
        endpoint=endpoint,
        url=r.url,
        event_type="invoice.paid",
        message_id="msg_killed",
        payload='{"type":"invoice.paid","data":{}}',
        next_attempt_at=timezone.now(),
    )
    connections.close_all()

    worker = multiprocessing.get_context("fork").Process(
        target=_deliver_in_child, args=(delivery.pk,)
    )
    worker.start()
    assert r.arrived.wait(15), "the worker never reached the receiver"
    os.kill(worker.pid, signal.SIGKILL)
    worker.join(5)

    delivery.refresh_from_db()
    assert delivery.status == CallbackStatus.PENDING
    assert delivery.attempts == 1
    assert delivery.leased_until is not None
    assert delivery.log.count() == 0
    # Its lease still runs: nobody else takes it yet. Once it has run out, the sweep does.
    assert callbacks_due(now=timezone.now()) == []
    later = delivery.leased_until + timedelta(seconds=1)
    assert callbacks_due(now=later) == [delivery.pk]
    assert callbacks_deliver_due(now=later) == 1

    delivery.refresh_from_db()
    assert delivery.status == CallbackStatus.DELIVERED
    assert len(r.requests) == 2
    assert r.webhook_ids()[0] == r.webhook_ids()[1]


@pytest.fixture
def broker_queue():
    """The configured broker's queue for callback tasks, emptied; tasks are really sent to it
    (not run inline) and no worker takes them. Yields a function that counts its messages."""
    from config.celery import app
    from invoices.tasks import callback_deliver as task

    if os.environ.get("CI"):
        assert app.conf.broker_url.startswith("redis://"), "CI runs the broker on Redis"
    name = app.amqp.router.route({}, task.name)["queue"].name

    def count() -> int:
        with app.connection_for_write() as connection:
            return connection.default_channel.queue_declare(queue=name).message_count

    def purge() -> None:
        with app.connection_for_write() as connection:
            connection.default_channel.queue_declare(queue=name)
            connection.default_channel.queue_purge(name)

    purge()
    app.conf.task_always_eager = False
    try:
        yield count
    finally:
        app.conf.task_always_eager = True
        purge()


@pytest.mark.django_db(transaction=True)
def test_sweep_never_requeues_a_delivery_whose_task_waits_on_the_broker(
    acme, broker_queue, settings
):
    from invoices.tasks import callbacks_sweep

    endpoint = _endpoint(acme, "https://hooks.acme.example/in")
    with transaction.atomic():
        delivery = callback_test_send(endpoint=endpoint)
    assert broker_queue() == 1  # queued on commit

    for _ in range(5):
        callbacks_sweep()  # beat's tick, while the task still waits for a worker
    assert broker_queue() == 1

    # Lost with a broker restart, say: after CALLBACK_REQUEUE_SECONDS it is queued again, once.
    delivery.refresh_from_db()
    later = delivery.queued_at + timedelta(seconds=settings.CALLBACK_REQUEUE_SECONDS + 1)
    assert callbacks_queue_due(now=later) == [delivery.pk]
    assert callbacks_queue_due(now=later) == []
    assert broker_queue() == 2


@pytest.mark.django_db(transaction=True)
def test_sweep_leaves_a_leased_delivery_to_its_worker(acme, broker_queue):
    endpoint = _endpoint(acme, "https://hooks.acme.example/in")
    with transaction.atomic():
        delivery = callback_test_send(endpoint=endpoint)
    now = timezone.now()
    # A worker took it up (out of the broker) and is still within its lease.
    CallbackDelivery.objects.filter(pk=delivery.pk).update(
        queued_at=None, leased_until=now + timedelta(seconds=60)
    )
    assert callbacks_queue_due(now=now + timedelta(seconds=30)) == []
    assert broker_queue() == 1
    # Its worker died: once the lease has run out, the sweep queues it.
    assert callbacks_queue_due(now=now + timedelta(seconds=61)) == [delivery.pk]
    assert broker_queue() == 2


@pytest.mark.django_db(transaction=True)
def test_a_failed_attempt_is_queued_again_once_when_its_retry_comes_due(
    acme, receiver, broker_queue
):
    r = receiver((500, "down", {}, 0), (200, "ok", {}, 0))
    endpoint = _endpoint(acme, r.url)
    with transaction.atomic():
        delivery = callback_test_send(endpoint=endpoint)
    assert broker_queue() == 1
    attempt = callback_deliver(delivery_id=delivery.pk)  # what the worker does with the task
    assert attempt is not None and attempt.status_code == 500
    delivery.refresh_from_db()
    assert delivery.queued_at is None

    assert callbacks_queue_due(now=delivery.next_attempt_at - timedelta(seconds=1)) == []
    due = delivery.next_attempt_at + timedelta(seconds=1)
    assert [callbacks_queue_due(now=due) for _ in range(3)] == [[delivery.pk], [], []]
    assert broker_queue() == 2
    assert callback_deliver(delivery_id=delivery.pk, now=due) is not None
    delivery.refresh_from_db()
    assert delivery.status == CallbackStatus.DELIVERED
    assert len(r.requests) == 2


def test_invoice_credited_callback_carries_the_credit_note_and_verifies(
    acme, acme_customer, receiver
):
    r = receiver()
    endpoint = _endpoint(acme, r.url, events=["invoice.credited"])
    invoice = make_invoice(
        acme,
        customer=acme_customer,
        issue=True,
        items=[("Seats", "5", "19.99")],
        foreign_id="ord-9",
        tracking_id="trk-1",
    )

    with transaction.atomic():
        note = credit_note_issue(
            invoice=invoice, reason="2 seats returned", quantities={1: Decimal(2)}
        )
        # Written in the credit note's transaction, before it commits.
        assert CallbackDelivery.objects.filter(event_type="invoice.credited").count() == 1
    assert callbacks_deliver_due() == 1

    request = r.requests[0]
    payload = Webhook(endpoint.secret).verify(request["body"], _headers(request))
    assert payload["type"] == "invoice.credited"
    assert (payload["data"]["foreign_id"], payload["data"]["tracking_id"]) == ("ord-9", "trk-1")
    assert payload["data"]["invoice"]["status"] == "open"
    assert payload["data"]["credit_note"] == {
        "id": note.pk,
        "reference": "CN-00001",
        "amount": "39.98",
        "tax": "0.00",
        "reason": "2 seats returned",
        "lines": [
            {
                "position": 1,
                "name": "Seats",
                "quantity": "2",
                "of_quantity": "5",
                "amount": "39.98",
                "tax": "0.00",
            }
        ],
        "refund": None,
        "created_at": note.created_at.isoformat(),
        "full": False,
    }
    assert payload["data"]["invoice"]["credit_notes"][0]["reference"] == "CN-00001"


def test_a_failed_credit_note_writes_no_callback(acme, receiver):
    _endpoint(acme, receiver().url)
    invoice = make_invoice(acme, issue=True)
    CallbackDelivery.objects.all().delete()

    with pytest.raises(ValidationError):
        credit_note_issue(invoice=invoice, reason="Too much", quantities={1: Decimal(3)})

    assert not CallbackDelivery.objects.exists()
