import io
import os
import re

import pytest
from django.contrib.auth import SESSION_KEY as AUTH_SESSION_KEY
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from merchants.access import SESSION_KEY
from merchants.models import Membership, Merchant, Role, User
from tests.factories import PASSWORD, MembershipFactory, UserFactory, make_invoice

NEW_PASSWORD = "violet-lantern-orbit-42"


def _messages(response) -> list[str]:
    return [message.message for message in get_messages(response.wsgi_request)]


def _signed_in_user_id(client) -> str | None:
    return client.session.get(AUTH_SESSION_KEY)


def _link_in(body: str) -> str:
    match = re.search(r"http://testserver(/\S+)", body)
    assert match is not None, body
    return match.group(1)


def _set_password_through(client, path: str, password: str):
    """Follow an emailed set-password link the way a browser does."""
    landing = client.get(path)
    assert landing.status_code == 302  # allauth moves the key out of the URL first
    return client.post(landing["Location"], {"password1": password, "password2": password})


# Signup ---------------------------------------------------------------------------------------


def _signup_data(**overrides) -> dict:
    return {
        "full_name": "Dana Scully",
        "email": "Dana@FBI.example",
        "business_name": "  X Files Consulting ",
        "password1": NEW_PASSWORD,
        **overrides,
    }


def test_signup_creates_user_and_business_and_signs_in_after_the_emailed_link(
    client, db, mailoutbox
):
    response = client.post(reverse("account_signup"), _signup_data())

    assert response.status_code == 302
    assert response["Location"] == reverse("account_email_verification_sent")
    user = User.objects.get()
    assert (user.email, user.first_name, user.last_name) == ("dana@fbi.example", "Dana", "Scully")
    assert user.check_password(NEW_PASSWORD)
    merchant = Merchant.objects.get()
    assert (merchant.name, merchant.default_currency, merchant.next_invoice_number) == (
        "X Files Consulting",
        "USD",
        1,
    )
    assert list(Membership.objects.values_list("user", "merchant", "role")) == [
        (user.pk, merchant.pk, "owner")
    ]
    # Not signed in until the address is confirmed: nobody opens a business in another's name.
    assert _signed_in_user_id(client) is None
    assert [m.to for m in mailoutbox] == [["dana@fbi.example"]]

    confirm = _link_in(mailoutbox[0].body)
    assert client.get(confirm).status_code == 200  # a GET never confirms (link scanners)
    assert _signed_in_user_id(client) is None
    done = client.post(confirm)

    assert done.status_code == 302
    assert done["Location"] == reverse("dashboard")
    assert _signed_in_user_id(client) == str(user.pk)
    dashboard = client.get(reverse("dashboard"))
    assert dashboard.status_code == 200
    assert dashboard.context["merchant"] == merchant


