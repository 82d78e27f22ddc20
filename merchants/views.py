from copy import copy

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from merchants.access import SESSION_KEY, AuthedRequest, MerchantRequest, merchant_view
from merchants.forms import (
    ApiKeyForm,
    MemberInviteForm,
    MemberRoleForm,
    MerchantCreateForm,
    MerchantSettingsForm,
    TeamSecurityForm,
)
from merchants.integrations import api_key_create, api_key_revoke
from merchants.models import ApiKey, Role
from merchants.security import money_change_record, require_recent_reauth, security_log_for
from merchants.selectors import membership_list, memberships_of_user
from merchants.services import (
    member_invite,
    member_remove,
    member_set_role,
    merchant_create,
    merchant_update,
)
from merchants.validators import parse_id


@login_required
def merchant_create_view(request: AuthedRequest) -> HttpResponse:
    form = MerchantCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        merchant = merchant_create(
            name=form.cleaned_data["name"],
            owner=request.user,
            default_currency=form.cleaned_data["default_currency"],
        )
        request.session[SESSION_KEY] = merchant.pk
        return redirect("dashboard")
    return render(request, "merchants/merchant_create.html", {"form": form})


@login_required
@require_POST
def merchant_switch(request: AuthedRequest) -> HttpResponse:
    # Only a merchant the person belongs to can be chosen; anything else is not found.
    membership = get_object_or_404(
        memberships_of_user(user=request.user),
        merchant_id=parse_id(request.POST.get("merchant_id")) or 0,
    )
    request.session[SESSION_KEY] = membership.merchant_id
    return redirect("dashboard")


@merchant_view(Role.OWNER)
def merchant_settings(request: MerchantRequest) -> HttpResponse:
    merchant = request.merchant
    # The form validates a copy: a refused POST must not show its values in the sidebar, the
    # brand colour style or the preview as if they had been saved.
    form = MerchantSettingsForm(
        request.POST or None, request.FILES or None, instance=copy(merchant)
    )
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in form.changed_data}
        if fields:
            merchant_update(merchant=merchant, **fields)
        messages.success(request, "Settings saved.")
        return redirect("merchant_settings")
    return render(request, "merchants/settings.html", {"form": form})


@merchant_view(Role.OWNER)
@require_recent_reauth("Team member invited", detail_fields=("email", "role"))
def member_list(request: MerchantRequest) -> HttpResponse:
    merchant = request.merchant
    form = MemberInviteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            member_invite(
                merchant=merchant,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                invited_by=request.user,
            )
        except ValidationError as error:
            form.add_error("email", error.message_dict.get("email", error.messages))
        else:
            email = form.cleaned_data["email"].strip().lower()
            messages.success(request, f"{email} was added and emailed.")
            return redirect("member_list")
    members = membership_list(merchant_id=merchant.pk)
    return render(
        request,
        "merchants/members.html",
        {"form": form, "members": members, "role_choices": Role.choices},
    )


@merchant_view(Role.OWNER)
@require_POST
# Records its own change: it answers a refused change with a redirect too, which the
# decorator would take for a change made.
@require_recent_reauth()
def member_update(request: MerchantRequest, pk: int) -> HttpResponse:
    membership = get_object_or_404(membership_list(merchant_id=request.merchant.pk), pk=pk)
    email = membership.user.email
    try:
        if request.POST.get("remove"):
            member_remove(membership=membership)
            _member_change_record(request, f"Team member's access removed: {email}")
            messages.success(request, f"{email} no longer has access.")
        else:
            form = MemberRoleForm(request.POST)
            if not form.is_valid():
                messages.error(request, "Choose a valid role.")
            else:
                member_set_role(membership=membership, role=form.cleaned_data["role"])
                role = membership.get_role_display()
                _member_change_record(request, f"Team member's role changed: {email} is {role}")
                messages.success(request, f"{email} is now {role}.")
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    return redirect("member_list")


def _member_change_record(request: MerchantRequest, detail: str) -> None:
    money_change_record(
        request=request,
        merchant=request.merchant,
        user=request.user,
        what="Team member's role changed or access removed",
        detail=detail,
    )


@merchant_view(Role.OWNER)
@require_recent_reauth()
def api_key_list(request: MerchantRequest) -> HttpResponse:
    """Keys are shown in full once, in the answer to their creation, and never again."""
    merchant = request.merchant
    new_key = None
    form = ApiKeyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        issued = api_key_create(merchant=merchant, name=form.cleaned_data["name"], by=request.user)
        money_change_record(
            request=request,
            merchant=merchant,
            user=request.user,
            what="API key created",
            detail=f"name: {issued.key.name}, sb_{issued.key.prefix}_…",
        )
        new_key = issued.plaintext
        form = ApiKeyForm()
    keys = ApiKey.objects.filter(merchant=merchant).select_related("created_by")
    response = render(
        request,
        "merchants/api_keys.html",
        {"form": form, "keys": keys, "new_key": new_key, "api_base": settings.SITE_URL + "/api"},
    )
    # The one page that holds a secret: no cache may keep it.
    response["Cache-Control"] = "no-store"
    return response


@merchant_view(Role.OWNER)
@require_POST
@require_recent_reauth("API key revoked")
def api_key_revoke_view(request: MerchantRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(ApiKey.objects.filter(merchant=request.merchant), pk=pk)
    api_key_revoke(key=key)
    messages.success(request, f"“{key.name}” is revoked; requests with it now get 401.")
    return redirect("api_key_list")


@merchant_view(Role.OWNER)
@require_recent_reauth(
    "Two-factor requirement for the team changed", detail_fields=("require_two_factor",)
)
def security_log(request: MerchantRequest) -> HttpResponse:
    """Who signed in, who failed to, and every change that moves money, for the owners."""
    merchant = request.merchant
    form = TeamSecurityForm(request.POST or None, instance=copy(merchant))
    if request.method == "POST" and form.is_valid():
        merchant_update(
            merchant=merchant, require_two_factor=form.cleaned_data["require_two_factor"]
        )
        messages.success(
            request,
            "Two-factor sign-in is now required for everyone on the team."
            if merchant.require_two_factor
            else "Two-factor sign-in is now each member's choice.",
        )
        return redirect("security_log")
    return render(
        request,
        "merchants/security.html",
        {"form": form, "events": security_log_for(merchant=merchant)},
    )
