"""The invoice editor end to end, in a real browser: a merchant writes an invoice for a customer
they create on the spot, watches the live total, issues it and finds it in the list.

Screenshots of every step land in test-artifacts/e2e/ (gitignored) to look at afterwards.
"""

import io
import re
from decimal import Decimal
from pathlib import Path

import pytest
from playwright.sync_api import ConsoleMessage, Page, expect
from pypdf import PdfReader

from customers.models import Customer
from invoices.models import Invoice, InvoiceStatus, TaxRate
from merchants.models import Role
from tests.factories import PASSWORD, CustomerFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "e2e"

# Quantities and prices whose sum shows the server adds decimals exactly (no float drift):
# 2 * 1,250.50 + 3 * 19.99 + 0.5 * 80.10 = 2,501.00 + 59.97 + 40.05 = 2,601.02
ITEMS = [
    ("Brand workshop", "2", "1250.50", "2,501.00"),
    ("Icon set", "3", "19.99", "59.97"),
    ("Rush delivery", "0.5", "80.10", "40.05"),
]
TOTAL = "$2,601.02"

# Reports CSP violations to the test: an init script runs before any page script and is not
# itself subject to the page's CSP.
CSP_LISTENER = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.__reportCspViolation(
    `${event.violatedDirective} blocked ${event.blockedURI || "inline"} at ${event.sourceFile}:${event.lineNumber}:${event.columnNumber} sample=${event.sample}`
  );
});
"""


PREVIEW_PDF_OF_FORM = """async () => {
  const data = new FormData(document.getElementById("invoice-form"));
  data.set("preview", "pdf");
  const response = await fetch("/invoices/preview/", {method: "POST", body: data});
  return Array.from(new Uint8Array(await response.arrayBuffer()));
}"""


@pytest.fixture
def owner(db):
    user = UserFactory(email="olivia@acme.test", first_name="Olivia", last_name="Owner")
    MembershipFactory(
        user=user, role=Role.OWNER, merchant__name="Acme Tools", merchant__default_currency="USD"
    )
    return user


@pytest.fixture
def watched_page(page: Page):
    """The page, with every console error, uncaught exception and CSP violation recorded."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console error on {page.url}: {message.text} ({message.location})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"uncaught exception: {error}"))
    page.expose_function(
        "__reportCspViolation", lambda text: problems.append(f"CSP violation on {page.url}: {text}")
    )
    page.add_init_script(CSP_LISTENER)
    page.set_default_timeout(10_000)
    page.problems = problems  # type: ignore[attr-defined]
    return page


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # caret="initial": hiding the caret leaves an empty style="" on every input, which htmx then
    # copies while settling a swap, and the CSP rightly blocks that (a violation we would cause).
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True, caret="initial")


