"""Changes that move money need a recent sign-in (and the second factor when there is one),
and every owner is emailed what changed, by whom and from where."""

import pytest
from django.test import Client
from django.urls import reverse

from merchants.models import ApiKey, SecurityEvent, WebhookEndpoint
from tests.security.conftest import activate_totp, sign_in, totp_code
from tests.wallets.test_addresses import ABANDON_XPUB
from wallets.models import Wallet


def _age_sign_in(client: Client, minutes: int) -> None:
    """Move the session's sign-in records into the past, as if the person had signed in
    that long ago (the server keeps them in the session; nothing else is touched)."""
    session = client.session
    for record in session["account_authentication_methods"]:
        record["at"] -= minutes * 60
    session.save()


@pytest.fixture
def owner(client_for, alice, bob):
    """Alice signed in long ago; Bob is her teammate (staff)."""
    client = client_for(alice)
    _age_sign_in(client, 10)
    return client


def test_a_stale_sign_in_is_sent_to_re_authenticate_and_nothing_changes(owner, acme):
    response = owner.post(
        reverse("wallet_settings"), {"xpub": ABANDON_XPUB}, REMOTE_ADDR="10.1.1.1"
    )

    assert response.status_code == 302
    assert response["Location"] == "/reauthenticate/?next=%2Fwallet%2F"
    assert not Wallet.objects.filter(merchant=acme).exists()
    assert SecurityEvent.objects.filter(kind="money").count() == 0


def test_a_wrong_password_at_re_authentication_is_refused(owner, acme):
    owner.post(reverse("wallet_settings"), {"xpub": ABANDON_XPUB})
    response = owner.post(
        "/reauthenticate/?next=/wallet/", {"password": "not-it", "next": "/wallet/"}
    )

    assert response.status_code == 200
    assert response.context["form"].errors["password"] == ["Incorrect password."]
    assert not Wallet.objects.filter(merchant=acme).exists()


def test_re_authentication_replays_the_change_and_emails_every_owner(
    owner, acme, alice, bob, mailoutbox, django_capture_on_commit_callbacks
):
    bob_membership = bob.memberships.get()
    bob_membership.role = "owner"
    bob_membership.save()
    owner.post(reverse("wallet_settings"), {"xpub": ABANDON_XPUB}, REMOTE_ADDR="10.1.1.1")

    with django_capture_on_commit_callbacks(execute=True):
        done = owner.post(
            "/reauthenticate/?next=/wallet/",
            {"password": "correct-horse-battery-staple", "next": "/wallet/"},
            REMOTE_ADDR="10.1.1.1",
            HTTP_USER_AGENT="Firefox/140",
        )

    assert done.status_code == 302
    assert done["Location"] == reverse("wallet_settings")
    assert Wallet.objects.get(merchant=acme).xpub == ABANDON_XPUB
    event = SecurityEvent.objects.get(kind="money")
    assert (event.merchant, event.user, event.summary, event.ip) == (
        acme,
        alice,
        "Wallet key changed",
        "10.1.1.1",
    )
    assert event.detail == f"xpub: {ABANDON_XPUB[:120]}"
    assert sorted(m.to[0] for m in mailoutbox) == ["alice@acme.test", "bob@acme.test"]
    notice = mailoutbox[0]
    assert notice.subject == "Stablebill: Wallet key changed at Acme Tools"
    assert "By:    " in notice.body and "<alice@acme.test>" in notice.body
    assert "From:  10.1.1.1, Firefox/140" in notice.body
    assert "http://testserver/settings/security/" in notice.body


