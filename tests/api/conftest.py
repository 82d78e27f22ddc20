import inspect

import pytest
from schemathesis.pytest import _test_builder

_build_operation_test = _test_builder.build_operation_test


def _build_when_run(**kwargs):
    """Schemathesis builds each operation's Hypothesis test while collecting, and that build
    draws the coverage phase's cases (strings up to the schema's 5,000-character bounds, one
    character per Hypothesis draw): about 45 s of CPU for tests/api/test_schemathesis.py. Every
    pytest-xdist worker collects every test, so each paid it whether or not it ran one. Here the
    item gets a stand-in with the same fixtures that builds the very same test (same config,
    seed and cases) the first time it runs, on the one worker that runs it."""
    test_func = kwargs["test_func"]
    given = {"case", *kwargs["given_kwargs"]}
    built = None

    def run_operation_test(*args, **kw):
        nonlocal built
        if built is None:
            built = _build_operation_test(**kwargs)
            # What Schemathesis finds building it, read off the item's function after the run.
            run_operation_test._schemathesis_metadata = built._schemathesis_metadata
        return built(*args, **kw)

    signature = inspect.signature(test_func)
    run_operation_test.__signature__ = signature.replace(
        parameters=[p for p in signature.parameters.values() if p.name not in given]
    )
    # Its marks (django_db, Schemathesis' own). Hypothesis' settings stay with test_func, where
    # the build reads them: on a function that is no Hypothesis test yet its plugin refuses them.
    vars(run_operation_test).update(
        {k: v for k, v in vars(test_func).items() if "hypothesis" not in k and k != "__wrapped__"}
    )
    # The mark Hypothesis' plugin gives its tests when it sees one (`-m hypothesis`).
    run_operation_test.pytestmark = [*getattr(test_func, "pytestmark", []), pytest.mark.hypothesis]
    run_operation_test.__name__ = test_func.__name__
    run_operation_test.__module__ = test_func.__module__
    return run_operation_test


# schemathesis.pytest.plugin imports the builder from this module at each collection.
_test_builder.build_operation_test = _build_when_run
