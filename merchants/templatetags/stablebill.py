from decimal import Decimal

from django import template
from django.http import QueryDict
from django.utils.safestring import mark_safe

from merchants.money import UnknownCurrency, format_amount, format_money

register = template.Library()


@register.filter
def money(amount: Decimal | None, currency: str) -> str:
    try:
        return format_money(amount, currency)
    except UnknownCurrency:
        return f"{amount} {currency}"


@register.filter
def amount(value: Decimal | None, currency: str) -> str:
    if value is None:
        return "—"
    try:
        return format_amount(value, currency)
    except UnknownCurrency:
        return str(value)


@register.simple_tag(takes_context=True)
def nav_current(context: template.Context, *prefixes: str) -> str:
    """aria-current for the sidebar link whose section the page is in."""
    request = context.get("request")
    if request is None:
        return ""
    match = getattr(request, "resolver_match", None)
    name = match.url_name if match else ""
    return mark_safe('aria-current="page"') if any(name.startswith(p) for p in prefixes) else ""


@register.simple_tag
def page_url(query_string: str, page: int) -> str:
    params = QueryDict(query_string, mutable=True)
    params["page"] = str(page)
    return "?" + params.urlencode()


@register.filter
def plain(value: Decimal | None) -> str:
    """A decimal without trailing zeros and never in exponent form: 10, 2.5, 0.000125."""
    if value is None:
        return "—"
    text = format(Decimal(value).normalize(), "f")
    return text


@register.filter
def timer(seconds: int | None) -> str:
    """Seconds as m:ss (or h:mm:ss), for countdowns."""
    if seconds is None:
        return ""
    minutes, secs = divmod(max(0, int(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
