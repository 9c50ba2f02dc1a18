"""The X-Ray SDK's sampling client is made on first use (observability.py): importing billflow builds none,
and the one the SDK gets is a real X-Ray client when it is used, with the endpoint and signing it asked for."""

from __future__ import annotations

import billflow.observability  # noqa: F401 - imported for its Tracer
from aws_xray_sdk.core import xray_recorder
from billflow.observability import _DeferredClient


def test_the_sampling_client_is_deferred_until_used() -> None:
    client = xray_recorder.sampler._connector._xray_client
    assert isinstance(client, _DeferredClient)
    assert client._client is None  # importing built nothing
    assert client.meta.service_model.service_name == "xray"
    assert client.meta.endpoint_url == "http://127.0.0.1:2000"  # the daemon address the SDK asked for
    assert client.meta.config.signature_version is not None
