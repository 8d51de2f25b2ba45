"""Loaded by every interpreter of the conformance tier (its directory is on PYTHONPATH).

Outside the tier it does nothing. Inside, it lets ``test.test_concurrent_futures`` be
imported (``COREPOOL_CONFORMANCE_TESTS``), and with ``COREPOOL_CONFORMANCE`` set it puts
corepool's classes where CPython's tests look for the stdlib's, in the scripts those
tests run as subprocesses too. (Without it, the runner's ``--reference`` mode runs the
same tests against the stdlib.)
"""

import os

if os.environ.get("COREPOOL_CONFORMANCE_TESTS") or os.environ.get("COREPOOL_CONFORMANCE"):
    import corepool_substitute

    if os.environ.get("COREPOOL_CONFORMANCE"):
        corepool_substitute.install()
    else:
        corepool_substitute.add_test_files()
