"""Reading a stream job's results: :class:`Pieces` for the faces, and the batches of
:meth:`~corepool.core.PoolCore.batches` (the seam ``corepool run`` reads through).

A bounded wait is an exception (:class:`~corepool._tasks.job.WaitExpired`) for the
faces and a batch with no outcome (``woke``) for the batches, never a value among the
results.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ._tasks.job import Piece, PieceStream, StreamJob, WaitExpired

if TYPE_CHECKING:
    from .core import PoolCore

__all__ = ["Batches", "Pieces", "ResultBatch", "batches_of"]


class Pieces:
    """A stream job's pieces as a face reads them: failures annotated with their task,
    progress counted, Ctrl-C stopping the pool, the job forgotten at the end.

    :attr:`wait` bounds each ``next()``: past it, :class:`WaitExpired` is raised and the
    iteration can go on.
    """

    __slots__ = ("_bar", "_core", "_open", "_stream")

    def __init__(self, core: PoolCore, stream: PieceStream, bar: Any) -> None:
        self._core = core
        self._stream = stream
        self._bar = bar
        self._open = True

    @property
    def job(self) -> StreamJob:
        """The job whose pieces these are."""
        return self._stream.job

    @property
    def wait(self) -> float | None:
        """The longest wait for the next piece (None: as long as it takes)."""
        return self._stream.wait

    @wait.setter
    def wait(self, seconds: float | None) -> None:
        self._stream.wait = seconds

    def __iter__(self) -> Pieces:
        return self

    def __next__(self) -> Piece:
        try:
            piece = next(self._stream)
        except WaitExpired:
            raise
        except KeyboardInterrupt:
            self._core.terminate()
            self.close()
            raise
        except BaseException:  # the end, or the job's failure
            self.close()
            raise
        if piece.failures:
            self.job.annotate(piece)
        if self._bar is not None:
            self._bar.update(len(piece.values))
        return piece

    def close(self) -> None:
        """Stop: the job's other pieces are not wanted (a no-op once all were read)."""
        if not self._open:
            return
        self._open = False
        self._stream.close()
        if self._bar is not None:
            self._bar.close()
        watcher = self._core.watcher
        if watcher is not None:
            watcher.ended_job(self.job)
        self._core._finished(self.job)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


class ResultBatch:
    """Outcomes of tasks that finished, by input index, as :meth:`PoolCore.batches`
    gives them: ``returned`` holds ``(index, value)`` of the tasks that returned,
    ``failed`` ``(index, exception)`` of those that failed (each list in the order the
    tasks finished). ``woke`` is True for a batch that holds nothing: no task finished
    within the wake-up interval."""

    __slots__ = ("failed", "returned")

    def __init__(self, returned: list[tuple[int, Any]],
                 failed: list[tuple[int, BaseException]]) -> None:
        self.returned = returned
        self.failed = failed

    @property
    def woke(self) -> bool:
        """No outcome: the wake-up interval passed first."""
        return not self.returned and not self.failed

    def __len__(self) -> int:
        return len(self.returned) + len(self.failed)

    def __repr__(self) -> str:
        return f"ResultBatch(returned={len(self.returned)}, failed={len(self.failed)})"


def _add(piece: Piece, returned: list[tuple[int, Any]],
         failed: list[tuple[int, BaseException]]) -> None:
    """Put ``piece``'s outcomes, by input index, in ``returned`` or ``failed``."""
    start, failures = piece.start, piece.failures
    if failures:
        for pos, value in enumerate(piece.values):
            error = failures.get(pos)
            if error is None:
                returned.append((start + pos, value))
            else:
                failed.append((start + pos, error))
    else:
        returned.extend(zip(range(start, start + len(piece.values)), piece.values,
                            strict=True))


class Batches:
    """:func:`batches_of` as :meth:`~corepool.core.PoolCore.batches` gives it: an
    iterator of :class:`ResultBatch`, and once it stopped (Ctrl-C, an error),
    :meth:`arrived`: the outcomes that had come back and were not given out yet."""

    __slots__ = ("_batches", "_job")

    def __init__(self, job: StreamJob, batches: Generator[ResultBatch, None, None]) -> None:
        self._job = job
        self._batches = batches

    def __iter__(self) -> Batches:
        return self

    def __next__(self) -> ResultBatch:
        return next(self._batches)

    def close(self) -> None:
        """Stop: the job is cancelled; what had arrived is still :meth:`arrived`."""
        self._batches.close()

    def arrived(self) -> ResultBatch:
        """What had finished and come back, without waiting for anything more. Taken
        after a stop, before the workers are stopped, so that a clean stop loses only
        the tasks that were running."""
        returned: list[tuple[int, Any]] = []
        failed: list[tuple[int, BaseException]] = []
        for piece in self._job.arrived():
            _add(piece, returned, failed)
        return ResultBatch(returned, failed)


def batches_of(pieces: Pieces, wake: float, most: int) -> Generator[ResultBatch, None, None]:
    """``pieces`` regrouped: what finished meanwhile (up to about ``most`` outcomes) in
    one batch; an empty batch each time ``wake`` seconds pass with nothing finished."""
    serial = pieces.job.pump is not None  # runs work inline as it is asked
    try:
        while True:
            pieces.wait = wake
            returned: list[tuple[int, Any]] = []
            failed: list[tuple[int, BaseException]] = []
            try:
                piece: Piece | None = next(pieces)
            except StopIteration:
                return
            except WaitExpired:
                piece = None
            pieces.wait = 0
            while piece is not None:
                _add(piece, returned, failed)
                if serial or len(returned) + len(failed) >= most:
                    break
                try:  # what else finished already goes in the same batch
                    piece = next(pieces)
                except WaitExpired:
                    break
                except StopIteration:
                    if returned or failed:
                        yield ResultBatch(returned, failed)
                    return
            yield ResultBatch(returned, failed)
    finally:
        pieces.close()
