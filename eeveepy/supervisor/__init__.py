"""The supervisor: operator processes and their state machine, the fork server, leases, the
watch over the embedded bus, the state file the CLI finds it by."""
