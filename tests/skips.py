"""The one list of reasons a test may be skipped; anything else fails the run.

A skip hides a test, so each reason here says where it is allowed: `local` reasons only outside
CI (a developer's machine without PostgreSQL, say), `anywhere` reasons in CI too. The hooks at
the end of this module match every skip's reason against these prefixes and fails the
session for an unlisted one; in CI (CI set) it also fails for a local-only reason and for any
deselected test (`-k`, `-m`, `--deselect`): CI runs everything. Add a reason here only with the
case for it; `bin/system-packages test` and `make node_modules` make the local ones vanish.

The hooks below make this module a pytest plugin, named in pyproject.toml's addopts
(`-p tests.skips`) rather than kept in tests/conftest.py: it then holds for every run from
the repository, and tests/ops/test_skip_policy.py can try it in inner runs that load it alone,
without Django and the suite's fixtures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import pytest


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


# The policy's hooks. Under pytest-xdist the controller gets every test's report
# (pytest_runtest_logreport runs there too), but only the workers collect, so deselections
# travel back in each worker's workeroutput.
_policy_breaches: list[str] = []
_deselection_breaches: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.skipped:
        return
    if hasattr(report, "wasxfail"):
        _policy_breaches.append(f"{report.nodeid}: xfail ({report.wasxfail or 'no reason'})")
        return
    reason = skip_reason(report.longrepr)
    breach = disallowed(reason, ci=bool(os.environ.get("CI")))
    if breach:
        _policy_breaches.append(f"{report.nodeid}: skipped '{reason}': {breach}")


def pytest_deselected(items: list[pytest.Item]) -> None:
    if os.environ.get("CI"):
        found = [f"{item.nodeid}: deselected, CI runs everything" for item in items]
        _deselection_breaches.extend(found)
        _policy_breaches.extend(found)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """A pytest-xdist worker finished: take over what it deselected (every worker deselects
    the same tests, hence the de-duplication)."""
    for line in getattr(node, "workeroutput", {}).get("skip_policy_deselected", []):
        if line not in _policy_breaches:
            _policy_breaches.append(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller judges the run
        workeroutput["skip_policy_deselected"] = _deselection_breaches
        return
    if _policy_breaches and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _policy_breaches:
        terminalreporter.section("skip policy (tests/skips.py)", red=True)
        for line in _policy_breaches:
            terminalreporter.line(line, red=True)
