"""The one list of reasons a test may be skipped; anything else fails the run.

A skip hides a test, so each reason here says where it is allowed: `local` reasons only outside
CI (a developer's machine without PostgreSQL, say), `anywhere` reasons in CI too. The hook at
the end of tests/conftest.py matches every skip's reason against these prefixes and fails the
session for an unlisted one; in CI (CI set) it also fails for a local-only reason and for any
deselected test (`-k`, `-m`, `--deselect`): CI runs everything. Add a reason here only with the
case for it; `bin/system-packages test` and `make node_modules` make the local ones vanish.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class AllowedSkip:
    prefix: str
    where: Literal["local", "anywhere"]
    why: str


ALLOWED_SKIPS: tuple[AllowedSkip, ...] = (
    AllowedSkip(
        "needs PostgreSQL",
        "local",
        "row-lock concurrency tests; SQLite runs skip them, CI runs PostgreSQL",
    ),
    AllowedSkip(
        "Chromium is not installed",
        "local",
        "pytest run by hand on a machine without bin/system-packages test",
    ),
    AllowedSkip(
        "zbarimg is not installed",
        "local",
        "pytest run by hand on a machine without bin/system-packages test",
    ),
    AllowedSkip(
        "needs the openssl command",
        "local",
        "pytest run by hand on a machine without bin/system-packages test",
    ),
    AllowedSkip(
        "node_modules/",
        "local",
        "the npm dev tools (anvil, solc) before `make node_modules`",
    ),
)


def skip_reason(longrepr: object) -> str:
    """The reason text of a skipped report ('Skipped: why' in a (path, line, text) tuple)."""
    is_tuple = isinstance(longrepr, tuple) and len(longrepr) == 3
    text = str(longrepr[2]) if is_tuple else str(longrepr)  # type: ignore[index]
    return text.removeprefix("Skipped: ")


def disallowed(reason: str, *, ci: bool) -> str | None:
    """Why a skip with this reason breaks the policy, or None when it is allowed."""
    for allowed in ALLOWED_SKIPS:
        if reason.startswith(allowed.prefix):
            if ci and allowed.where == "local":
                return f"allowed outside CI only ({allowed.why})"
            return None
    return "not listed in tests/skips.py"
