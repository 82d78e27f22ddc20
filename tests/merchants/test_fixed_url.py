"""{% fixed_url %}: the URLs {% url %} writes, reversed once and reused."""

import pytest
from django.template import engines
from django.urls import reverse, set_script_prefix


def render(text: str, **context) -> str:
    return engines["django"].from_string("{% load stablebill %}" + text).render(context)


@pytest.fixture
def script_prefix():
    yield set_script_prefix
    set_script_prefix("/")


@pytest.mark.parametrize("pk", [1, 7, 123456])
def test_fixed_url_writes_what_url_writes(pk):
    assert render("{% fixed_url 'dashboard' %}") == reverse("dashboard")
    assert render("{% fixed_url 'invoice_detail' pk %}", pk=pk) == reverse(
        "invoice_detail", args=[pk]
    )
    assert render("{% fixed_url 'invoice_detail' pk %}", pk=pk) == render(
        "{% url 'invoice_detail' pk %}", pk=pk
    )


def test_fixed_url_follows_the_script_prefix(script_prefix):
    assert render("{% fixed_url 'invoice_list' %}") == "/invoices/"
    script_prefix("/billing/")
    assert render("{% fixed_url 'invoice_list' %}") == "/billing/invoices/"
    assert render("{% fixed_url 'invoice_detail' 5 %}") == "/billing/invoices/5/"


def test_fixed_url_reverses_other_arguments_as_url_does():
    assert render("{% fixed_url 'invoice_detail' '42' %}") == "/invoices/42/"
