"""The supervisor: ``core`` runs ``eevee up`` from ``boot`` (the bus and its users),
``control`` (status and ctl requests) and ``reload``; each operator is a ``process`` (its state
machine, in the vocabulary of ``states``, with ``restarts``, ``pings``, ``spawn`` and the
``host`` interface to the supervisor); the fork server, leases, the watch over the embedded
bus, and the state file the CLI finds it by."""
