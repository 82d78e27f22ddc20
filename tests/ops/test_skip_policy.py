"""The skip policy: a pytest run with a skip that tests/skips.py does not list fails."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.skips import disallowed

REPO = Path(__file__).resolve().parents[2]

CASES = """
import pytest

def test_runs():
    assert True

def test_listed_local_skip():
    pytest.skip("needs PostgreSQL (set DATABASE_URL=postgres://...)")

def test_unlisted_skip():
    pytest.skip("flaky on Tuesdays")

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False
"""


# The inner runs load the policy alone (tests/skips.py as a plugin, and pytest-xdist for the
# parallel case), from a folder of their own: no Django, no suite fixtures, none of the
# suite's conftest, so each costs a fraction of a second instead of a Django start-up.
# test_the_repository_runs_the_policy checks that the suite's own runs load that plugin.
INNER_CONFIG = """[pytest]
addopts = -p no:cacheprovider --disable-plugin-autoload -p tests.skips -p xdist.plugin
"""


@pytest.fixture
def case_dir(tmp_path):
    folder = tmp_path / "policy_cases"
    folder.mkdir()
    (folder / "pytest.ini").write_text(INNER_CONFIG)
    (folder / "test_cases.py").write_text(CASES)
    return folder


def run_pytest(case_dir, *args, ci):
    # The cases need no database; never let the inner run touch the outer run's one.
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "DATABASE_URL")}
    if ci:
        env["CI"] = "true"
    env.pop("PYTEST_ADDOPTS", None)
    env["PYTHONPATH"] = str(REPO)  # where tests.skips is imported from
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *args, "test_cases.py"],
        cwd=case_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_repository_runs_the_policy(request):
    """This run (`make test`, or pytest from the repository) has the policy loaded, from
    pyproject.toml's addopts."""
    from tests import skips

    assert request.config.pluginmanager.is_registered(skips)
    assert "-p tests.skips" in " ".join(request.config.getini("addopts"))


def test_listed_local_skip_passes_outside_ci(case_dir):
    result = run_pytest(case_dir, "-k", "runs or listed_local", ci=False)
    assert result.returncode == 0, result.stdout
    assert "1 passed, 1 skipped" in result.stdout


def test_unlisted_skip_and_xfail_fail_the_run(case_dir):
    result = run_pytest(case_dir, "-k", "not listed_local", ci=False)
    assert result.returncode == 1, result.stdout
    assert "skip policy (tests/skips.py)" in result.stdout
    assert "test_unlisted_skip: skipped 'flaky on Tuesdays': not listed" in result.stdout
    assert "test_xfail: xfail (known bug)" in result.stdout


def test_ci_refuses_local_only_skips_and_deselection(case_dir):
    result = run_pytest(case_dir, "-k", "runs or listed_local", ci=True)
    assert result.returncode == 1, result.stdout
    assert "test_listed_local_skip: skipped 'needs PostgreSQL" in result.stdout
    assert "allowed outside CI only" in result.stdout
    assert "test_unlisted_skip: deselected, CI runs everything" in result.stdout


def test_ci_run_without_skips_passes(case_dir):
    result = run_pytest(case_dir, "-k", "runs", ci=False)
    assert result.returncode == 0, result.stdout


def test_disallowed_matches_by_prefix():
    assert disallowed("needs PostgreSQL (set DATABASE_URL)", ci=False) is None
    assert disallowed("needs PostgreSQL (set DATABASE_URL)", ci=True) is not None
    assert disallowed("something else", ci=False) == "not listed in tests/skips.py"


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_the_policy_holds_in_parallel_runs_too(case_dir, ci):
    """`make test` runs pytest-xdist: the workers skip and deselect, the controller judges."""
    selection = "runs or listed_local" if ci else "not listed_local"
    result = run_pytest(case_dir, "-n", "2", "-k", selection, ci=ci)
    assert result.returncode == 1, result.stdout
    assert "skip policy (tests/skips.py)" in result.stdout
    if ci:
        assert "test_listed_local_skip: skipped 'needs PostgreSQL" in result.stdout
        assert "allowed outside CI only" in result.stdout
        # Deselected on both workers, listed once.
        assert result.stdout.count("test_unlisted_skip: deselected, CI runs everything") == 1
    else:
        assert "test_unlisted_skip: skipped 'flaky on Tuesdays': not listed" in result.stdout
        assert "test_xfail: xfail (known bug)" in result.stdout
