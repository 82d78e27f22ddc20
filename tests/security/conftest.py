import re
import time

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value
from django.test import Client

from tests.factories import PASSWORD


@pytest.fixture(autouse=True)
def _totp_tolerance(settings):
    # One period either side, so a code computed just before a 30-second boundary still
    # counts when it arrives just after; every code below is computed from the clock.
    settings.MFA_TOTP_TOLERANCE = 1


def totp_code(secret: str, periods_ago: int = 0) -> str:
    counter = int(time.time()) // 30 - periods_ago
    return format_hotp_value(hotp_value(secret, counter))


def reauthenticate(client: Client, password: str = PASSWORD):
    return client.post("/reauthenticate/", {"password": password})


def activate_totp(client: Client) -> tuple[str, list[str]]:
    """Turn on an authenticator app the way a person does; returns its secret and the
    recovery codes allauth shows next."""
    reauthenticate(client)
    page = client.get("/2fa/totp/activate/")
    assert page.status_code == 200, page
    secret = page.context["form"].secret
    done = client.post("/2fa/totp/activate/", {"code": totp_code(secret)})
    assert done.status_code == 302, done.content[:3000]
    codes_page = client.get("/2fa/recovery-codes/")
    codes = codes_page.context["unused_codes"]
    assert Authenticator.objects.filter(type="totp").count() >= 1
    return secret, list(codes)


def sign_in(client: Client, email: str, password: str = PASSWORD):
    return client.post("/login/", {"login": email, "password": password})


def link_in(body: str) -> str:
    match = re.search(r"http://testserver(/\S+)", body)
    assert match is not None, body
    return match.group(1)