def test_owner_writes_issues_and_finds_an_invoice(chromium_path, live_server, owner, watched_page):
    page = watched_page

    # Sign in.
    page.goto(f"{live_server.url}/login/")
    shot(page, "01-login")
    page.get_by_label("Email").fill(owner.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Good to see you, Olivia")
    shot(page, "02-dashboard")

    # Open the editor from the dashboard.
    # The editor loads the PDF preview as it opens; in a fresh server process that first
    # render also imports WeasyPrint (seconds), so let it finish before typing.
    with page.expect_response(_preview_of("pdf"), timeout=30_000):
        page.get_by_role("link", name="New invoice").click()
    expect(page).to_have_url(re.compile(r"/invoices/new/$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("New invoice")
    shot(page, "03-new-invoice")

    # Create a customer inline; the dialog closes and the picker selects them.
    page.get_by_role("button", name="+ New customer").click()
    dialog = page.locator("dialog#customer-dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Name").fill("Marie Curie")
    dialog.get_by_label("Email").fill("Marie@Radium.example")
    dialog.get_by_label("Company").fill("Radium Institute")
    shot(page, "04-customer-dialog")
    dialog.get_by_role("button", name="Add customer").click()
    expect(dialog).to_be_hidden()
    customer_select = page.locator("#id_customer")
    expect(customer_select.locator("option:checked")).to_have_text(
        "Marie Curie — marie@radium.example"
    )
    customer = Customer.objects.get(merchant__name="Acme Tools", email="marie@radium.example")
    expect(customer_select).to_have_value(str(customer.pk))
    shot(page, "05-customer-selected")

    # Three line items: the first row is there, the others come from "+ Add item".
    rows = page.locator("#item-rows tr")
    expect(rows).to_have_count(1)
    for index, (name, quantity, price, _) in enumerate(ITEMS):
        if index:
            page.get_by_role("button", name="+ Add item").click()
            expect(rows).to_have_count(index + 1)
        row = rows.nth(index)
        row.locator(f"input[name='items-{index}-name']").fill(name)
        row.locator(f"input[name='items-{index}-quantity']").fill(quantity)
        row.locator(f"input[name='items-{index}-unit_price']").fill(price)

    # The live total is the exact sum, and each row shows its own amount.
    expect(page.locator("#grand-total")).to_have_text(TOTAL)
    for index, (*_, amount) in enumerate(ITEMS):
        expect(page.locator(f"#amount-{index}")).to_have_text(amount)
    shot(page, "06-items-and-total")

    # Issue it: the detail page shows an open invoice with the same total.
    page.get_by_role("button", name="Create only").click()
    expect(page).to_have_url(re.compile(r"/invoices/\d+/$"))
    invoice = Invoice.objects.get(merchant__name="Acme Tools")
    assert invoice.status == InvoiceStatus.OPEN
    assert invoice.total == Decimal("2601.02")
    assert invoice.customer == customer
    assert [(item.name, item.amount) for item in invoice.items.all()] == [
        (name, Decimal(amount.replace(",", ""))) for name, _, _, amount in ITEMS
    ]
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text(invoice.reference)
    expect(heading.locator(".badge")).to_have_text("Open")
    expect(page.get_by_role("status")).to_contain_text(f"Invoice {invoice.reference} issued.")
    expect(page.locator(".doc-total")).to_have_text(TOTAL)
    expect(page.locator(".doc-head")).to_contain_text("Marie Curie")
    shot(page, "07-invoice-detail")

    # The list shows it, open, with its total.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Invoices").click()
    expect(page).to_have_url(re.compile(r"/invoices/$"))
    row = page.locator("#results tbody tr", has_text=invoice.reference)
    expect(row).to_have_count(1)
    expect(row.locator(".badge")).to_have_text("Open")
    expect(row).to_contain_text("Marie Curie")
    expect(row.locator("td.num")).to_have_text(TOTAL)
    shot(page, "08-invoice-list")

    assert page.problems == [], "\n".join(page.problems)  # type: ignore[attr-defined]


def _preview_of(kind: str):
    def matches(response) -> bool:
        request = response.request
        return "/invoices/preview/" in request.url and f"preview={kind}" in (
            request.post_data or ""
        )

    return matches


def _wait_for_pdf_viewer(page: Page) -> None:
    """Until the preview frame holds Chromium's PDF viewer, loaded."""
    for _ in range(300):
        viewers = [f for f in page.frames if f.url.startswith("chrome-extension://")]
        if viewers:
            viewers[-1].wait_for_load_state("load", timeout=30_000)
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"no PDF viewer in the preview: {[f.url for f in page.frames]}")


def test_owner_previews_the_pdf_and_email_then_creates_and_sends(
    chromium_path, live_server, owner, watched_page, mailoutbox
):
    page = watched_page
    merchant = owner.memberships.get().merchant
    CustomerFactory(merchant=merchant, name="Grace Hopper", email="grace@cobol.example")
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Email").fill(owner.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    # The editor loads the PDF preview of the empty form as soon as it opens.
    with page.expect_response(_preview_of("pdf"), timeout=30_000):
        page.goto(f"{live_server.url}/invoices/new/")

    page.locator("#id_customer").select_option(label="Grace Hopper — grace@cobol.example")
    page.locator("input[name='items-0-name']").fill("Compiler <audit>")
    page.locator("input[name='items-0-quantity']").fill("3")
    page.locator("input[name='items-0-unit_price']").fill("400")
    expect(page.locator("#grand-total")).to_have_text("$1,200.00")

    # The PDF preview follows the form; then the email, as Grace will get it.
    preview = page.frame_locator("#preview-frame")
    pdf_tab = page.get_by_role("tab", name="PDF")
    expect(pdf_tab).to_have_attribute("aria-selected", "true")
    with page.expect_response(_preview_of("pdf")) as pdf_preview:
        pdf_tab.click()
    assert pdf_preview.value.headers["content-type"] == "application/pdf"
    # Switch once the PDF is on screen, as a person would: Chromium's PDF viewer navigated away
    # while it is still starting up can leave the frame's next document out of reach.
    _wait_for_pdf_viewer(page)
    with page.expect_response(_preview_of("email"), timeout=30_000):
        page.get_by_role("tab", name="Email").click()
    expect(preview.locator("body")).to_contain_text("Hello Grace Hopper,")
    expect(preview.locator("body")).to_contain_text("Compiler <audit> \u00d7 3")
    expect(preview.locator("body")).to_contain_text("Pay $1,200.00")
    shot(page, "09-email-preview")

    # Typing refreshes the visible preview on its own.
    page.locator("input[name='items-0-unit_price']").fill("500")
    expect(preview.locator("body")).to_contain_text("Pay $1,500.00")
    assert Invoice.objects.count() == 0  # previews save nothing

    page.get_by_role("button", name="Create and send").click()
    expect(page).to_have_url(re.compile(r"/invoices/\d+/$"))
    invoice = Invoice.objects.get()
    expect(page.get_by_role("status")).to_contain_text(
        f"Invoice {invoice.reference} issued and on its way to grace@cobol.example."
    )
    assert [m.to for m in mailoutbox] == [["grace@cobol.example"]]
    assert mailoutbox[0].attachments[0][0] == f"{invoice.reference}.pdf"
    page.get_by_role("tab", name="Emails").click()
    expect(page.locator("#emails .badge")).to_have_text("Sent")
    expect(page.get_by_role("button", name="Resend")).to_be_visible()
    shot(page, "10-invoice-sent")

    assert page.problems == [], "\n".join(page.problems)  # type: ignore[attr-defined]


def test_taxes_and_discounts_update_the_totals_and_the_preview(
    chromium_path, live_server, owner, watched_page
):
    """The worked example of tests/invoices/test_figures.py typed into the editor: the live
    summary, the PDF preview and the issued invoice all show the same figures."""
    page = watched_page
    merchant = owner.memberships.get().merchant
    vat = TaxRate.objects.create(merchant=merchant, name="VAT", percent=Decimal("20"))
    TaxRate.objects.create(merchant=merchant, name="VAT", percent=Decimal("5"))
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Email").fill(owner.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    with page.expect_response(_preview_of("pdf"), timeout=30_000):
        page.goto(f"{live_server.url}/invoices/new/")

    # 3 x 19.99 = 59.97, 10% off -> 53.97, VAT 20%
    page.locator("input[name='items-0-name']").fill("Widget")
    page.locator("input[name='items-0-quantity']").fill("3")
    page.locator("input[name='items-0-unit_price']").fill("19.99")
    page.locator("select[name='items-0-discount_kind']").select_option("percent")
    page.locator("input[name='items-0-discount_value']").fill("10")
    page.locator("select[name='items-0-tax_rate']").select_option(label="VAT 20%")
    expect(page.locator("#amount-0")).to_have_text("53.97")
    expect(page.locator("[data-tax='VAT 20%']")).to_have_text("10.79")
    expect(page.locator("#grand-total")).to_have_text("$64.76")

    # 100.00 at VAT 5%, then 10% off the whole invoice.
    page.get_by_role("button", name="+ Add item").click()
    page.locator("input[name='items-1-name']").fill("Book")
    page.locator("input[name='items-1-unit_price']").fill("100")
    page.locator("select[name='items-1-tax_rate']").select_option(label="VAT 5%")
    page.locator("#id_discount_kind").select_option("percent")
    page.locator("#id_discount_value").fill("10")
    expect(page.locator("#subtotal")).to_have_text("153.97")
    expect(page.locator("#discount-total")).to_have_text("\N{MINUS SIGN}15.40")
    expect(page.locator("[data-tax='VAT 20%']")).to_have_text("9.71")
    expect(page.locator("[data-tax='VAT 5%']")).to_have_text("4.50")
    expect(page.locator("#grand-total")).to_have_text("$152.78")
    shot(page, "20-taxes-and-discounts")

    # The PDF preview is made from the same form by the same function. Chromium's PDF viewer
    # keeps the frame's bytes to itself, so the page posts its own form as the preview does.
    body = page.evaluate(PREVIEW_PDF_OF_FORM)
    text = " ".join(page_.extract_text() for page_ in PdfReader(io.BytesIO(bytes(body))).pages)
    for figure in ("153.97", "15.40", "9.71", "4.50", "152.78"):
        assert figure in text, figure

    page.get_by_role("button", name="Create only").click()
    expect(page).to_have_url(re.compile(r"/invoices/\d+/$"))
    invoice = Invoice.objects.get(merchant=merchant)
    assert (invoice.subtotal, invoice.discount_total, invoice.tax_total, invoice.total) == (
        Decimal("153.97"),
        Decimal("15.40"),
        Decimal("14.21"),
        Decimal("152.78"),
    )
    assert invoice.items.first().tax_rate == vat
    expect(page.locator(".doc-total")).to_have_text("$152.78")
    shot(page, "21-issued-with-taxes")
    assert page.problems == [], "\n".join(page.problems)  # type: ignore[attr-defined]
