"""A compromised operator: it hands its bus credentials out, then runs as usual.

``leaky_operator.py MODULE`` writes ``EEVEE_NATS_USER``/``EEVEE_NATS_PASSWORD`` (and its pid)
to the file named by ``$LEAK_TO`` (0600), then runs ``MODULE`` as ``python -m`` would: the
tests attack the bus with what a compromised operator has (its own credentials).
"""

import json
import os
import runpy
import sys

fd = os.open(os.environ["LEAK_TO"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w", encoding="utf-8") as f:
    json.dump(
        {
            "user": os.environ["EEVEE_NATS_USER"],
            "password": os.environ["EEVEE_NATS_PASSWORD"],
            "pid": os.getpid(),
        },
        f,
    )
module = sys.argv[1]
sys.argv = [module]
runpy.run_module(module, run_name="__main__", alter_sys=True)
