"""Data access: the only modules that call AWS (DynamoDB, Secrets Manager, EventBridge, Step Functions, SNS,
SES), one per table or service, each behind a small class or function with a cached factory."""
