import re

import pytest
from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from customers.models import Customer
from tests.factories import CustomerFactory

DUPLICATE = "A customer with this email already exists."


def _messages(response) -> list[str]:
    return [message.message for message in get_messages(response.wsgi_request)]


def _names(response) -> list[str]:
    return [customer.name for customer in response.context["page"].object_list]


# List -----------------------------------------------------------------------------------------


@pytest.fixture
def people(acme, globex):
    CustomerFactory(merchant=acme, name="Ada Lovelace", email="ada@example.org", company="Engines")
    CustomerFactory(merchant=acme, name="Grace Hopper", email="grace@navy.example", company="Navy")
    CustomerFactory(merchant=acme, name="Alan Turing", email="alan@bletchley.example", company="")
    CustomerFactory(
        merchant=acme, name="Old Client", email="old@example.org", archived_at=timezone.now()
    )
    CustomerFactory(merchant=globex, name="Ada Globex", email="ada@globex.example")


def test_list_shows_active_customers_of_own_merchant_by_name(client_for, victor, people):
    response = client_for(victor).get(reverse("customer_list"))
    assert response.status_code == 200
    assert _names(response) == ["Ada Lovelace", "Alan Turing", "Grace Hopper"]


def test_list_shows_archived_when_asked(client_for, alice, people):
    response = client_for(alice).get(reverse("customer_list"), {"archived": "1"})
    assert _names(response) == ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Old Client"]
    assert b'<span class="tag">Archived</span>' in response.content


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("ada", ["Ada Lovelace"]),
        ("  HOPPER ", ["Grace Hopper"]),
        ("bletchley", ["Alan Turing"]),
        ("navy", ["Grace Hopper"]),
        ("example.org", ["Ada Lovelace"]),
        ("old", []),
        ("zzz", []),
    ],
)
def test_list_search_matches_name_email_and_company(client_for, alice, people, query, expected):
    response = client_for(alice).get(reverse("customer_list"), {"q": query})
    assert _names(response) == expected


def test_list_search_reports_no_match(client_for, alice, people):
    response = client_for(alice).get(reverse("customer_list"), {"q": "zzz"})
    assert "No customer matches “zzz”" in response.content.decode()


def test_list_paginates_25_a_page(client_for, alice, acme):
    for n in range(30):
        CustomerFactory(merchant=acme, name=f"Customer {n:02d}")
    client = client_for(alice)

    first = client.get(reverse("customer_list"))
    second = client.get(reverse("customer_list"), {"page": "2"})

    assert _names(first) == [f"Customer {n:02d}" for n in range(25)]
    assert _names(second) == [f"Customer {n:02d}" for n in range(25, 30)]
    assert first.context["page"].paginator.num_pages == 2
    assert b'href="?page=2"' in first.content


def test_list_page_links_keep_the_search(client_for, alice, acme):
    for n in range(26):
        CustomerFactory(merchant=acme, name=f"Buyer {n:02d}")
    response = client_for(alice).get(reverse("customer_list"), {"q": "buyer"})
    assert b'href="?q=buyer&amp;page=2"' in response.content


def test_list_htmx_request_gets_only_the_results_fragment(client_for, alice, people):
    client = client_for(alice)
    full = client.get(reverse("customer_list"), {"q": "grace"})
    partial = client.get(reverse("customer_list"), {"q": "grace"}, headers={"HX-Request": "true"})

    assert b"<html" in full.content
    body = partial.content.decode().strip()
    assert partial.status_code == 200
    assert body.startswith('<div id="results">')
    assert "<html" not in body
    assert "Grace Hopper" in body
    assert "Ada Lovelace" not in body
    for response in (full, partial):
        assert "HX-Request" in [part.strip() for part in response["Vary"].split(",")]


# Create and edit ------------------------------------------------------------------------------


