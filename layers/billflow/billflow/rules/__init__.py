"""The rule engine: pure functions deciding which rules an event matches, and why."""
