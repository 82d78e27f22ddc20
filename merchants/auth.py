"""Sign-in glue for django-allauth: our adapter, and what our pages need from allauth."""

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings
from django.http import HttpRequest


class AccountAdapter(DefaultAccountAdapter):
    """Where allauth asks the project: lower-case emails, and one place that sees every
    sign-in, failed sign-in and security notice (for the security log)."""

    error_messages = {
        **DefaultAccountAdapter.error_messages,
        "too_many_login_attempts": (
            "Too many failed sign-ins. Try again in "
            f"{settings.SIGNIN_COOLDOWN_MINUTES} minutes, or use “Forgot your password?” "
            "to sign in at once."
        ),
    }

    def clean_email(self, email: str) -> str:
        # Accounts are stored with lower-case emails; lookups elsewhere are exact.
        return super().clean_email(email).strip().lower()

    def authentication_failed(self, request: HttpRequest, **credentials: Any) -> None:
        from merchants.security import security_log_failed_signin

        security_log_failed_signin(request=request, email=credentials.get("email", ""))

    def post_login(self, request: HttpRequest, user: Any, **kwargs: Any):  # type: ignore[override]
        from merchants.security import security_log_signin

        response = super().post_login(request, user, **kwargs)
        security_log_signin(request=request, user=user)
        return response

    def send_notification_mail(
        self,
        template_prefix: str,
        user: Any,
        context: dict[str, Any] | None = None,
        email: str | None = None,
    ) -> None:
        from merchants.security import security_log_account_notice

        super().send_notification_mail(template_prefix, user, context, email)
        security_log_account_notice(request=self.request, user=user, template=template_prefix)
