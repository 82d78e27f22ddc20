"""Sign in and screenshot pages of a running Stablebill, to look at what we build.

Usage: .venv/bin/python bin/screenshot.py BASE_URL EMAIL PASSWORD OUTDIR PATH [PATH ...]
Each PATH may carry a name: `/invoices/=invoices`.
"""

import contextlib
import sys
from pathlib import Path

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


def main() -> None:
    base, email, password, outdir, *paths = sys.argv[1:]
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for width, suffix in ((1366, ""), (390, "-mobile")):
            page = browser.new_page(viewport={"width": width, "height": 900})
            errors: list[str] = []

            def keep_error(message, errors=errors) -> None:
                if message.type == "error":
                    errors.append(message.text)

            page.on("console", keep_error)
            page.goto(base + "/login/")
            page.fill("input[name=login]", email)
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_load_state("networkidle")
            for item in paths:
                path, _, name = item.partition("=")
                name = name or (path.strip("/").replace("/", "_") or "dashboard")
                page.goto(base + path)
                # The payment page keeps its status request open (long poll): never idle.
                with contextlib.suppress(PlaywrightTimeout):
                    page.wait_for_load_state("networkidle", timeout=5_000)
                page.screenshot(path=str(out / f"{name}{suffix}.png"), full_page=True)
            for error in errors:
                print("console error:", error)
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