def test_unconfirmed_account_cannot_sign_in(client, db, mailoutbox):
    client.post(reverse("account_signup"), _signup_data())
    response = client.post(
        reverse("account_login"), {"login": "dana@fbi.example", "password": NEW_PASSWORD}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("account_email_verification_sent")
    assert _signed_in_user_id(client) is None


@pytest.mark.parametrize("email", ["alice@acme.test", "ALICE@Acme.Test"])
def test_signup_with_taken_email_creates_nothing(client, alice, email, mailoutbox):
    response = client.post(reverse("account_signup"), _signup_data(email=email))

    # allauth answers as for a new address (no account enumeration) and mails the owner.
    assert response.status_code == 302
    assert User.objects.count() == 1
    assert Merchant.objects.count() == 1
    assert [m.to for m in mailoutbox] == [["alice@acme.test"]]


@pytest.mark.parametrize(
    ("password", "error"),
    [
        ("short", "This password is too short. It must contain at least 8 characters."),
        ("12345678901", "This password is entirely numeric."),
        ("password123", "This password is too common."),
    ],
)
def test_signup_with_weak_password_is_refused(client, db, password, error):
    response = client.post(
        reverse("account_signup"),
        _signup_data(password1=password, email="dana.scully@fbi.example"),
    )

    assert response.status_code == 200
    assert error in response.context["form"].errors["password1"]
    assert User.objects.count() == 0
    assert Merchant.objects.count() == 0


# Login and logout -----------------------------------------------------------------------------


@pytest.mark.parametrize("email", ["alice@acme.test", " Alice@ACME.test "])
def test_login_with_email_in_any_case(client, alice, email):
    response = client.post(reverse("account_login"), {"login": email, "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")
    assert _signed_in_user_id(client) == str(alice.pk)


def test_existing_password_hash_keeps_working(client, acme):
    """Accounts from before allauth keep their Django password hashes."""
    user = User.objects.create_user(email="old@acme.test", password=PASSWORD)
    Membership.objects.create(user=user, merchant=acme, role=Role.OWNER)
    assert user.password.startswith("md5$")  # the hasher the tests use, set by Django
    response = client.post(reverse("account_login"), {"login": user.email, "password": PASSWORD})
    assert response.status_code == 302
    assert _signed_in_user_id(client) == str(user.pk)


def test_login_follows_next(client, alice):
    response = client.post(
        reverse("account_login"),
        {"login": "alice@acme.test", "password": PASSWORD, "next": reverse("invoice_list")},
    )
    assert response["Location"] == reverse("invoice_list")


def test_login_refuses_next_to_another_site(client, alice):
    response = client.post(
        reverse("account_login"),
        {"login": "alice@acme.test", "password": PASSWORD, "next": "https://evil.example/"},
    )
    assert response["Location"] == reverse("dashboard")


def test_login_with_wrong_password_is_refused(client, alice):
    response = client.post(reverse("account_login"), {"login": "alice@acme.test", "password": "x"})

    assert response.status_code == 200
    assert response.context["form"].non_field_errors() == [
        "The email address and/or password you specified are not correct."
    ]
    assert _signed_in_user_id(client) is None


def test_logout_by_post(client_for, alice):
    client = client_for(alice)
    response = client.post(reverse("account_logout"))

    assert response.status_code == 302
    assert response["Location"] == reverse("account_login")
    assert _signed_in_user_id(client) is None
    assert client.get(reverse("dashboard")).status_code == 302


def test_logout_by_get_only_asks(client_for, alice):
    client = client_for(alice)
    response = client.get(reverse("account_logout"))
    assert response.status_code == 200
    assert _signed_in_user_id(client) == str(alice.pk)


# Password reset -------------------------------------------------------------------------------


def test_password_reset_email_link_sets_a_new_password(client, alice, mailoutbox):
    response = client.post(reverse("account_reset_password"), {"email": "Alice@acme.test"})

    assert response.status_code == 302
    assert response["Location"] == reverse("account_reset_password_done")
    assert len(mailoutbox) == 1
    email = mailoutbox[0]
    assert email.to == ["alice@acme.test"]
    link = _link_in(email.body)
    assert link.startswith("/password/reset/key/")

    done = _set_password_through(client, link, NEW_PASSWORD)

    assert done.status_code == 302
    assert done["Location"] == reverse("account_reset_password_from_key_done")
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    assert not client.login(email="alice@acme.test", password=PASSWORD)
    assert client.login(email="alice@acme.test", password=NEW_PASSWORD)


def test_password_reset_link_works_once(client, alice, mailoutbox):
    client.post(reverse("account_reset_password"), {"email": "alice@acme.test"})
    link = _link_in(mailoutbox[0].body)
    _set_password_through(client, link, NEW_PASSWORD)

    again = client.get(link, follow=True)
    assert again.context["token_fail"] is True


def test_password_reset_for_unknown_email_sends_nothing_and_says_the_same(
    client, alice, mailoutbox
):
    response = client.post(reverse("account_reset_password"), {"email": "nobody@acme.test"})
    assert response.status_code == 302
    assert response["Location"] == reverse("account_reset_password_done")
    assert mailoutbox == []


# Settings -------------------------------------------------------------------------------------


def _png(size: tuple[int, int] = (16, 16), noise: bool = False) -> bytes:
    if noise:
        image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    else:
        image = Image.new("RGB", size, (79, 70, 229))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _settings_data(**overrides) -> dict:
    return {
        "name": "Acme Tools & Dies",
        "default_currency": "USDC",
        "default_fee_payer": "payer",
        "invoice_prefix": "AT-",
        "brand_colour": "#0f766e",
        "paper_size": "A4",
        "send_reminders": "on",
        **overrides,
    }


def test_settings_page_shows_current_values(client_for, alice, acme):
    response = client_for(alice).get(reverse("merchant_settings"))
    assert response.status_code == 200
    assert response.context["form"].initial["name"] == "Acme Tools"


def test_settings_save_with_png_logo(client_for, alice, acme, settings):
    logo = SimpleUploadedFile("logo.png", _png(), content_type="image/png")
    response = client_for(alice).post(reverse("merchant_settings"), _settings_data(logo=logo))

    assert response.status_code == 302
    assert response["Location"] == reverse("merchant_settings")
    assert _messages(response) == ["Settings saved."]
    acme.refresh_from_db()
    assert (
        acme.name,
        acme.default_currency,
        acme.default_fee_payer,
        acme.invoice_prefix,
        acme.brand_colour,
    ) == ("Acme Tools & Dies", "USDC", "payer", "AT-", "#0f766e")
    assert acme.logo.name.startswith("logos/logo")
    assert acme.logo.name.endswith(".png")
    # Stored re-encoded: the same pixels in a PNG of our own making.
    with acme.logo.open("rb") as stored, Image.open(stored) as image:
        assert image.format == "PNG"
        assert image.tobytes() == Image.open(io.BytesIO(_png())).tobytes()
    assert (settings.MEDIA_ROOT / acme.logo.name).is_file()


def test_new_invoices_use_the_saved_defaults(client_for, alice, acme):
    make_invoice(acme)
    client_for(alice).post(reverse("merchant_settings"), _settings_data())
    acme.refresh_from_db()
    invoice = make_invoice(acme, currency="USDC")
    assert invoice.reference == "AT-00002"
    assert invoice.fee_payer == "payer"


@pytest.mark.parametrize(
    ("upload", "message"),
    [
        (
            SimpleUploadedFile("logo.png", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
            "The logo is not a PNG, JPEG or WebP image.",
        ),
        (
            SimpleUploadedFile("logo.png", b"%PDF-1.4 not a picture", content_type="image/png"),
            "The logo is not a PNG, JPEG or WebP image.",
        ),
        (
            SimpleUploadedFile("big.png", _png((700, 700), noise=True), content_type="image/png"),
            "The logo is larger than 1 MB.",
        ),
    ],
    ids=["svg", "pdf", "over-1mb"],
)
def test_settings_refuse_bad_logo_and_save_nothing(client_for, alice, acme, upload, message):
    upload.seek(0)
    response = client_for(alice).post(reverse("merchant_settings"), _settings_data(logo=upload))

    assert response.status_code == 200
    assert response.context["form"].errors["logo"] == [message]
    acme.refresh_from_db()
    assert (acme.name, acme.invoice_prefix, acme.logo.name) == ("Acme Tools", "INV-", "")


def test_big_logo_really_is_over_one_megabyte():
    assert len(_png((700, 700), noise=True)) > 1024 * 1024


def test_settings_refuse_gif_logo(client_for, alice, acme):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="GIF")
    gif = SimpleUploadedFile("logo.gif", buffer.getvalue(), content_type="image/gif")

    response = client_for(alice).post(reverse("merchant_settings"), _settings_data(logo=gif))

    assert response.context["form"].errors["logo"] == [
        "The logo must be a PNG, JPEG or WebP image."
    ]
    acme.refresh_from_db()
    assert acme.logo.name == ""


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("brand_colour", "red", "Enter a colour as #RRGGBB, e.g. #4f46e5."),
        ("invoice_prefix", "INV #", "Letters, digits, - _ and / only."),
        (
            "default_currency",
            "DOGE",
            "Select a valid choice. DOGE is not one of the available choices.",
        ),
    ],
)
def test_settings_refuse_bad_values(client_for, alice, acme, field, value, message):
    response = client_for(alice).post(
        reverse("merchant_settings"), _settings_data(**{field: value})
    )
    assert response.status_code == 200
    assert response.context["form"].errors[field] == [message]
    acme.refresh_from_db()
    assert acme.name == "Acme Tools"


