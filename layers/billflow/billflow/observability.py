"""Logger and Metrics, created once; service name and namespace come from the template's Globals."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

logger = Logger()
metrics = Metrics()
