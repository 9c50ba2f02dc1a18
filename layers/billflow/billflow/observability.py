"""Logger and Tracer, created once; the service name comes from the template's Globals. (No Metrics object:
billflow emits no custom metric; its alarms read the AWS services' own.)

The Tracer patches only botocore (every AWS call shows in X-Ray); outbound HTTP to CRMs, targets and token
endpoints gets its own subsegment in connectors/http.py, the one place it goes through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Tracer


class _DeferredClient:
    """A botocore client made on its first use."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = self._make()
        return getattr(self._client, name)


class _DeferredSession:
    """What the X-Ray SDK gets for botocore's get_session() while it is imported.

    Importing the SDK builds a client for centralized sampling rules from a botocore session of its own: the
    X-Ray service model, and botocore's endpoint, partition and default-configuration data a second time
    (~10 JSON files; 30 to 60 ms of every cold start). In Lambda that client is never called (Lambda samples
    the function's segment; the SDK's rule poller does not run there), so it is made on first use only,
    from the session boto3 uses.
    """

    def create_client(self, *args: Any, **kwargs: Any) -> Any:
        def make() -> Any:
            import boto3

            shared: Any = boto3._get_default_session()._session  # the botocore session behind boto3.client()
            return shared.create_client(*args, **kwargs)

        return _DeferredClient(make)


def _tracer() -> Tracer:
    import botocore.session

    sessions: Any = botocore.session  # typed as Any: its get_session is replaced while the SDK is imported
    own_session = sessions.get_session
    sessions.get_session = lambda env_vars=None: _DeferredSession()
    try:
        return Tracer(patch_modules=["botocore"])
    finally:
        sessions.get_session = own_session


logger = Logger()
tracer = _tracer()
