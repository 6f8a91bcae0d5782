"""The bus: connecting to NATS, the embedded nats-server, the ipc API operators use, and the
JetStream streams and delivery behind "nothing acknowledged is lost"."""
