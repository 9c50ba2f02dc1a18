"""Logger, Metrics and Tracer, created once; service name and namespace come from the template's Globals.

The Tracer patches only botocore (every AWS call shows in X-Ray); outbound HTTP to CRMs, targets and token
endpoints gets its own subsegment in connectors/http.py, the one place it goes through.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer


def _tracer() -> Tracer:
    """The Tracer, its X-Ray recorder sharing boto3's botocore session.

    Importing the X-Ray SDK builds a client for centralized sampling rules from a botocore session of its own,
    which loads botocore's endpoint, partition and default-configuration data a second time (~10 JSON files,
    a large part of a cold start). In Lambda that client is never called (Lambda samples the function's
    segment; the SDK's rule poller does not run there), so it is built from the session boto3 uses, whose
    loader then reads each file once for both.
    """
    import boto3
    import botocore.session

    shared: Any = boto3._get_default_session()._session  # the botocore session behind boto3.client()
    own_session = botocore.session.get_session
    botocore.session.get_session = lambda env_vars=None: shared
    try:
        return Tracer(patch_modules=["botocore"])
    finally:
        botocore.session.get_session = own_session


logger = Logger()
metrics = Metrics()
tracer = _tracer()