def test_a_fresh_sign_in_counts_as_recent(
    client_for, alice, acme, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(reverse("api_key_list"), {"name": "Shop"})
    assert response.status_code == 200
    assert ApiKey.objects.filter(merchant=acme, name="Shop").count() == 1
    event = SecurityEvent.objects.get(kind="money")
    assert event.summary == "API key created"
    assert event.detail.startswith("name: Shop, sb_")
    assert [m.to for m in mailoutbox] == [["alice@acme.test"]]


@pytest.mark.parametrize(
    ("url_name", "data"),
    [
        ("api_key_list", {"name": "Shop"}),
        ("member_list", {"email": "eve@example.com", "role": "owner"}),
        ("webhook_list", {"url": "https://erp.example/hooks", "enabled": "on"}),
        ("invoice_signer_rotate", {}),
        ("security_log", {"require_two_factor": "on"}),
    ],
)
def test_every_money_change_needs_re_authentication(owner, acme, url_name, data):
    before = (
        ApiKey.objects.count(),
        acme.memberships.count(),
        WebhookEndpoint.objects.count(),
        acme.require_two_factor,
    )
    response = owner.post(reverse(url_name), data)
    assert response.status_code == 302
    assert response["Location"].startswith("/reauthenticate/?next=")
    acme.refresh_from_db()
    assert before == (
        ApiKey.objects.count(),
        acme.memberships.count(),
        WebhookEndpoint.objects.count(),
        acme.require_two_factor,
    )


def test_member_role_changes_and_key_revocation_need_re_authentication(owner, acme, bob, alice):
    from merchants.integrations import api_key_create

    key = api_key_create(merchant=acme, name="ERP", by=alice).key
    membership = bob.memberships.get()
    for url in (
        reverse("member_update", kwargs={"pk": membership.pk}),
        reverse("api_key_revoke", kwargs={"pk": key.pk}),
    ):
        response = owner.post(url, {"role": "owner"})
        assert response["Location"].startswith("/reauthenticate/?next=")
    membership.refresh_from_db()
    key.refresh_from_db()
    assert (membership.role, key.revoked_at) == ("staff", None)


def test_pages_still_open_without_re_authentication(owner):
    for name in ("wallet_settings", "api_key_list", "member_list", "webhook_list", "security_log"):
        assert owner.get(reverse(name)).status_code == 200, name


def test_with_two_factor_the_password_alone_does_not_re_authenticate(client_for, alice, acme):
    client = client_for(alice)
    secret, _ = activate_totp(client)
    _age_sign_in(client, 10)

    client.post(reverse("wallet_settings"), {"xpub": ABANDON_XPUB})
    after_password = client.post(
        "/reauthenticate/?next=/wallet/",
        {"password": "correct-horse-battery-staple", "next": "/wallet/"},
    )
    # The password is right, but the change waits for the second factor.
    assert after_password.status_code == 302
    assert after_password["Location"] == "/2fa/reauthenticate/?next=%2Fwallet%2F"
    assert not Wallet.objects.filter(merchant=acme).exists()

    wrong = client.post(
        "/2fa/reauthenticate/?next=/wallet/", {"code": "000000", "next": "/wallet/"}
    )
    assert wrong.status_code == 200
    assert not Wallet.objects.filter(merchant=acme).exists()

    done = client.post(
        "/2fa/reauthenticate/?next=/wallet/", {"code": totp_code(secret), "next": "/wallet/"}
    )
    assert done.status_code == 302
    assert Wallet.objects.get(merchant=acme).xpub == ABANDON_XPUB


def test_a_forged_next_after_re_authentication_goes_nowhere_else(owner, acme):
    owner.post(reverse("wallet_settings"), {"xpub": ABANDON_XPUB})
    done = owner.post(
        "/reauthenticate/?next=https://evil.example/",
        {"password": "correct-horse-battery-staple", "next": "https://evil.example/"},
    )
    assert not done["Location"].startswith("https://evil.example")
    # The parked change belonged to another URL: it is not replayed.
    assert not Wallet.objects.filter(merchant=acme).exists()


def test_a_session_of_another_person_does_not_count(client_for, alice, bob, acme):
    """The sign-in records are tied to the user they were made for."""
    client = client_for(alice)
    session = client.session
    session["account_authentication_methods_user"] = str(bob.pk)
    session.save()
    response = client.post(reverse("api_key_list"), {"name": "Shop"})
    assert response["Location"].startswith("/reauthenticate/")
    assert not ApiKey.objects.exists()


def test_the_security_log_lists_sign_ins_failures_and_changes_for_owners_only(
    client, client_for, alice, bob, charlie, acme
):
    sign_in(Client(), "alice@acme.test", "wrong-guess")
    owner = client_for(alice)
    owner.post(reverse("api_key_list"), {"name": "Shop"})

    page = owner.get(reverse("security_log"))
    summaries = [(e.kind, e.summary) for e in page.context["events"]]
    assert ("money", "API key created") in summaries
    assert ("signin", "Signed in") in summaries
    assert ("signin_failed", "Wrong password") in summaries
    assert b"Wrong password" in page.content

    assert client_for(bob).get(reverse("security_log")).status_code == 403
    outsider = client_for(charlie).get(reverse("security_log"))
    assert all(e.user != alice for e in outsider.context["events"])


def test_api_key_use_from_a_new_address_is_logged_once_per_address(client, client_for, acme, alice):
    from merchants.integrations import api_key_create

    issued = api_key_create(merchant=acme, name="Shop", by=alice)
    headers = {"Authorization": f"Bearer {issued.plaintext}"}
    for ip in ("198.51.100.1", "198.51.100.1", "198.51.100.2", "198.51.100.1"):
        assert client.get("/api/v1/invoices", headers=headers, REMOTE_ADDR=ip).status_code == 200
    client.get(
        "/api/v1/invoices", headers={"Authorization": "Bearer sb_nope_x"}, REMOTE_ADDR="9.9.9.9"
    )

    events = SecurityEvent.objects.filter(kind="api_key_address").order_by("pk")
    assert [(e.merchant_id, e.ip, e.summary) for e in events] == [
        (acme.pk, "198.51.100.1", "API key “Shop” used from a new address"),
        (acme.pk, "198.51.100.2", "API key “Shop” used from a new address"),
    ]
    page = client_for(alice).get(reverse("security_log"))
    assert "API key “Shop” used from a new address" in page.content.decode()
