"""``corepool.shared`` handles on the backends that pickle nothing (thread, serial):
the task gets the object wherever the handle sits, as a worker process would, and
what holds no handle is passed as it is (``sharedmem.resolve``)."""

from __future__ import annotations

import collections
from typing import Any

import pytest

import corepool
import rule_tasks
from corepool.sharedmem import resolve

pytestmark = pytest.mark.timeout(60)

Pair = collections.namedtuple("Pair", "left right")


def _kinds(value: Any) -> Any:
    """What the task received, by container kind."""
    pair, box, numbers, ordered, loop = value
    return (
        type(pair).__name__,
        pair.right,
        box.inside,
        sorted(numbers, key=str),
        dict(ordered),
        loop[0] is loop,
    )


@pytest.mark.parametrize("backend", ["thread", "serial"])
def test_handles_in_any_container_reach_the_task_as_objects(backend: str) -> None:
    handle = corepool.shared((1, 2, 3))
    loop: list[Any] = []
    loop.append(loop)  # a cycle, as pickle allows
    value = (
        Pair("l", handle),
        rule_tasks.Box(handle),
        frozenset({handle, 4}),
        collections.OrderedDict(a=handle),
        loop,
    )
    got = corepool.map(_kinds, [value], workers=2, backend=backend)[0]
    assert got == ("Pair", (1, 2, 3), (1, 2, 3), [(1, 2, 3), 4], {"a": (1, 2, 3)}, True)
    handle.release()


def test_what_holds_no_handle_is_passed_as_it_is() -> None:
    handle = corepool.shared([0])
    plain = {"rows": [[1, 2], (3, 4)], "box": rule_tasks.Box([5])}
    assert resolve(plain) is plain
    box = rule_tasks.Box([[handle]])
    resolved = resolve({"plain": plain, "box": box})
    assert resolved["plain"] is plain  # untouched parts are not copied
    assert resolved["box"].inside == [[[0]]]
    assert box.inside[0][0] is handle  # the caller's object is left as it was
    handle.release()
