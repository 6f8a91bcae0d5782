"""A test operator on :class:`eeveepy.runtime.Operator` that records every hook call.

Its settings name the record file: ``settings = { record = "/path/to/hooks.jsonl" }``. Each hook
call appends one JSON line ``{"hook": "start", "pid": 123, "settings": {...}}`` with the
settings the operator holds at that moment, so a test can see reloads and new settings.
"""

from __future__ import annotations

import json
import os

from eeveepy.runtime.operator import Operator


def main() -> None:
    op = Operator(name="hook-operator")

    def record(hook: str) -> None:
        settings = op.settings.model_dump()
        line = json.dumps({"hook": hook, "pid": os.getpid(), "settings": settings})
        with open(settings["record"], "a", encoding="utf-8") as f:
            f.write(line + "\n")

    for hook, register in (
        ("start", op.on_start),
        ("reload", op.on_reload),
        ("halt", op.on_halt),
        ("resume", op.on_resume),
        ("stop", op.on_stop),
    ):
        register(lambda hook=hook: record(hook))
    op.run()


if __name__ == "__main__":
    main()