def test_create_customer(client_for, bob, acme):
    response = client_for(bob).post(
        reverse("customer_new"),
        {
            "name": "  Katherine Johnson ",
            "email": " Katherine@NASA.example ",
            "company": "NASA",
            "address_line1": "1 NASA Drive",
            "address_line2": "Building 4",
            "city": "Hampton",
            "postal_code": "23681",
            "region": "Virginia",
            "country": "US",
            "tax_id": "US-1",
            "notes": "Prefers USDC",
        },
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("customer_list")
    customer = Customer.objects.get()
    assert (
        customer.merchant,
        customer.name,
        customer.email,
        customer.company,
        customer.address_lines,
        customer.tax_id,
        customer.notes,
        customer.archived_at,
    ) == (
        acme,
        "Katherine Johnson",
        "katherine@nasa.example",
        "NASA",
        ["1 NASA Drive", "Building 4", "Hampton, Virginia 23681", "United States of America"],
        "US-1",
        "Prefers USDC",
        None,
    )
    assert _messages(response) == ["Katherine Johnson was added."]


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"email": "x@example.org"}, "name", "This field is required."),
        ({"name": "X"}, "email", "This field is required."),
        ({"name": "X", "email": "not-an-email"}, "email", "Enter a valid email address."),
    ],
)
def test_create_customer_refuses_missing_or_bad_fields(client_for, alice, data, field, message):
    response = client_for(alice).post(reverse("customer_new"), data)
    assert response.status_code == 200
    assert response.context["form"].errors[field] == [message]
    assert Customer.objects.count() == 0


@pytest.mark.parametrize("email", ["ada@example.org", "ADA@Example.ORG", " Ada@example.org "])
def test_duplicate_email_at_same_merchant_is_refused_ignoring_case(
    client_for, alice, acme_customer, email
):
    response = client_for(alice).post(reverse("customer_new"), {"name": "Ada Two", "email": email})

    assert response.status_code == 200
    assert response.context["form"].errors["email"] == [DUPLICATE]
    assert DUPLICATE.encode() in response.content
    assert list(Customer.objects.values_list("name", flat=True)) == ["Ada Lovelace"]


def test_same_email_is_allowed_at_another_merchant(client_for, charlie, acme_customer, globex):
    response = client_for(charlie).post(
        reverse("customer_new"), {"name": "Ada at Globex", "email": "Ada@example.org"}
    )
    assert response.status_code == 302
    assert Customer.objects.get(merchant=globex).email == "ada@example.org"
    assert Customer.objects.filter(email="ada@example.org").count() == 2


def test_edit_customer(client_for, bob, acme_customer):
    url = reverse("customer_edit", kwargs={"pk": acme_customer.pk})
    client = client_for(bob)
    assert client.get(url).context["form"].initial["email"] == "ada@example.org"

    response = client.post(
        url, {"name": "Augusta Ada King", "email": "ADA@analytical.example", "company": "Engines"}
    )

    assert response.status_code == 302
    assert _messages(response) == ["Customer saved."]
    acme_customer.refresh_from_db()
    assert (acme_customer.name, acme_customer.email, acme_customer.company) == (
        "Augusta Ada King",
        "ada@analytical.example",
        "Engines",
    )


def test_edit_keeping_own_email_is_fine(client_for, alice, acme_customer):
    response = client_for(alice).post(
        reverse("customer_edit", kwargs={"pk": acme_customer.pk}),
        {"name": "Ada L.", "email": "Ada@Example.org"},
    )
    assert response.status_code == 302
    assert Customer.objects.get(pk=acme_customer.pk).name == "Ada L."


def test_edit_to_another_customers_email_is_refused(client_for, alice, acme, acme_customer):
    grace = CustomerFactory(merchant=acme, name="Grace Hopper", email="grace@example.org")
    response = client_for(alice).post(
        reverse("customer_edit", kwargs={"pk": grace.pk}),
        {"name": "Grace H.", "email": "ADA@example.org"},
    )

    assert response.status_code == 200
    assert response.context["form"].errors["email"] == [DUPLICATE]
    grace.refresh_from_db()
    assert (grace.name, grace.email) == ("Grace Hopper", "grace@example.org")


def test_refused_edit_keeps_the_saved_name_in_the_heading(client_for, alice, acme, acme_customer):
    CustomerFactory(merchant=acme, email="grace@example.org")
    response = client_for(alice).post(
        reverse("customer_edit", kwargs={"pk": acme_customer.pk}),
        {"name": "Rejected Name", "email": "grace@example.org"},
    )

    body = response.content.decode()
    assert response.context["form"].errors["email"] == [DUPLICATE]
    assert "<h1>Ada Lovelace</h1>" in body
    assert "<title>Ada Lovelace · Stablebill</title>" in body
    assert 'value="Rejected Name"' in body


