"""billflow: CRM events in, billing documents out.

The shared package every function imports (shipped as the Lambda layer). Layers, one direction:
handlers (functions/*/app.py) -> logic -> storage and connectors. Nothing above storage imports boto3.
"""
