"""``python -m corepool``: the same command as the ``corepool`` console script."""

from __future__ import annotations

from corepool.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
