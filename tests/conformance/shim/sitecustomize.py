"""Loaded by every interpreter of the conformance tier (its directory is on PYTHONPATH).

Outside the tier (``COREPOOL_CONFORMANCE`` unset) it does nothing. Inside, it puts
corepool's classes where CPython's tests look for the stdlib's, in the scripts those
tests run as subprocesses too.
"""

import os

if os.environ.get("COREPOOL_CONFORMANCE"):
    import corepool_substitute

    corepool_substitute.install()
