"""Bad input from outside that used to answer 500 or slip through: oversized API bodies,
pixel bombs as logos, the logo's "Clear" box; and the security headers on our pages."""

import io
import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from merchants.integrations import api_key_create
from merchants.models import Merchant
from tests.factories import PASSWORD, make_invoice

FIVE_MB = 5 * 1024 * 1024


@pytest.fixture
def api_key(acme, alice):
    return api_key_create(merchant=acme, name="Shop", by=alice).plaintext


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
def test_a_5mb_json_body_gets_413_in_the_api_error_shape(settings, api_key, debug):
    settings.DEBUG = debug
    body = json.dumps({"currency": "USD", "notes": "x" * FIVE_MB})
    client = Client(raise_request_exception=False)

    response = client.post(
        "/api/v1/invoices",
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {api_key}"},
    )

    assert response.status_code == 413
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "detail": "The request body is larger than 2560 KB.",
        "code": "body_too_large",
        "fields": {"body": ["At most 2560 KB."]},
    }


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
def test_a_5mb_body_without_a_key_is_refused_as_unauthenticated_in_json(settings, db, debug):
    settings.DEBUG = debug
    client = Client(raise_request_exception=False)
    response = client.post("/api/v1/invoices", data="x" * FIVE_MB, content_type="application/json")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


def _image_bytes(size: tuple[int, int], image_format: str = "PNG", **save) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (79, 70, 229)).save(buffer, format=image_format, **save)
    return buffer.getvalue()


def _settings_data(**overrides) -> dict:
    return {
        "name": "Acme Tools",
        "default_currency": "USD",
        "default_fee_payer": "merchant",
        "invoice_prefix": "INV-",
        "brand_colour": "#4f46e5",
        "paper_size": "A4",
        **overrides,
    }


def test_a_12000_by_12000_png_is_refused_before_decoding(client_for, alice, acme):
    bomb = _image_bytes((12000, 12000))
    assert len(bomb) < 1024 * 1024  # small on disk: only the pixel count gives it away
    upload = SimpleUploadedFile("bomb.png", bomb, content_type="image/png")

    response = client_for(alice).post(reverse("merchant_settings"), _settings_data(logo=upload))

    assert response.status_code == 200
    assert response.context["form"].errors["logo"] == [
        "The logo has more than 16.8 megapixels; use at most 4096 x 4096 pixels."
    ]
    acme.refresh_from_db()
    assert acme.logo.name == ""


def test_a_logo_just_over_the_cap_is_refused_and_one_at_the_cap_is_kept(client_for, alice, acme):
    client = client_for(alice)
    over = SimpleUploadedFile("wide.png", _image_bytes((4097, 4096)), content_type="image/png")
    refused = client.post(reverse("merchant_settings"), _settings_data(logo=over))
    assert refused.status_code == 200
    assert "logo" in refused.context["form"].errors

    at_cap = SimpleUploadedFile("ok.png", _image_bytes((4096, 4096)), content_type="image/png")
    saved = client.post(reverse("merchant_settings"), _settings_data(logo=at_cap))
    assert saved.status_code == 302
    acme.refresh_from_db()
    with acme.logo.open("rb") as stored, Image.open(stored) as image:
        assert image.size == (4096, 4096)


def test_a_jpeg_logo_is_stored_as_png_without_exif(client_for, alice, acme):
    exif = Image.Exif()
    exif[0x010F] = "Secret Camera Co"  # Make
    exif[0x8825] = {2: (51.0, 30.0, 0.0)}  # GPS
    jpeg = _image_bytes((40, 20), "JPEG", exif=exif.tobytes())
    with Image.open(io.BytesIO(jpeg)) as original:
        assert original.getexif()[0x010F] == "Secret Camera Co"
    upload = SimpleUploadedFile("photo.jpg", jpeg, content_type="image/jpeg")

    response = client_for(alice).post(reverse("merchant_settings"), _settings_data(logo=upload))

    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.logo.name.startswith("logos/photo")
    assert acme.logo.name.endswith(".png")
    with acme.logo.open("rb") as stored:
        data = stored.read()
    assert b"Secret Camera Co" not in data
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        assert image.size == (40, 20)
        assert dict(image.getexif()) == {}
        assert set(image.info) <= {"dpi", "gamma"}


