"""The `eevee` command line: the commands, the live status, the chat REPL, the operator scaffold."""
