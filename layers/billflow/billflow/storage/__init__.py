"""Data access: the only modules that talk to DynamoDB, Secrets Manager and EventBridge."""
