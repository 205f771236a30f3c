"""Which errors are retried, and how long a server asked us to wait."""

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from prefect_beluga import StepOutputError, ValidationError
from prefect_beluga.core.retry import is_permanent, retry_after_of, should_retry


class HTTPError(Exception):
    def __init__(self, status, headers=None):
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.response = type("Response", (), {"headers": headers or {}, "status_code": status})()


@pytest.mark.parametrize("status, permanent", [(400, True), (401, True), (403, True), (404, True),
                                               (408, False), (409, False), (429, False), (500, False), (503, False)])
def test_http_status_decides(status, permanent):
    assert is_permanent(HTTPError(status)) is permanent


def test_our_validation_errors_and_permission_errors_are_permanent_others_are_not():
    assert is_permanent(ValidationError("bad")) and is_permanent(StepOutputError("bad"))
    assert is_permanent(PermissionError("no"))
    assert not is_permanent(ConnectionError("reset")) and not is_permanent(TimeoutError())
    assert not is_permanent(KeyError("user code"))


def test_an_exception_that_says_it_is_not_retryable_is_permanent():
    class Answered(Exception):
        retryable = False

    class Transient(Exception):
        retryable = True

    assert is_permanent(Answered()) and not should_retry(Answered())
    assert not is_permanent(Transient())
    from prefect_beluga.mcp import MCPToolError

    assert is_permanent(MCPToolError("order too old", tool="refund"))


def test_retry_on_replaces_the_default():
    assert should_retry(KeyError("x"))
    assert not should_retry(KeyError("x"), retry_on=ConnectionError)
    assert should_retry(ValidationError("x"), retry_on=(ValidationError,))
    assert should_retry(HTTPError(500), retry_on=lambda e: e.status_code >= 500)


def test_retry_after_seconds_milliseconds_and_dates():
    assert retry_after_of(HTTPError(429, {"retry-after": "2"})) == 2.0
    assert retry_after_of(HTTPError(429, {"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 25 < retry_after_of(HTTPError(503, {"retry-after": when})) <= 30
    assert retry_after_of(HTTPError(429)) is None and retry_after_of(ValueError()) is None
    assert retry_after_of(HTTPError(429, {"retry-after": "soon"})) is None
