"""Passkeys (WebAuthn) through a software authenticator against allauth's real checks."""

import json

from allauth.mfa.models import Authenticator
from django.test import Client
from django.urls import reverse

from tests.security.conftest import reauthenticate, sign_in
from tests.security.webauthn import SoftPasskey


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def add_passkey(client: Client, passkey: SoftPasskey, *, passwordless: bool = True):
    reauthenticate(client)
    page = client.get(reverse("mfa_add_webauthn"))
    assert page.status_code == 200
    credential = passkey.create(page.context["js_data"]["creation_options"])
    data = {"name": "Laptop", "credential": json.dumps(credential)}
    if passwordless:
        data["passwordless"] = "on"
    return client.post(reverse("mfa_add_webauthn"), data)


def passkey_login(client: Client, passkey: SoftPasskey):
    options = client.get(reverse("mfa_login_webauthn"), HTTP_ACCEPT="application/json").json()
    credential = passkey.get(options["request_options"])
    return client.post(reverse("mfa_login_webauthn"), {"credential": json.dumps(credential)})


def test_a_passkey_added_in_settings_signs_in_without_a_password(client_for, alice):
    passkey = SoftPasskey()
    added = add_passkey(client_for(alice), passkey)
    assert added.status_code == 302
    assert Authenticator.objects.filter(user=alice, type="webauthn").count() == 1

    browser = Client()
    response = passkey_login(browser, passkey)

    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")
    assert _signed_in(browser)
    assert browser.session["_auth_user_id"] == str(alice.pk)


def test_a_passkey_is_the_second_factor_after_the_password(client_for, alice):
    passkey = SoftPasskey()
    add_passkey(client_for(alice), passkey, passwordless=False)

    browser = Client()
    assert sign_in(browser, "alice@acme.test")["Location"] == reverse("mfa_authenticate")
    page = browser.get(reverse("mfa_authenticate"))
    credential = passkey.get(page.context["js_data"]["request_options"])
    done = browser.post(reverse("mfa_authenticate"), {"credential": json.dumps(credential)})

    assert done.status_code == 302
    assert _signed_in(browser)


def test_a_passkey_made_for_another_site_is_refused(client_for, alice):
    genuine = SoftPasskey()
    add_passkey(client_for(alice), genuine)
    # The same key, used by a phishing page: the browser reports the page's own origin.
    phished = SoftPasskey(
        origin="https://testserver.evil.example",
        key=genuine.key,
        credential_id=genuine.credential_id,
        user_handle=genuine.user_handle,
        counter=genuine.counter,
    )
    browser = Client()
    response = passkey_login(browser, phished)
    assert response.status_code == 302
    assert response["Location"] == reverse("account_login")
    assert not _signed_in(browser)
    # Only the origin differed: the same key on the real site still works.
    genuine.counter = phished.counter
    assert passkey_login(Client(), genuine)["Location"] == reverse("dashboard")


def test_a_passkey_registered_for_another_relying_party_is_refused(client_for, alice):
    other_site = SoftPasskey(rp_id="evil.example")
    response = add_passkey(client_for(alice), other_site)
    assert response.status_code == 200
    assert response.context["form"].errors
    assert not Authenticator.objects.filter(type="webauthn").exists()


def test_a_replayed_passkey_assertion_is_refused(client_for, alice):
    passkey = SoftPasskey()
    add_passkey(client_for(alice), passkey)
    first = Client()
    options = first.get(reverse("mfa_login_webauthn"), HTTP_ACCEPT="application/json").json()
    credential = json.dumps(passkey.get(options["request_options"]))
    assert first.post(reverse("mfa_login_webauthn"), {"credential": credential}).status_code == 302

    second = Client()
    second.get(reverse("mfa_login_webauthn"), HTTP_ACCEPT="application/json")
    second.post(reverse("mfa_login_webauthn"), {"credential": credential})
    assert not _signed_in(second)


def test_an_unknown_passkey_is_refused(db):
    browser = Client()
    passkey_login(browser, SoftPasskey())
    assert not _signed_in(browser)
