"""Domain models: what billflow thinks in, independent of any CRM's or target's wire format."""
