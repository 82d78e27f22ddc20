from allauth.account import app_settings as account_settings
from allauth.account.models import EmailAddress
from allauth.account.utils import user_pk_to_url_str
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse

from merchants.models import ADDRESS_FIELDS, SELLER_FIELDS, Membership, Merchant, Role, User
from merchants.validators import one_line


@transaction.atomic
def merchant_create(*, name: str, owner: User, default_currency: str = "USD") -> Merchant:
    merchant = Merchant.objects.create(name=one_line(name), default_currency=default_currency)
    Membership.objects.create(user=owner, merchant=merchant, role=Role.OWNER)
    return merchant


# The business's one-line texts: printed on a line of their own, and named in email subjects.
ONE_LINE_FIELDS = {
    "name",
    "legal_name",
    *ADDRESS_FIELDS,
    "tax_id",
    "registration_number",
    "contact_email",
    "contact_phone",
}


def merchant_update(*, merchant: Merchant, **fields) -> Merchant:
    editable = {
        "name",
        "default_currency",
        "default_fee_payer",
        "invoice_prefix",
        "brand_colour",
        "logo",
        "paper_size",
        "send_reminders",
        "require_two_factor",
        *SELLER_FIELDS,
    }
    unknown = set(fields) - editable
    if unknown:
        raise ValueError(f"Not editable: {', '.join(sorted(unknown))}")
    if "logo" in fields and not fields["logo"]:
        # The form's "Clear" box gives False; an empty name is how a FileField holds no file.
        fields["logo"] = ""
    for key, value in fields.items():
        setattr(merchant, key, one_line(value) if key in ONE_LINE_FIELDS else value)
    merchant.full_clean(exclude=["next_invoice_number"])
    merchant.save(update_fields=[*fields])
    return merchant


@transaction.atomic
def member_invite(*, merchant: Merchant, email: str, role: str, invited_by: User) -> Membership:
    """Add a teammate; someone new gets an account without a password and a link to set one."""
    email = email.strip().lower()
    user, created = User.objects.get_or_create(email=email)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
        # The only way into this account is the set-password link mailed to this address,
        # so choosing a password proves the address: it needs no second confirmation.
        EmailAddress.objects.create(user=user, email=email, primary=True, verified=True)
    membership, made = Membership.objects.get_or_create(
        user=user, merchant=merchant, defaults={"role": role}
    )
    # Someone invited before who never chose a password gets a fresh link; anyone else who is
    # already a member needs no second invitation.
    needs_password = not user.has_usable_password()
    if not made and not needs_password:
        raise ValidationError({"email": "This person is already a member."})
    from merchants.tasks import send_invitation

    transaction.on_commit(
        lambda: send_invitation.delay(membership.pk, invited_by.pk, needs_password)
    )
    return membership


def invitation_send(*, membership: Membership, invited_by: User, new_user: bool) -> None:
    """Email a new teammate; someone without a password gets a link to choose one."""
    user = membership.user
    link = settings.SITE_URL + reverse("account_login")
    if new_user:
        # allauth's own reset link: choosing the password there clears any sign-in lock too.
        token = account_settings.PASSWORD_RESET_TOKEN_GENERATOR().make_token(user)
        link = settings.SITE_URL + reverse(
            "account_reset_password_from_key",
            kwargs={"uidb36": user_pk_to_url_str(user), "key": token},
        )
    context = {
        "membership": membership,
        "invited_by": invited_by,
        "link": link,
        "new_user": new_user,
    }
    send_mail(
        subject=f"You have been added to {one_line(membership.merchant.name)} on Stablebill",
        message=render_to_string("merchants/emails/invitation.txt", context),
        from_email=None,
        recipient_list=[user.email],
    )


@transaction.atomic
def member_set_role(*, membership: Membership, role: str) -> Membership:
    if membership.role == Role.OWNER and role != Role.OWNER:
        _ensure_another_owner(membership)
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def member_remove(*, membership: Membership) -> None:
    if membership.role == Role.OWNER:
        _ensure_another_owner(membership)
    membership.delete()


def _ensure_another_owner(membership: Membership) -> None:
    # Lock the owners so two owners cannot demote each other at the same moment.
    owners = list(
        Membership.objects.select_for_update()
        .filter(merchant_id=membership.merchant_id, role=Role.OWNER)
        .values_list("pk", flat=True)
    )
    if [pk for pk in owners if pk != membership.pk] == []:
        raise ValidationError("A business needs at least one owner.")
