"""Logger, Metrics and Tracer, created once; service name and namespace come from the template's Globals.

The Tracer patches only botocore (every AWS call shows in X-Ray); outbound HTTP to CRMs, targets and token
endpoints gets its own subsegment in connectors/http.py, the one place it goes through.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
metrics = Metrics()
tracer = Tracer(patch_modules=["botocore"])