# Archive --------------------------------------------------------------------------------------


def test_archive_and_unarchive(client_for, bob, acme_customer):
    client = client_for(bob)
    url = reverse("customer_archive", kwargs={"pk": acme_customer.pk})

    archived = client.post(url)
    acme_customer.refresh_from_db()
    assert archived.status_code == 302
    assert archived["Location"] == reverse("customer_list")
    assert acme_customer.archived_at is not None
    assert _messages(archived) == ["Ada Lovelace was archived; their invoices stay."]
    assert _names(client.get(reverse("customer_list"))) == []
    assert (
        acme_customer
        not in client.get(reverse("invoice_new")).context["form"].fields["customer"].queryset
    )

    restored = client.post(url)
    acme_customer.refresh_from_db()
    assert acme_customer.archived_at is None
    assert _messages(restored) == ["Ada Lovelace is active again."]
    assert _names(client.get(reverse("customer_list"))) == ["Ada Lovelace"]


def test_archive_needs_post(client_for, alice, acme_customer):
    response = client_for(alice).get(reverse("customer_archive", kwargs={"pk": acme_customer.pk}))
    assert response.status_code == 405
    assert Customer.objects.get(pk=acme_customer.pk).archived_at is None


# Inline create from the invoice editor --------------------------------------------------------


def _inline(**fields) -> dict:
    return {f"new_customer-{key}": value for key, value in fields.items()}


def test_inline_create_returns_picker_with_new_customer_selected(
    client_for, bob, acme, acme_customer, globex
):
    CustomerFactory(merchant=globex, name="Not Mine")
    CustomerFactory(merchant=acme, name="Gone", archived_at=timezone.now())

    response = client_for(bob).post(
        reverse("customer_inline_new"),
        _inline(name="Charles Babbage", email="Charles@Engine.example", company="Difference"),
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 200
    assert response["HX-Trigger"] == "customer-created"
    created = Customer.objects.get(name="Charles Babbage")
    assert (created.merchant, created.email, created.company) == (
        acme,
        "charles@engine.example",
        "Difference",
    )
    body = response.content.decode()
    select = re.search(r'<select name="customer" id="id_customer"[^>]*>(.*?)</select>', body, re.S)
    assert select is not None
    assert 'hx-swap-oob="outerHTML"' in select.group(0)
    options = re.findall(r'<option value="(\d*)"\s*(selected)?>([^<]*)</option>', select.group(1))
    assert options == [
        ("", "", "No customer"),
        (str(acme_customer.pk), "", "Ada Lovelace — ada@example.org"),
        (str(created.pk), "selected", "Charles Babbage — charles@engine.example"),
    ]
    # A blank form replaces the filled one, ready for the next customer.
    assert 'id="customer-inline-form"' in body
    assert "Charles@Engine.example" not in body


def test_inline_create_errors_rerender_the_form_without_trigger(client_for, alice, acme_customer):
    response = client_for(alice).post(
        reverse("customer_inline_new"),
        _inline(name="", email="not-an-email"),
        headers={"HX-Request": "true"},
    )

    assert response.status_code == 200
    assert "HX-Trigger" not in response
    form = response.context["form"]
    assert form.errors == {
        "name": ["This field is required."],
        "email": ["Enter a valid email address."],
    }
    body = response.content.decode()
    assert body.strip().startswith('<form id="customer-inline-form"')
    assert 'value="not-an-email"' in body
    assert "This field is required." in body
    assert "<select" not in body
    assert Customer.objects.count() == 1


def test_inline_create_duplicate_email_is_a_field_error(client_for, alice, acme_customer):
    response = client_for(alice).post(
        reverse("customer_inline_new"), _inline(name="Ada Again", email="ADA@example.org")
    )
    assert "HX-Trigger" not in response
    assert response.context["form"].errors["email"] == [DUPLICATE]
    assert DUPLICATE.encode() in response.content
    assert Customer.objects.count() == 1
