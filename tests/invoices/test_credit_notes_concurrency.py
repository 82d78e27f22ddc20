"""Credit notes racing for the same units, each on its own PostgreSQL connection: what is
left of a line is read under the invoice's lock, so the second note sees the first."""

import threading
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from invoices.models import CreditNote
from invoices.services import credit_note_issue
from tests.conftest import require_postgres
from tests.factories import MerchantFactory, make_invoice

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 4


def _race(target) -> list[BaseException]:
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            target()
        except BaseException as error:  # collected and asserted on by the test
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_credit_notes_racing_for_the_same_units_credit_them_once():
    require_postgres()
    merchant = MerchantFactory()
    invoice = make_invoice(merchant, issue=True, items=[("Seats", "5", "19.99")])

    def credit_three() -> None:
        credit_note_issue(invoice=invoice, reason="Returned", quantities={1: Decimal(3)})

    errors = _race(credit_three)

    notes = list(CreditNote.objects.filter(invoice=invoice))
    assert [(note.amount, note.lines[0]["quantity"]) for note in notes] == [(Decimal("59.97"), "3")]
    assert len(errors) == THREADS - 1
    assert all(isinstance(error, ValidationError) for error in errors)
    assert {tuple(error.message_dict["lines.1.quantity"]) for error in errors} == {
        ("At most 2 of this line is left to credit.",)
    }
    merchant.refresh_from_db()
    assert merchant.next_credit_note_number == 2  # the losers burnt no number
