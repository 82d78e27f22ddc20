"""TOTP with recovery codes, and the team-wide and admin two-factor requirements."""

import pytest
from allauth.mfa.models import Authenticator
from django.test import Client
from django.urls import reverse

from merchants.models import SecurityEvent
from tests.security.conftest import activate_totp, sign_in, totp_code


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_with_totp_the_password_alone_does_not_sign_in(client_for, alice):
    secret, _ = activate_totp(client_for(alice))

    browser = Client()
    response = sign_in(browser, "alice@acme.test")

    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_authenticate")
    assert not _signed_in(browser)
    assert browser.get(reverse("dashboard")).status_code == 302

    done = browser.post(reverse("mfa_authenticate"), {"code": totp_code(secret)})
    assert done.status_code == 302
    assert done["Location"] == reverse("dashboard")
    assert _signed_in(browser)


def test_a_wrong_or_old_totp_code_is_refused(client_for, alice):
    secret, _ = activate_totp(client_for(alice))
    browser = Client()
    sign_in(browser, "alice@acme.test")

    wrong = browser.post(reverse("mfa_authenticate"), {"code": "000000"})
    stale = browser.post(reverse("mfa_authenticate"), {"code": totp_code(secret, periods_ago=4)})

    for response in (wrong, stale):
        assert response.status_code == 200
        assert response.context["form"].errors["code"] == ["Incorrect code."]
    assert not _signed_in(browser)


def test_a_replayed_totp_code_is_refused(client_for, alice):
    secret, _ = activate_totp(client_for(alice))
    # The next period's code: not the one activation used, and still inside the
    # tolerance window for a full period after this line, where last period's code
    # fell out of it whenever the clock ticked between taking it and posting it.
    code = totp_code(secret, periods_ago=-1)
    first = Client()
    sign_in(first, "alice@acme.test")
    assert first.post(reverse("mfa_authenticate"), {"code": code}).status_code == 302

    second = Client()
    sign_in(second, "alice@acme.test")
    replay = second.post(reverse("mfa_authenticate"), {"code": code})

    assert replay.status_code == 200
    assert replay.context["form"].errors["code"] == ["Incorrect code."]
    assert not _signed_in(second)


def test_a_recovery_code_signs_in_once(client_for, alice):
    _, codes = activate_totp(client_for(alice))
    assert len(codes) == 10

    first = Client()
    sign_in(first, "alice@acme.test")
    assert first.post(reverse("mfa_authenticate"), {"code": codes[0]}).status_code == 302
    assert _signed_in(first)

    second = Client()
    sign_in(second, "alice@acme.test")
    again = second.post(reverse("mfa_authenticate"), {"code": codes[0]})
    assert again.status_code == 200
    assert again.context["form"].errors["code"] == ["Incorrect code."]
    assert not _signed_in(second)
    # The other nine still work.
    assert second.post(reverse("mfa_authenticate"), {"code": codes[1]}).status_code == 302


def test_wrong_second_factor_codes_are_throttled(client_for, alice):
    secret, _ = activate_totp(client_for(alice))
    browser = Client()
    sign_in(browser, "alice@acme.test")
    for _ in range(6):
        browser.post(reverse("mfa_authenticate"), {"code": "123456"})
    # allauth counts wrong codes with the account's failed sign-ins: the lock holds even
    # against the right code.
    response = browser.post(reverse("mfa_authenticate"), {"code": totp_code(secret)})
    assert not _signed_in(browser)
    assert response.status_code == 200
    assert response.context["form"].errors["code"] == [
        "Too many failed sign-ins. Try again in 15 minutes, or use “Forgot your password?” "
        "to sign in at once."
    ]


@pytest.mark.django_db(transaction=True)
def test_two_factor_changes_are_in_the_security_log_and_emailed(client_for, alice, mailoutbox):
    # A real commit per request, so allauth's after-commit notice runs inside the request.
    activate_totp(client_for(alice))
    assert "Stablebill: Authenticator App Activated" in [m.subject for m in mailoutbox]
    summaries = list(
        SecurityEvent.objects.filter(user=alice, kind="account").values_list("summary", flat=True)
    )
    assert "Authenticator app turned on" in summaries


# Team and admin requirements ---------------------------------------------------------------


def test_an_owner_can_require_two_factor_for_the_whole_team(client_for, alice, bob, acme):
    owner = client_for(alice)
    response = owner.post(reverse("security_log"), {"require_two_factor": "on"})
    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.require_two_factor is True

    teammate = client_for(bob)
    blocked = teammate.get(reverse("invoice_list"))
    assert blocked.status_code == 302
    assert blocked["Location"] == reverse("mfa_index")

    activate_totp(teammate)
    assert teammate.get(reverse("invoice_list")).status_code == 200


def test_admin_requires_a_second_factor_when_the_setting_says_so(client, alice, settings):
    settings.ADMIN_REQUIRE_TWO_FACTOR = True
    alice.is_staff = alice.is_superuser = True
    alice.save(update_fields=["is_staff", "is_superuser"])
    sign_in(client, "alice@acme.test")

    refused = client.get("/admin/", follow=True)
    assert refused.redirect_chain[-1][0] == reverse("mfa_index")
    assert Authenticator.objects.count() == 0

    activate_totp(client)
    assert client.get("/admin/").status_code == 200


def test_admin_without_the_setting_needs_only_staff(client, alice, settings):
    settings.ADMIN_REQUIRE_TWO_FACTOR = False
    alice.is_staff = alice.is_superuser = True
    alice.save(update_fields=["is_staff", "is_superuser"])
    sign_in(client, "alice@acme.test")
    assert client.get("/admin/").status_code == 200
