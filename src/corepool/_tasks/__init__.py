"""What a task is, for every backend (private).

``job.py``     the job: its inputs pulled in chunks, its results handed back as pieces
               and reassembled for the consumer, and the window that bounds both
``sizing.py``  how many inputs go into a chunk, and how many chunks a job may have out
``styles.py``  how an input is applied to the function (``fn(x)``, ``fn(*x)``, a call)
``run.py``     the one loop that runs a chunk of tasks, and the packing of its results
``rules.py``   when a failed task runs again, and when a chunk is split to find a culprit

Every backend uses these: the process engine (``_engine/``), the thread and serial
backends, and the code that runs on a Dask or Ray worker (``backends/_remote.py``).
Nothing here imports ``_engine`` or ``backends``.
"""

# Nothing is imported here: a worker process imports only what it needs.
