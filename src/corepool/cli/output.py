"""Where ``corepool run`` writes its rows: journal first, then standard output or a
file replaced whole.

:class:`Committer` takes batches of finished tasks and their rows, and in a thread of
its own commits each batch to the journal and only then writes its rows: the output
never shows what the journal could lose, and SQLite's work (which releases the GIL)
overlaps with reading input and taking results.

A file ``OUTPUT`` is written as ``OUTPUT.partial`` beside it, and renamed over
``OUTPUT`` (after an fsync) only when the batch has reached the end of its input. So
``OUTPUT`` always holds the complete output of one run: after Ctrl-C, ``--max-failures``
or ``kill -9`` it is still what it was before (or absent), and the rows written so far
are in ``OUTPUT.partial``. The journal, not the output, is what a re-run trusts: it
rewrites the output whole from the journal and runs only what is missing.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from typing import IO

from .journal import Journal, LoggedLines, OkRecord, RunProgress, TaskRecord
from .report import Counts
from .target import UsageError

__all__ = ["PARTIAL_SUFFIX", "Committer", "Output"]

PARTIAL_SUFFIX = ".partial"
_Item = tuple[list[OkRecord], list[TaskRecord], str, RunProgress, Counts,
              list[tuple[int, str]], list[LoggedLines]]


class Output:
    """Rows out, in order: to standard output, or to ``path`` through its partial file."""

    def __init__(self, path: str | None) -> None:
        self.path = path if path and path != "-" else None
        self.partial = None if self.path is None else self.path + PARTIAL_SUFFIX
        self._file: IO[str]
        if self.partial is None:
            self._file = sys.stdout
            return
        try:
            self._file = open(self.partial, "w", encoding="utf-8")  # noqa: SIM115 - see close
        except OSError as exc:
            raise UsageError(f"cannot write {self.partial}: {exc.strerror}") from None

    def write(self, text: str) -> None:
        """Append rows (text ending with a newline) and hand them to the OS."""
        self._file.write(text)
        self._file.flush()

    def complete(self) -> None:
        """The batch reached the end of its input: put the file in place, durably."""
        if self.path is None or self.partial is None:
            self._file.flush()
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.path)
        directory = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)

    def close(self) -> None:
        """Stop writing; an incomplete file stays at :attr:`partial`."""
        if self._file is not sys.stdout and not self._file.closed:
            self._file.close()


class Committer:
    """Batches in order: each committed to the journal, then its rows written."""

    def __init__(self, journal: Journal, run: int, out: Output) -> None:
        self.journal, self.run, self.out = journal, run, out
        self.error: BaseException | None = None
        self.committed = Counts()  # the counts of the last batch committed and written
        self._batches: queue.Queue[_Item | None] = (
            queue.Queue(maxsize=2)  # bounded: a slow disk holds back the results
        )
        self._thread = threading.Thread(target=self._loop, name="corepool-run-writer",
                                        daemon=True)
        self._thread.start()

    def put(self, ok: list[OkRecord], failed: list[TaskRecord], rows: str,
            progress: RunProgress, counts: Counts, bad: list[tuple[int, str]] | None = None,
            logged: list[LoggedLines] | None = None) -> None:
        """Commit the records of tasks that succeeded (``ok``) and ``failed`` with the
        run's ``progress``, then write ``rows``, after which :attr:`committed` is
        ``counts`` (``bad``: input lines found unusable, and ``logged``: failed tasks'
        lines, for the journal); raises what an earlier batch failed with."""
        if self.error is not None:
            raise self.error
        self._batches.put((ok, failed, rows, progress, counts, bad or [], logged or []))

    def _loop(self) -> None:
        while (batch := self._batches.get()) is not None:
            if self.error is not None:
                continue  # drop the rest: nothing after a failed commit is shown
            ok, failed, rows, progress, counts, bad, logged = batch
            try:
                self.journal.commit_tasks(ok, failed, self.run, progress, bad, logged)
                self.out.write(rows)
                self.committed = counts
            except BaseException as exc:
                self.error = exc

    def close(self) -> None:
        """Wait until every batch is committed and written; raises what one failed with."""
        if self._thread.is_alive():
            self._batches.put(None)
            self._thread.join()
        if self.error is not None:
            raise self.error
