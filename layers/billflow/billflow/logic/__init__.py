"""Business logic: pure-ish functions on domain models, called by the thin handlers."""
