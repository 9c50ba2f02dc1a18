"""billflow's admin command line: rules as code, the execution log, the local runtime."""
