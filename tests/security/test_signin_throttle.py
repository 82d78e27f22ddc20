"""Brute force and email floods, tried from outside with the test client."""

import pytest
from django.test import Client
from django.urls import reverse

from merchants.models import User
from tests.factories import PASSWORD, UserFactory

LOCKED = (
    "Too many failed sign-ins. Try again in 15 minutes, or use “Forgot your password?” "
    "to sign in at once."
)


def _sign_in(client: Client, email: str, password: str, ip: str = "203.0.113.7"):
    return client.post(
        reverse("account_login"), {"login": email, "password": password}, REMOTE_ADDR=ip
    )


def _errors(response) -> list[str]:
    return list(response.context["form"].non_field_errors())


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_30_wrong_passwords_from_many_addresses_lock_the_account_and_the_right_one_is_refused(
    client, alice
):
    for attempt in range(30):
        response = _sign_in(
            client, "alice@acme.test", f"guess-{attempt}", ip=f"198.51.100.{attempt}"
        )
        assert response.status_code == 200
    assert _errors(response) == [LOCKED]

    right = _sign_in(client, "alice@acme.test", PASSWORD, ip="192.0.2.99")

    assert right.status_code == 200
    assert _errors(right) == [LOCKED]
    assert not _signed_in(client)


def test_the_account_lock_starts_after_five_failures(client, alice):
    for attempt in range(4):
        _sign_in(client, "alice@acme.test", f"guess-{attempt}", ip=f"198.51.100.{attempt}")
    # Four failures: the right password still works.
    assert _sign_in(client, "alice@acme.test", PASSWORD).status_code == 302


def test_other_accounts_are_not_locked_by_attacks_on_one(client, alice, bob):
    for attempt in range(30):
        _sign_in(client, "alice@acme.test", f"guess-{attempt}", ip=f"198.51.100.{attempt}")
    assert _sign_in(Client(), "bob@acme.test", PASSWORD, ip="192.0.2.50").status_code == 302


def test_one_address_trying_many_accounts_is_throttled(client, db):
    people = [UserFactory(email=f"p{i}@example.com") for i in range(11)]
    for person in people[:10]:
        response = _sign_in(client, person.email, "wrong-password")
        assert response.status_code == 200
        assert _errors(response) != [LOCKED]

    # The eleventh account from the same address: refused although the password is right.
    blocked = _sign_in(client, people[10].email, PASSWORD)
    assert blocked.status_code == 200
    assert _errors(blocked) == [LOCKED]
    # The same person from their own address is fine.
    assert _sign_in(Client(), people[10].email, PASSWORD, ip="192.0.2.1").status_code == 302


def test_a_password_reset_lifts_the_lock(client, alice, mailoutbox):
    for attempt in range(6):
        _sign_in(client, "alice@acme.test", f"guess-{attempt}", ip=f"198.51.100.{attempt}")
    assert _errors(_sign_in(client, "alice@acme.test", PASSWORD)) == [LOCKED]

    client.post(reverse("account_reset_password"), {"email": "alice@acme.test"})
    link = mailoutbox[-1].body.split("http://testserver", 1)[1].split()[0]
    landing = client.get(link)
    client.post(
        landing["Location"], {"password1": "new-lantern-42x", "password2": "new-lantern-42x"}
    )

    assert _sign_in(Client(), "alice@acme.test", "new-lantern-42x").status_code == 302


def test_an_admin_can_unlock_an_account(client, alice, admin_client):
    for attempt in range(6):
        _sign_in(client, "alice@acme.test", f"guess-{attempt}", ip=f"198.51.100.{attempt}")
    assert _errors(_sign_in(client, "alice@acme.test", PASSWORD)) == [LOCKED]

    response = admin_client.post(
        reverse("admin:merchants_user_changelist"),
        {"action": "unlock_sign_in", "_selected_action": [alice.pk]},
    )
    assert response.status_code == 302

    assert _sign_in(Client(), "alice@acme.test", PASSWORD).status_code == 302


def test_the_lock_ends_after_the_cool_down(client, alice, settings):
    # A one-second window stands in for the real quarter of an hour.
    settings.ACCOUNT_RATE_LIMITS = {
        **settings.ACCOUNT_RATE_LIMITS,
        "login_failed": "10/m/ip,5/1s/key",
    }
    for attempt in range(6):
        _sign_in(client, "alice@acme.test", f"guess-{attempt}", ip=f"198.51.100.{attempt}")
    assert _errors(_sign_in(client, "alice@acme.test", PASSWORD, ip="192.0.2.9")) != []

    import time

    time.sleep(1.1)
    assert _sign_in(client, "alice@acme.test", PASSWORD, ip="192.0.2.9").status_code == 302


def test_the_admin_login_is_the_throttled_sign_in(client, alice):
    alice.is_staff = True
    alice.save(update_fields=["is_staff"])

    page = client.get("/admin/login/?next=/admin/")
    assert page.status_code == 302
    assert page["Location"] == "/login/?next=%2Fadmin%2F"
    # The admin's own form does not sign anyone in.
    posted = client.post("/admin/login/", {"username": "alice@acme.test", "password": PASSWORD})
    assert posted.status_code == 302
    assert not _signed_in(client)

    for attempt in range(6):
        _sign_in(client, "alice@acme.test", f"guess-{attempt}", ip=f"198.51.100.{attempt}")
    assert _errors(_sign_in(client, "alice@acme.test", PASSWORD)) == [LOCKED]


def test_admin_login_refuses_a_redirect_to_another_site(client, db):
    page = client.get("/admin/login/?next=https://evil.example/")
    assert page["Location"] == "/login/?next=%2Fadmin%2F"


def test_ten_reset_requests_send_three_emails(client, alice, mailoutbox):
    for _ in range(10):
        response = client.post(reverse("account_reset_password"), {"email": "alice@acme.test"})
        assert response.status_code in (302, 429)
    assert len(mailoutbox) == 3
    assert {m.to[0] for m in mailoutbox} == {"alice@acme.test"}


def test_reset_requests_from_one_address_are_limited_across_accounts(client, db, mailoutbox):
    people = [UserFactory(email=f"r{i}@example.com") for i in range(25)]
    answers = [
        client.post(reverse("account_reset_password"), {"email": p.email}).status_code
        for p in people
    ]
    assert len(mailoutbox) == 20
    assert answers[20:] == [429] * 5


def test_refused_reset_floods_get_a_clear_page(client, alice):
    for _ in range(25):
        response = client.post(reverse("account_reset_password"), {"email": "x@example.com"})
    assert response.status_code == 429
    assert b"Too many attempts" in response.content


def test_verification_emails_are_limited_per_address(client, db, mailoutbox):
    client.post(
        reverse("account_signup"),
        {
            "full_name": "Dana Scully",
            "email": "dana@fbi.example",
            "business_name": "X Files",
            "password1": "violet-lantern-orbit-42",
        },
    )
    assert len(mailoutbox) == 1
    for _ in range(5):
        Client().post(
            reverse("account_login"),
            {"login": "dana@fbi.example", "password": "violet-lantern-orbit-42"},
        )
    assert len(mailoutbox) == 1
    assert User.objects.get().emailaddress_set.get().verified is False


@pytest.mark.parametrize("path", ["/login/", "/password/reset/", "/signup/"])
def test_sign_in_pages_are_not_cached(client, db, path):
    assert "no-store" in client.get(path)["Cache-Control"]
