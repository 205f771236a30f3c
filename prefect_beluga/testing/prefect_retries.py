"""Count the retries of Prefect's own API client (its back-off path), for tests and benchmarks.

Prefect's client logs each retry of a retryable reply (e.g. "Received response with retryable
status code 503. Another attempt will be made in 2s.") at DEBUG on the `prefect.client`
logger. `PrefectClientRetries` counts those records for the length of a `with` block; other
records of that logger at WARNING and above still reach its usual handlers.

```python
from prefect_beluga import Chain
from prefect_beluga.testing.prefect_retries import PrefectClientRetries

with PrefectClientRetries() as retries:
    Chain([lambda state: state]).invoke({"input": "x"})
assert retries.count(503) == 0
```
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

__all__ = ["PrefectClientRetries"]

_RETRY = re.compile(r"retryable status code (\d+)")


class PrefectClientRetries(logging.Handler):
    """A handler on `prefect.client` that counts the retries Prefect's client made, by status."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.statuses: list[int] = []
        self._guard = threading.Lock()
        self._logger = logging.getLogger("prefect.client")
        self._saved: tuple[int, bool] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        match = _RETRY.search(record.getMessage())
        if match:
            with self._guard:
                self.statuses.append(int(match.group(1)))
        elif record.levelno >= logging.WARNING and self._logger.parent is not None:
            self._logger.parent.handle(record)  # not ours to swallow

    def count(self, status: int | None = None) -> int:
        """Retries seen so far (of replies with `status`, or all)."""
        with self._guard:
            return sum(1 for s in self.statuses if status is None or s == status)

    def __enter__(self) -> PrefectClientRetries:
        self._saved = (self._logger.level, self._logger.propagate)
        self._logger.setLevel(logging.DEBUG)
        self._logger.propagate = False  # its DEBUG records would otherwise reach the console
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._logger.removeHandler(self)
        if self._saved is not None:
            self._logger.setLevel(self._saved[0])
            self._logger.propagate = self._saved[1]