def test_ticking_clear_removes_the_logo_instead_of_failing(client_for, alice, acme):
    client = client_for(alice)
    upload = SimpleUploadedFile("logo.png", _image_bytes((16, 16)), content_type="image/png")
    assert client.post(reverse("merchant_settings"), _settings_data(logo=upload)).status_code == 302
    acme.refresh_from_db()
    assert acme.logo.name

    response = client.post(reverse("merchant_settings"), _settings_data(**{"logo-clear": "on"}))

    assert response.status_code == 302
    assert Merchant.objects.get(pk=acme.pk).logo.name == ""


def test_ticking_clear_without_a_logo_is_harmless(client_for, alice, acme):
    response = client_for(alice).post(
        reverse("merchant_settings"), _settings_data(**{"logo-clear": "on"})
    )
    assert response.status_code == 302
    assert Merchant.objects.get(pk=acme.pk).logo.name == ""


# Headers -------------------------------------------------------------------------------------


def test_merchant_pages_are_never_stored_by_caches(client_for, alice):
    client = client_for(alice)
    for name in ("dashboard", "invoice_list", "merchant_settings", "member_list"):
        response = client.get(reverse(name))
        assert response.status_code == 200, name
        assert response["Cache-Control"] == "no-store", name


def test_the_payers_page_is_never_stored_by_caches(client, acme, dev_network):
    invoice = make_invoice(acme, issue=True)
    response = client.get(f"/pay/{invoice.public_token}/")
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"


def test_static_files_keep_their_own_caching(client, db):
    response = client.get("/static/css/app.css")
    assert response.status_code == 200
    assert "no-store" not in response.get("Cache-Control", "")


def test_hsts_is_sent_over_https_only(client, db, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    assert client.get(reverse("account_login"), secure=True)["Strict-Transport-Security"] == (
        "max-age=31536000"
    )
    assert "Strict-Transport-Security" not in client.get(reverse("account_login"))


def _settings_in_a_fresh_process(**env: str) -> dict:
    code = (
        "import json, config.settings as s; print(json.dumps("
        "{'hsts': s.SECURE_HSTS_SECONDS, 'session': s.SESSION_COOKIE_AGE}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "SECRET_KEY": "x", **env},
        capture_output=True,
        text=True,
        check=True,
        cwd=settings.BASE_DIR,
    )
    return json.loads(result.stdout)


def test_hsts_defaults_to_a_year_behind_tls_and_session_lifetime_is_a_setting():
    assert _settings_in_a_fresh_process() == {"hsts": 0, "session": 12 * 3600}
    assert _settings_in_a_fresh_process(BEHIND_TLS_PROXY="1", SESSION_LIFETIME_HOURS="2") == {
        "hsts": 365 * 24 * 3600,
        "session": 2 * 3600,
    }
    assert (
        _settings_in_a_fresh_process(BEHIND_TLS_PROXY="1", SECURE_HSTS_SECONDS="60")["hsts"] == 60
    )


def test_a_sign_in_ends_with_the_browser_or_after_the_session_lifetime(client, alice):
    response = client.post(
        reverse("account_login"), {"login": "alice@acme.test", "password": PASSWORD}
    )
    assert response.status_code == 302
    assert response.cookies["sessionid"]["max-age"] == ""  # gone when the browser closes
    session = Session.objects.get(session_key=response.cookies["sessionid"].value)
    lifetime = session.expire_date - timezone.now()
    assert timedelta(hours=11, minutes=59) < lifetime <= timedelta(hours=12)