def test_refused_settings_are_not_shown_as_if_saved(client_for, alice, acme):
    response = client_for(alice).post(
        reverse("merchant_settings"), _settings_data(name="Rejected Name", brand_colour="red")
    )

    assert response.status_code == 200
    assert response.context["merchant"].name == "Acme Tools"
    body = response.content.decode()
    assert "--brand: #4f46e5;" in body
    assert "--brand: red" not in body
    # The name field keeps what was typed, so it can be corrected; nothing else shows it.
    assert body.count("Rejected Name") == 1
    assert 'value="Rejected Name"' in body


# Team -----------------------------------------------------------------------------------------


def test_team_page_lists_members(client_for, alice, bob, victor, charlie):
    response = client_for(alice).get(reverse("member_list"))
    assert [m.user.email for m in response.context["members"]] == [
        "alice@acme.test",
        "bob@acme.test",
        "victor@acme.test",
    ]


def test_invite_new_person_creates_passwordless_user_and_emails_a_set_password_link(
    client_for, client, alice, acme, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(
            reverse("member_list"), {"email": " Dora@Acme.test ", "role": "staff"}
        )

    assert response.status_code == 302
    assert response["Location"] == reverse("member_list")
    assert _messages(response) == ["dora@acme.test was added and emailed."]
    dora = User.objects.get(email="dora@acme.test")
    assert dora.has_usable_password() is False
    assert Membership.objects.get(user=dora).role == Role.STAFF
    assert Membership.objects.get(user=dora).merchant == acme
    assert sorted(m.to[0] for m in mailoutbox) == ["alice@acme.test", "dora@acme.test"]
    email = next(m for m in mailoutbox if m.to == ["dora@acme.test"])
    assert email.subject == "You have been added to Acme Tools on Stablebill"
    assert "added you to Acme Tools on Stablebill as staff." in email.body
    assert "Choose your password to get started:" in email.body

    done = _set_password_through(client, _link_in(email.body), NEW_PASSWORD)

    assert done["Location"] == reverse("account_reset_password_from_key_done")
    assert client.login(email="dora@acme.test", password=NEW_PASSWORD)
    assert client.get(reverse("dashboard")).context["merchant"] == acme


def test_invite_existing_user_adds_membership_and_emails_a_sign_in_link(
    client_for, alice, acme, charlie, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        client_for(alice).post(
            reverse("member_list"), {"email": "charlie@globex.test", "role": "viewer"}
        )

    assert Membership.objects.get(user=charlie, merchant=acme).role == Role.VIEWER
    charlie.refresh_from_db()
    assert charlie.check_password(PASSWORD)
    to_charlie = [m for m in mailoutbox if m.to == ["charlie@globex.test"]]
    assert len(to_charlie) == 1
    assert "Sign in to get started:\nhttp://testserver/login/" in to_charlie[0].body
    # The owner hears of the new member (tests/security covers the notice itself).
    assert [m.to for m in mailoutbox if m not in to_charlie] == [["alice@acme.test"]]


def test_invite_existing_member_is_refused(
    client_for, alice, bob, mailoutbox, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(alice).post(
            reverse("member_list"), {"email": "BOB@acme.test", "role": "owner"}
        )

    assert response.status_code == 200
    assert response.context["form"].errors["email"] == ["This person is already a member."]
    assert Membership.objects.get(user=bob).role == Role.STAFF
    assert mailoutbox == []


def test_change_member_role(client_for, alice, bob):
    membership = Membership.objects.get(user=bob)
    response = client_for(alice).post(
        reverse("member_update", kwargs={"pk": membership.pk}), {"role": "owner"}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("member_list")
    assert _messages(response) == ["bob@acme.test is now Owner."]
    membership.refresh_from_db()
    assert membership.role == Role.OWNER


def test_change_member_role_to_nonsense_is_refused(client_for, alice, bob):
    membership = Membership.objects.get(user=bob)
    response = client_for(alice).post(
        reverse("member_update", kwargs={"pk": membership.pk}), {"role": "emperor"}
    )
    assert _messages(response) == ["Choose a valid role."]
    membership.refresh_from_db()
    assert membership.role == Role.STAFF


def test_remove_member_keeps_the_user_account(client_for, alice, bob):
    membership = Membership.objects.get(user=bob)
    response = client_for(alice).post(
        reverse("member_update", kwargs={"pk": membership.pk}), {"remove": "1"}
    )

    assert _messages(response) == ["bob@acme.test no longer has access."]
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert User.objects.filter(pk=bob.pk).exists()


def test_removed_member_loses_access(client_for, alice, bob, acme):
    bob_client = client_for(bob)
    membership = Membership.objects.get(user=bob)
    client_for(alice).post(reverse("member_update", kwargs={"pk": membership.pk}), {"remove": "1"})

    response = bob_client.get(reverse("invoice_list"))
    assert response.status_code == 302
    assert response["Location"] == reverse("merchant_create")


@pytest.mark.parametrize("data", [{"role": "staff"}, {"role": "viewer"}, {"remove": "1"}])
def test_last_owner_can_be_neither_demoted_nor_removed(client_for, alice, bob, data):
    membership = Membership.objects.get(user=alice)
    response = client_for(alice).post(reverse("member_update", kwargs={"pk": membership.pk}), data)

    assert response.status_code == 302
    assert _messages(response) == ["A business needs at least one owner."]
    membership.refresh_from_db()
    assert membership.role == Role.OWNER


def test_an_owner_may_step_down_when_another_owner_remains(client_for, alice, bob):
    Membership.objects.filter(user=bob).update(role=Role.OWNER)
    membership = Membership.objects.get(user=alice)

    client_for(alice).post(
        reverse("member_update", kwargs={"pk": membership.pk}), {"role": "staff"}
    )

    membership.refresh_from_db()
    assert membership.role == Role.STAFF


def test_member_update_needs_post(client_for, alice, bob):
    membership = Membership.objects.get(user=bob)
    response = client_for(alice).get(reverse("member_update", kwargs={"pk": membership.pk}))
    assert response.status_code == 405


# Businesses -----------------------------------------------------------------------------------


def test_merchant_switch_to_a_business_the_user_belongs_to(client_for, alice, globex):
    MembershipFactory(user=alice, merchant=globex, role=Role.VIEWER)
    client = client_for(alice)
    assert client.get(reverse("dashboard")).context["merchant"].name == "Acme Tools"

    response = client.post(reverse("merchant_switch"), {"merchant_id": str(globex.pk)})

    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")
    assert client.session[SESSION_KEY] == globex.pk
    dashboard = client.get(reverse("dashboard"))
    assert dashboard.context["merchant"] == globex
    assert dashboard.context["membership"].role == Role.VIEWER
    # Alice is only a viewer at Globex: her owner role at Acme does not come along.
    assert client.get(reverse("invoice_new")).status_code == 403


@pytest.mark.parametrize("raw", ["globex", "", "abc", "-1", "999999"])
def test_merchant_switch_refuses_businesses_the_user_is_not_in(
    client_for, alice, globex, charlie, raw
):
    client = client_for(alice)
    merchant_id = str(globex.pk) if raw == "globex" else raw

    response = client.post(reverse("merchant_switch"), {"merchant_id": merchant_id})

    assert response.status_code == 404
    assert SESSION_KEY not in client.session
    assert client.get(reverse("dashboard")).context["merchant"].name == "Acme Tools"


def test_switcher_lists_only_the_users_businesses(client_for, alice, globex, charlie):
    MembershipFactory(merchant__name="Initech", user=alice)
    response = client_for(alice).get(reverse("dashboard"))
    body = response.content.decode()
    assert 'id="merchant-switch"' in body
    assert "Initech" in body
    assert "Globex" not in body


def test_user_without_business_creates_one_and_owns_it(client_for, db):
    loner = UserFactory(email="loner@example.com")
    client = client_for(loner)

    response = client.post(
        reverse("merchant_create"), {"name": "Solo Shop", "default_currency": "EUR"}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("dashboard")
    membership = Membership.objects.get(user=loner)
    assert (membership.role, membership.merchant.name, membership.merchant.default_currency) == (
        "owner",
        "Solo Shop",
        "EUR",
    )
    assert client.session[SESSION_KEY] == membership.merchant_id


def test_inviting_again_resends_the_link_to_someone_without_a_password(
    acme, alice, mailoutbox, django_capture_on_commit_callbacks
):
    from merchants.services import member_invite

    with django_capture_on_commit_callbacks(execute=True):
        member_invite(merchant=acme, email="dora@acme.test", role="staff", invited_by=alice)
    with django_capture_on_commit_callbacks(execute=True):
        member_invite(merchant=acme, email="DORA@acme.test", role="staff", invited_by=alice)
    assert [m.to for m in mailoutbox] == [["dora@acme.test"], ["dora@acme.test"]]
    assert all("/password/reset/key/" in m.body for m in mailoutbox)


def test_an_invitee_without_a_password_can_use_forgot_password(client, acme, alice, mailoutbox):
    from merchants.services import member_invite

    member_invite(merchant=acme, email="dora@acme.test", role="staff", invited_by=alice)
    mailoutbox.clear()
    response = client.post(reverse("account_reset_password"), {"email": "Dora@acme.test"})
    assert response.status_code == 302
    assert [m.to for m in mailoutbox] == [["dora@acme.test"]]
