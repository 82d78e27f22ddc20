from celery import shared_task

from merchants.integrations import idempotency_prune, webhook_disabled_send
from merchants.models import Membership, User
from merchants.services import invitation_send


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_invitation(membership_id: int, invited_by_id: int, new_user: bool) -> None:
    membership = (
        Membership.objects.select_related("user", "merchant").filter(pk=membership_id).first()
    )
    if membership is None:  # removed again before the email went out
        return
    invitation_send(
        membership=membership, invited_by=User.objects.get(pk=invited_by_id), new_user=new_user
    )


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_webhook_disabled(merchant_id: int, url: str, reason: str) -> None:
    webhook_disabled_send(merchant_id=merchant_id, url=url, reason=reason)


@shared_task(ignore_result=True)
def prune_idempotency_keys() -> None:
    idempotency_prune()


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_security_notice(event_id: int) -> None:
    from merchants.models import SecurityEvent
    from merchants.security import security_notice_send

    event = SecurityEvent.objects.select_related("merchant", "user").filter(pk=event_id).first()
    if event is not None:
        security_notice_send(event=event)
