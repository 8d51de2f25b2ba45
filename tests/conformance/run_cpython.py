"""Run CPython's own Pool or ProcessPoolExecutor tests against corepool, in this process.

    python tests/conformance/run_cpython.py SUITE START_METHOD OUT.json [--reference]

SUITE is ``pool`` (``test._test_multiprocessing``'s Pool tests and
``test.test_multiprocessing_main_handling``, from this interpreter's own test package)
or ``executor`` (the process-pool tests of ``test_concurrent_futures``, which Python
3.11 does not ship: the copy of Python 3.10's is loaded from the directory in
``COREPOOL_CONFORMANCE_TESTS``). ``--reference`` runs the same selection against the
stdlib's classes, to show that the selection passes there.

Only tests of the public API are selected: a test that reads a private attribute of
the pool (``pool._pool``, ``executor._processes``, ...) is left out, and reported as
such. Each test has its own time limit: a test that hangs dumps every thread's stack
and ends the run, and the last test started is the one that hung.

The result is a JSON object: ``{test id: [outcome, detail]}`` with outcome ``passed``,
``failed``, ``skipped`` or ``private``; it is rewritten after every test.
"""

from __future__ import annotations

import faulthandler
import inspect
import json
import multiprocessing
import os
import re
import sys
import unittest
from typing import Any

# A test that touches one of these names on the pool under test is not public-API.
_PRIVATE = re.compile(r"\b(?:self\.executor|executor|self\.pool|pool|p|e)\._(?!_)\w+")

POOL_CLASSES = {
    "WithProcessesTestPool": None,
    "WithProcessesTestPoolWorkerErrors": None,
    "WithProcessesTestPoolWorkerLifetime": None,
    "TestInitializers": ["test_pool_initializer"],
    "TestStdinBadfiledescriptor": ["test_pool_in_process"],
}
MAIN_HANDLING = {"fork": "ForkCmdLineTest", "forkserver": "ForkServerCmdLineTest",
                 "spawn": "SpawnCmdLineTest"}


def _load(loader: unittest.TestLoader, cls: type, names: list[str] | None) -> list[Any]:
    names = names or loader.getTestCaseNames(cls)
    return [cls(name) for name in names]


def pool_tests(method: str) -> list[Any]:
    """The Pool tests of ``test._test_multiprocessing`` and the ``__main__`` handling tests."""
    import test._test_multiprocessing as base
    import test.test_multiprocessing_main_handling as main_handling

    os.environ["COREPOOL_CONFORMANCE_METHOD"] = method
    import cpython_pool_tests as module
    loader = unittest.TestLoader()
    tests: list[Any] = []
    for name, names in POOL_CLASSES.items():
        cls = getattr(module, name, None) or getattr(base, name)
        tests += _load(loader, cls, names)
    tests += _load(loader, getattr(main_handling, MAIN_HANDLING[method]), None)
    return tests


def executor_tests(method: str) -> list[Any]:
    """The process-pool tests of ``test.test_concurrent_futures`` for ``method``."""
    import test.test_concurrent_futures as cf

    loader = unittest.TestLoader()
    tests: list[Any] = []
    for name, cls in sorted(vars(cf).items()):
        if (
            isinstance(cls, type)
            and issubclass(cls, unittest.TestCase)
            and name.startswith("ProcessPool")
            and getattr(cls, "ctx", None) == method
        ):
            tests += _load(loader, cls, None)
    return tests


def _is_private(test: Any) -> str | None:
    method = getattr(type(test), test._testMethodName)
    found = _PRIVATE.search(inspect.getsource(method))
    return found.group(0) if found else None


class _Recorder(unittest.TestResult):
    """Records each outcome, and arms a per-test time limit."""

    def __init__(self, out: str, limit: float) -> None:
        super().__init__()
        self.out = out
        self.limit = limit
        self.outcomes: dict[str, list[str]] = {}

    def _set(self, test: Any, outcome: str, detail: str = "") -> None:
        self.outcomes[test.id()] = [outcome, detail[-4000:]]
        with open(self.out, "w") as f:
            json.dump(self.outcomes, f, indent=1)

    def startTest(self, test: Any) -> None:
        super().startTest(test)
        self._set(test, "started")
        faulthandler.dump_traceback_later(self.limit, exit=True)

    def stopTest(self, test: Any) -> None:
        faulthandler.cancel_dump_traceback_later()
        if self.outcomes.get(test.id(), ["started"])[0] == "started":
            self._set(test, "passed")
        super().stopTest(test)

    def addError(self, test: Any, err: Any) -> None:
        super().addError(test, err)
        self._set(test, "failed", self._exc_info_to_string(err, test))

    def addFailure(self, test: Any, err: Any) -> None:
        super().addFailure(test, err)
        self._set(test, "failed", self._exc_info_to_string(err, test))

    def addSkip(self, test: Any, reason: str) -> None:
        super().addSkip(test, reason)
        self._set(test, "skipped", reason)

    def addSubTest(self, test: Any, subtest: Any, err: Any) -> None:
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._set(test, "failed", self._exc_info_to_string(err, test))


def main(argv: list[str]) -> int:
    suite_name, method, out = argv[:3]
    reference = "--reference" in argv
    limit = float(os.environ.get("COREPOOL_CONFORMANCE_TEST_TIMEOUT", "60"))
    from test.support import script_helper

    # CPython's scripts run in isolated mode (-I) unless the interpreter needs its
    # environment; this tier's does (PYTHONPATH: corepool and the substitution).
    setattr(script_helper, "__cached_interp_requires_environment", True)
    import corepool_substitute

    if reference:
        os.environ.pop("COREPOOL_CONFORMANCE", None)
        corepool_substitute.add_test_files()
    else:
        corepool_substitute.install()
    multiprocessing.set_start_method(method, force=True)
    tests = pool_tests(method) if suite_name == "pool" else executor_tests(method)
    result = _Recorder(out, limit)
    only = os.environ.get("COREPOOL_CONFORMANCE_ONLY")  # a substring of test ids
    selected = []
    for test in tests:
        if only and only not in test.id():
            continue
        private = _is_private(test)
        if private:
            result._set(test, "private", private)
        else:
            selected.append(test)
    unittest.TestSuite(selected).run(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
