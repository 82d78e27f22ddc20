"""Browser tests: a real Chromium (the system one; Playwright downloads nothing) against
pytest-django's live server."""

import os

import pytest
from playwright.sync_api import expect

# Playwright's sync API runs an event loop in this thread; Django refuses ORM calls from a
# thread with a running loop unless told it is safe. The tests touch the database only
# between browser steps, never concurrently with it.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

# The previews render a PDF or an email on the server; on this 2-core machine with the rest of
# the suite beside it, that can pass Playwright's 5 s default. A bound on waiting, not a timing
# assertion: a preview that never comes still fails.
expect.set_options(timeout=20_000)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args, chromium_path):
    return {**browser_type_launch_args, "executable_path": chromium_path, "args": CHROMIUM_ARGS}


@pytest.fixture(autouse=True)
def _live_server_over_http(settings):
    """The live server speaks plain http: secure cookies would never come back."""
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
