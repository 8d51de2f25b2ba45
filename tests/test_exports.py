"""The public names are the contract's, and importing corepool does nothing else."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import corepool

CONTRACT = {
    "map", "imap", "starmap", "amap", "aimap", "Pool", "Executor", "shared", "cpu_count",
    "get_context",
    "CorepoolError", "TaskError", "TaskTimeout", "WorkerCrashed", "SerializationError",
}


def test_contract_names_are_exported() -> None:
    missing = CONTRACT - set(corepool.__all__)
    assert not missing
    for name in corepool.__all__:
        assert getattr(corepool, name) is not None


def test_error_tree() -> None:
    assert issubclass(corepool.TaskError, corepool.CorepoolError)
    assert issubclass(corepool.TaskTimeout, corepool.TaskError)
    assert issubclass(corepool.TaskTimeout, TimeoutError)
    assert issubclass(corepool.WorkerCrashed, corepool.TaskError)
    assert issubclass(corepool.SerializationError, corepool.CorepoolError)
    assert issubclass(corepool.SerializationError, TypeError)


def test_every_public_name_has_a_docstring() -> None:
    for name in corepool.__all__:
        obj = getattr(corepool, name)
        if callable(obj):
            assert obj.__doc__, name


@pytest.mark.timeout(60)
def test_import_has_no_side_effects() -> None:
    code = textwrap.dedent(
        """
        import threading, multiprocessing
        before = threading.active_count()
        import corepool
        assert threading.active_count() == before, "a thread was started"
        assert not multiprocessing.active_children(), "a process was started"
        import sys
        assert "numpy" not in sys.modules, "numpy imported eagerly"
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
