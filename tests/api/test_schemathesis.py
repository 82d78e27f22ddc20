"""Property-based fuzzing of every API operation with Schemathesis and all its checks (the
CLI's `--checks all`): no 5xx, every status and body as documented, every
request the schema rules out refused.

The schema is the one the app serves at /api/openapi.json; requests go to the WSGI application
in-process, authenticated with a fresh Acme key. Half of the generated ids are swapped for
real Acme objects, so the handlers behind the 404 are fuzzed too.

The two server errors it found (NUL characters reaching PostgreSQL, ids beyond 64 bits
reaching SQLite) are fixed and kept fixed by tests in tests/api/test_api.py ("Found by
fuzzing"); nothing is excluded from the fuzzing here. The run takes the repository's
schemathesis.toml, as the CLI does: creating or changing an invoice's lines may answer a
schema-valid request 422 for the multi-field rules it lists, and each such 422 here must name
one of them (`assert_only_multi_field_rules`).
"""

import re
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from checkout.models import RefundKind
from checkout.refunds import refund_give_address, refund_request
from config.wsgi import application
from invoices.models import InvoiceKind
from merchants.integrations import api_key_create
from tests.factories import make_invoice, make_paid_payment

PAYER = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"

CONFIG = Path(__file__).resolve().parents[2] / "schemathesis.toml"
schema = schemathesis.openapi.from_wsgi(
    "/api/openapi.json", application, config=SchemathesisConfig.from_path(str(CONFIG))
)

# The rules over several fields that schemathesis.toml lets POST and PATCH /invoices and the
# refund request refuse with 422 (invoices.rules, invoices.services and checkout.refunds word
# them so).
MULTI_FIELD_RULES = re.compile(
    r"The discount may be at most .+\.|The (?:invoice total|subtotal) may be at most .+\."
    r"|Quantity times price may be at most .+\."
    r"|[A-Z]{3,4} amounts have at most \d decimals\.|A one-time invoice needs a positive total\."
    r"|Add at least one priced line item before issuing the invoice\."
    r"|A pre-selected currency needs exactly one accepted asset\."
    r"|[A-Z0-9.]+ has \d+ decimals at most\."
)


def assert_only_multi_field_rules(case, response) -> None:
    generated = case.meta.generation.mode if case.meta else None
    if response.status_code != 422 or generated is None or not generated.is_positive:
        return
    messages = [m for ms in response.json()["fields"].values() for m in ms]
    others = [m for m in messages if not MULTI_FIELD_RULES.fullmatch(m)]
    assert not others, f"{case.method} {case.path} refused {case.body!r}: {others}"


@pytest.fixture
def acme_world(settings, acme, alice, acme_customer):
    settings.API_RATE_PER_MINUTE = 1_000_000  # fuzzing, not rate limiting
    paid = make_invoice(acme, issue=True)  # no customer: no receipt email (a PDF) at each setup
    payment = make_paid_payment(paid, 300 * 10**6)
    refund = refund_request(payment=payment, kind=RefundKind.MANUAL, reason="Returned")
    refund_give_address(refund=refund, address=PAYER, again=PAYER, no_memo_needed=True)
    return {
        "key": api_key_create(merchant=acme, name="Fuzzer", by=alice).plaintext,
        "invoice_id": make_invoice(acme, customer=acme_customer, issue=True).pk,
        "permanent_id": make_invoice(acme, issue=True, kind=InvoiceKind.PERMANENT).pk,
        "paid_id": paid.pk,
        "customer_id": acme_customer.pk,
        "refund_id": refund.pk,
    }


def _real(name: str, path: str) -> str:
    if name == "invoice_id" and path.endswith("/close"):
        return "permanent_id"
    if name == "invoice_id" and path.endswith("/refunds"):
        return "paid_id"  # an invoice with money to refund
    return name


def _point_at_real_objects(case, world) -> None:
    parameters = case.path_parameters or {}
    for name in ("invoice_id", "customer_id", "refund_id"):
        value = parameters.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value % 2 == 0:
            parameters[name] = world[_real(name, case.path)]


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_operation_answers_a_server_error(case, acme_world):
    _point_at_real_objects(case, acme_world)

    # Every check Schemathesis has, as `--checks all` runs them: conformance of statuses,
    # content types, headers and bodies; auth; every request the schema rules out refused,
    # unknown query parameters included; every request it allows taken (or answered 404 or
    # 409 where it names what is not there or conflicts with what is stored; 422 only as
    # schemathesis.toml allows).
    response = case.call_and_validate(headers={"Authorization": f"Bearer {acme_world['key']}"})
    assert_only_multi_field_rules(case, response)
