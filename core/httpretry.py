"""urllib3's Retry with one change, shared by every outgoing session (token endpoint and proxy).

A Retry-After longer than `retry_after_max` (or unreadable) ends the retries and the
answer goes back as it is: urllib3 alone would sleep the capped time and retry sooner
than the server asked, which is how a rate-limited client stampedes.
"""

from __future__ import annotations

import email.utils
import re
import time

from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.util.retry import Retry


class BudgetRetry(Retry):
    """urllib3's Retry, except that a Retry-After longer than `retry_after_max` (or unreadable)
    ends the retries and the answer goes back as it is: urllib3 would sleep the capped time and
    retry sooner than Trackunit asked (or fail on an unreadable header)."""

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):  # noqa: ANN001 (urllib3's own signature)
        header = response.headers.get("Retry-After") if response is not None else None
        if header and self.respect_retry_after_header and retry_after_seconds(header) > self.retry_after_max:
            raise MaxRetryError(_pool, url, ResponseError("Retry-After is beyond the request budget"))
        return super().increment(method, url, response, error, _pool, _stacktrace)


def retry_after_seconds(header: str) -> float:
    """Seconds to wait per a Retry-After value; infinite when unreadable."""
    if re.fullmatch(r"\s*[0-9]+\s*", header):
        return int(header)
    parsed = email.utils.parsedate_tz(header)
    return email.utils.mktime_tz(parsed) - time.time() if parsed else float("inf")
