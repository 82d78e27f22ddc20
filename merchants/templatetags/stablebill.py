from datetime import date
from decimal import Decimal
from functools import lru_cache
from html import escape as html_escape
from typing import Any

from django import template
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import QueryDict
from django.template.defaultfilters import date as date_filter
from django.template.defaultfilters import timesince_filter
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeData, SafeString, mark_safe
from django.utils.timezone import localtime
from django.utils.translation import get_language

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
def fixed_url(name: str, *ids: object) -> str:
    """`{% url name %}` reversed once per URL configuration and script prefix, then reused:
    the sidebar of every page links twenty URLs, and each list row one with the row's id;
    reversing each on every request was a tenth of a page's time. Arguments may only be
    ids (non-negative ints, which an `<int:...>` path writes as `str(id)`); anything else
    is reversed as `{% url %}` would."""
    urlconf = get_urlconf() or settings.ROOT_URLCONF
    if not all(type(i) is int and i >= 0 for i in ids):
        return reverse(name, urlconf=urlconf, args=ids)
    parts = _fixed_url(urlconf, get_script_prefix(), name, len(ids))
    return "".join(part + str(i) for part, i in zip(parts, ids, strict=False)) + parts[-1]


# Reversed with this in place of each id, then cut around it.
_ID = 918273645546372819


@lru_cache(maxsize=1024)
def _fixed_url(urlconf: str, script_prefix: str, name: str, n_ids: int) -> tuple[str, ...]:
    # The script prefix is part of the key because reverse() prepends it.
    url = reverse(name, urlconf=urlconf, args=[_ID] * n_ids)
    parts = tuple(url.split(str(_ID)))
    if len(parts) != n_ids + 1:
        raise ValueError(f"{name} does not write its arguments as they are: use {{% url %}}")
    return parts


@receiver(setting_changed)
def _forget_fixed_urls(**kwargs: object) -> None:
    # As Django clears its own URL caches when a test changes settings (an urls.py may
    # read them); the days and badges, as they are written by the format settings.
    _fixed_url.cache_clear()
    _day.cache_clear()
    _badges.clear()


@register.simple_tag
def status_badges(invoice: Any) -> SafeString:
    """The invoice's status badge, with its failure reason, and its refund badge if any.
    A tag rather than an {% include %} per row: the lists render one per invoice shown.
    Written once per status, reason, refund state and language, then reused: every list
    row has one, and there are a few dozen combinations."""
    key = (invoice.status, invoice.failure_reason, invoice.refund_state, get_language())
    html = _badges.get(key)
    if html is None:
        if len(_badges) >= 1024:  # a column holding values outside its choices
            _badges.clear()
        html = _badges[key] = _status_badges(invoice)
    return html


_badges: dict[tuple[str, str, str, str | None], SafeString] = {}


def _status_badges(invoice: Any) -> SafeString:
    status = invoice.get_status_display()
    if invoice.failure_reason:
        status = format_html("{} · {}", status, invoice.get_failure_reason_display().lower())
    html = format_html('<span class="badge badge-{}">{}</span>', invoice.status, status)
    if invoice.refund_state:
        html = format_html(
            '{} <span class="badge badge-refund">{}</span>',
            html,
            invoice.get_refund_state_display(),
        )
    return html


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


# One row of the invoice list, as the template wrote it, whitespace included.
_INVOICE_ROW = """
        <tr class="rowlink">
          <td><a class="ref" href="{url}"><strong>{reference}</strong></a>{permanent}
            <div class="sub-line show-sm">{customer_or_none}</div>
            {foreign_id}</td>
          <td class="hide-sm">{customer}</td>
          <td>{badges}</td>
          <td class="hide-sm">{due}</td>
          <td class="hide-md muted">{created}</td>
          <td class="num"><strong>{total}</strong></td>
        </tr>
      """


def _escaped(text: str) -> str:
    """conditional_escape() of a plain string, as it writes it, for the row writers below:
    Django's escape() also checks every argument for a lazy string first, and at some 400
    values a page that check was a tenth of the list's time."""
    return text.__html__() if isinstance(text, SafeData) else html_escape(text)


@lru_cache(maxsize=4096)
def _day(day: date, date_format: str, language: str | None) -> str:
    """A day as the `date` filter writes it, escaped: a page shows a few distinct days."""
    return html_escape(date_filter(day, date_format))


def _invoice_row(invoice: Any, created_format: str, language: str | None) -> dict[str, str]:
    """What the list's and the dashboard's invoice rows both show, by placeholder, escaped."""
    name = invoice.customer.name if invoice.customer_id is not None else ""
    return {
        "url": html_escape(fixed_url("invoice_detail", invoice.pk)),
        "reference": _escaped(invoice.reference),
        "customer_or_none": _escaped(name) if name else "No customer",
        "customer": _escaped(name) if name else "—",
        "badges": status_badges(invoice),
        # The site's time zone, as the template's date filter would have converted it.
        "created": _day(localtime(invoice.created_at).date(), created_format, language),
        "total": _escaped(invoice.total_display),
    }


@register.simple_tag
def invoice_rows(invoices: Any) -> SafeString:
    """The invoice list's rows. Written here rather than as a {% for %} over template markup:
    each of the 25 rows cost the template engine some thirty variable lookups and filters,
    most of the list's rendering and what made a full page dearer than a short one."""
    language = get_language()
    # Safe: every value put in the markup was escaped (_invoice_row, _escaped, _day).
    return mark_safe(  # noqa: S308
        "".join(
            _INVOICE_ROW.format(
                **_invoice_row(invoice, "M j, Y", language),
                permanent=' <span class="tag">Permanent</span>'
                if invoice.kind == "permanent"
                else "",
                foreign_id=f'<div class="muted small mono">{_escaped(invoice.foreign_id)}</div>'
                if invoice.foreign_id
                else "",
                due=_day(invoice.due_date, "M j, Y", language) if invoice.due_date else "—",
            )
            for invoice in invoices
        )
    )


_RECENT_INVOICE_ROW = """
        <tr class="rowlink"><td><a class="ref" href="{url}"><strong>{reference}</strong></a>\
<div class="sub-line"><span class="show-sm">{customer_or_none} · </span>{created}</div></td>
          <td class="hide-sm">{customer}</td><td>{badges}</td><td class="num">{total}</td></tr>
      """


@register.simple_tag
def recent_invoice_rows(invoices: Any) -> SafeString:
    """The dashboard's recent invoices, written here for the reason invoice_rows is: as a
    {% for %} over markup, its six rows and eight activity items were two fifths of the
    dashboard's time."""
    language = get_language()
    # Safe: as in invoice_rows.
    return mark_safe(  # noqa: S308
        "".join(
            _RECENT_INVOICE_ROW.format(**_invoice_row(invoice, "M j", language))
            for invoice in invoices
        )
    )


_ACTIVITY_ITEM = """
      <li><a href="{url}"><strong>{reference}</strong></a> · {title}
        <div class="when">{since} ago · {actor}</div></li>
      """


@register.simple_tag
def activity_items(events: Any) -> SafeString:
    """The dashboard's latest events, each with its invoice (see recent_invoice_rows)."""
    return format_html_join(
        "",
        _ACTIVITY_ITEM,
        (
            {
                "url": fixed_url("invoice_detail", event.invoice_id),
                "reference": event.invoice.reference,
                "title": event.title,
                "since": timesince_filter(event.created_at),
                "actor": event.actor_display,
            }
            for event in events
        ),
    )
