"""Settings lists cost the same number of queries however many rows they show."""

from decimal import Decimal

import pytest
from django.test import override_settings
from django.urls import reverse

from invoices.models import TaxRate
from merchants.integrations import api_key_create, webhook_endpoint_create
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def _rows(kind: str, merchant, n: int) -> None:
    for i in range(n):
        if kind == "member_list":
            MembershipFactory(merchant=merchant)
        elif kind == "api_key_list":
            api_key_create(merchant=merchant, name=f"Key {i}", by=None)
        elif kind == "webhook_list":
            webhook_endpoint_create(merchant=merchant, url=f"https://hooks{i}.example/in")
        elif kind == "tax_rate_list":
            TaxRate.objects.create(merchant=merchant, name=f"Tax {i}", percent=Decimal(i + 1))


@pytest.mark.parametrize("n", [1, 12])
@pytest.mark.parametrize(
    ("view", "queries"),
    # Each: session, user, membership (which reads the business switcher's businesses too),
    # the rows; the webhooks page reads more besides its endpoints, in a number of queries
    # that is fixed all the same.
    [("member_list", 4), ("api_key_list", 4), ("webhook_list", 9), ("tax_rate_list", 4)],
)
@override_settings(CALLBACK_ALLOW_PRIVATE=True)
def test_settings_list_query_count_does_not_grow_with_rows(
    client_for, alice, acme, django_assert_num_queries, view, queries, n
):
    _rows(view, acme, n)
    client = client_for(alice)
    with django_assert_num_queries(queries):
        assert client.get(reverse(view)).status_code == 200
