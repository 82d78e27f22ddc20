"""allauth's passkey (WebAuthn) forms, made to refuse a malformed answer instead of failing.

allauth hands the posted `credential` JSON to fido2, which raises KeyError, TypeError or
ValueError on one that no browser sends (`{"id": "\\u0000"}`, a list where an object goes): a
500 to anyone who posts it, signed in or not, where a wrong passkey gets the form's error.
Here any such answer is that same error. Named in settings.MFA_FORMS.
"""

from collections.abc import Callable
from typing import Any

from allauth.mfa.adapter import get_adapter
from allauth.mfa.webauthn import forms as allauth_forms
from django.core.exceptions import ValidationError

MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def _checked(clean: Callable[[], Any]) -> Any:
    try:
        return clean()
    except ValidationError:
        raise
    except MALFORMED:
        raise get_adapter().validation_error("incorrect_code") from None


class _CheckedAnswer:
    def clean_credential(self) -> Any:
        return _checked(super().clean_credential)  # type: ignore[misc]


class _CheckedRegistration:
    def clean(self) -> dict:
        return _checked(super().clean)  # type: ignore[misc]


class LoginWebAuthnForm(_CheckedAnswer, allauth_forms.LoginWebAuthnForm):
    pass


class AuthenticateWebAuthnForm(_CheckedAnswer, allauth_forms.AuthenticateWebAuthnForm):
    pass


class ReauthenticateWebAuthnForm(_CheckedAnswer, allauth_forms.ReauthenticateWebAuthnForm):
    pass


class AddWebAuthnForm(_CheckedRegistration, allauth_forms.AddWebAuthnForm):
    pass


class SignupWebAuthnForm(_CheckedRegistration, allauth_forms.SignupWebAuthnForm):
    pass
