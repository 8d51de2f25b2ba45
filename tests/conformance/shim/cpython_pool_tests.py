"""CPython's Pool test classes for one start method, in a module workers can import.

The classes are built by ``test._test_multiprocessing.install_tests_in_module_dict``
(as CPython's ``test_multiprocessing_<method>`` modules do) for the start method in
``COREPOOL_CONFORMANCE_METHOD``; a worker started by ``spawn`` or ``forkserver``
imports this module to find a test's classmethod by name, as with CPython's modules.
"""

import os

if os.environ.get("COREPOOL_CONFORMANCE_METHOD"):
    import test._test_multiprocessing as _base

    _base.install_tests_in_module_dict(
        globals(), os.environ["COREPOOL_CONFORMANCE_METHOD"], only_type="processes"
    )
