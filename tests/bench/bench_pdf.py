"""Invoice PDFs: render time against the number of line items, and a cached download.

Figures are ratios to the warm render of a 1-item invoice measured in the same run, so they
compare across machines. "first" is the first render of that invoice in this process (after
WeasyPrint is imported, which is timed on its own); "warm" the median of 20 more renders with
the cache bypassed. That warm render is itself set against a bare WeasyPrint render of a
one-line page in the same process (`HTML(string=...).write_pdf()`, WeasyPrint's defaults),
and, beside it, the same page through our own `render_html` (no network fetcher, this
thread's fonts kept). Run with `make bench`; nothing here asserts a time.

The machine may be shared: the warm renders of every size and both one-line pages take turns
round by round, so a change in load falls on all of them alike, and each figure is given in
wall time and in this process's CPU time (which excludes the time spent waiting for a core).
"""

import io
import os
import statistics
import time

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from pypdf import PdfReader

from invoices import pdf
from invoices.models import Invoice
from tests.factories import PASSWORD, CustomerFactory, MembershipFactory, make_invoice

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.bench.urls")]

ROUNDS = 20
SIZES = (1, 10, 100)


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def wall_and_cpu(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def median_seconds(fn, rounds: int = ROUNDS) -> float:
    return statistics.median(seconds(fn) for _ in range(rounds))


def test_pdf_render_and_cached_download(capsys):
    membership = MembershipFactory(merchant__name="Bench Tools")
    merchant, user = membership.merchant, membership.user
    customer = CustomerFactory(merchant=merchant, name="Ada Lovelace", email="ada@example.org")
    cache.clear()
    import_time = seconds(pdf._engine)
    one_line = "<!doctype html><p>Invoice INV-00001 from Bench Tools</p>"
    engine = pdf._engine()

    def bare() -> None:
        engine.html(string=one_line).write_pdf()

    def bare_ours() -> None:
        pdf.render_html(one_line)

    bare(), bare_ours()  # warm both

    invoices = {}
    firsts = {}
    for size in SIZES:
        made = make_invoice(
            merchant,
            customer=customer,
            issue=True,
            items=[(f"Item {n}", "2", "12.50") for n in range(size)],
        )
        invoice = (
            Invoice.objects.select_related("merchant", "customer")
            .prefetch_related("items")
            .get(pk=made.pk)
        )
        invoices[size] = invoice
        firsts[size] = seconds(lambda invoice=invoice: pdf.invoice_pdf(invoice, use_cache=False))

    series = {"bare": bare, "bare_ours": bare_ours}
    for size, invoice in invoices.items():
        series[size] = lambda invoice=invoice: pdf.invoice_pdf(invoice, use_cache=False)
    samples: dict = {name: [] for name in series}
    for _ in range(ROUNDS):
        for name, fn in series.items():
            samples[name].append(wall_and_cpu(fn))
    wall = {name: statistics.median(s[0] for s in runs) for name, runs in samples.items()}
    cpu = {name: statistics.median(s[1] for s in runs) for name, runs in samples.items()}
    renders = {size: (firsts[size], wall[size]) for size in SIZES}
    baseline = renders[1][1]
    bare_warm, bare_ours_warm = wall["bare"], wall["bare_ours"]

    # The cached path: the hash of the HTML finds the stored PDF, as every repeat download does.
    one = invoices[1]
    pdf.invoice_pdf(one)
    cached_call = median_seconds(lambda: pdf.invoice_pdf(one))
    client = Client()
    assert client.login(email=user.email, password=PASSWORD)
    url = reverse("invoice_pdf", kwargs={"pk": one.pk})
    assert client.get(url).status_code == 200
    cached_download = median_seconds(lambda: client.get(url))
    payer_url = reverse("public_invoice_pdf", kwargs={"token": one.public_token})
    payer_download = median_seconds(lambda: client.get(payer_url))

    load = ", ".join(f"{figure:.2f}" for figure in os.getloadavg())
    with capsys.disabled():
        print(f"\nload average (1, 5, 15 min): {load}")
        print(
            f"baseline: warm render of a 1-item invoice {baseline * 1000:.1f} ms (median of {ROUNDS})"
        )
        print(
            f"bare WeasyPrint render of a one-line page: {bare_warm * 1000:.1f} ms; "
            f"the same through render_html: {bare_ours_warm * 1000:.1f} ms"
        )
        print(
            f"1-item invoice, warm / bare one-line render: {baseline / bare_warm:.2f} x "
            f"(/ render_html one-line: {baseline / bare_ours_warm:.2f} x)"
        )
        print(
            f"  in CPU time: 1-item {cpu[1] * 1000:.1f} ms / bare {cpu['bare'] * 1000:.1f} ms = "
            f"{cpu[1] / cpu['bare']:.2f} x (/ render_html one-line "
            f"{cpu['bare_ours'] * 1000:.1f} ms: {cpu[1] / cpu['bare_ours']:.2f} x)"
        )
        print(f"WeasyPrint import (once per process): {import_time / baseline:.1f} x baseline")
        print(f"{'line items':<12}{'first':>10}{'warm':>10}{'pages':>8}")
        for size in SIZES:
            first, warm = renders[size]
            pages = len(PdfReader(io.BytesIO(pdf.invoice_pdf(invoices[size]).content)).pages)
            print(f"{size:<12}{first / baseline:>10.2f}{warm / baseline:>10.2f}{pages:>8}")
        print(f"cached invoice_pdf() (hash + cache hit): {cached_call / baseline:.3f} x baseline")
        print(
            f"cached download, merchant view:          {cached_download / baseline:.3f} x baseline"
        )
        print(
            f"cached download, payer link by token:    {payer_download / baseline:.3f} x baseline"
        )
        print(
            f"100 / 1 item warm render: {renders[100][1] / renders[1][1]:.2f} "
            f"({renders[100][1] * 1000:.1f} / {renders[1][1] * 1000:.1f} ms); in CPU time "
            f"{cpu[100] / cpu[1]:.2f} ({cpu[100] * 1000:.1f} / {cpu[1] * 1000:.1f} ms)"
        )
        print(
            f"each line item beyond the first: {(wall[100] - wall[1]) / 99 * 1000:.2f} ms "
            f"(CPU {(cpu[100] - cpu[1]) / 99 * 1000:.2f} ms)"
        )
        print(
            f"goals: 1-item / bare one-line {baseline / bare_warm:.2f} x (goal <= 1.5); "
            f"100 / 1 item {renders[100][1] / renders[1][1]:.2f} x (goal <= 3)"
        )
