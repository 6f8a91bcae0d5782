"""The baseline of the XMPP benchmark: a bare slixmpp echo bot, as a process of its own.

``python -m tests.bench.xmpp_rawbot JID PASSWORD PORT ROOM NICK``: joins ROOM as NICK on
127.0.0.1:PORT (plaintext), answers ``!echo X`` with ``X`` in the room, prints ``ready`` once
in the room, and runs until SIGTERM. What a plugin-less bot on the field library does, with
the library's defaults: no bus, no router, no delivery guarantee.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

import slixmpp


class RawBot(slixmpp.ClientXMPP):
    def __init__(self, jid: str, password: str, room: str, nick: str) -> None:
        super().__init__(
            jid,
            password,
            plugin_config={
                "feature_mechanisms": {"unencrypted_scram": True, "unencrypted_plain": True}
            },
        )
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        self.room, self.nick = room, nick
        for plugin in ("xep_0030", "xep_0045", "xep_0199"):
            self.register_plugin(plugin)
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("groupchat_message", self._message)

    async def _start(self, _event: Any) -> None:
        self.send_presence()
        await self.plugin["xep_0045"].join_muc_wait(self.room, self.nick, maxstanzas=0)
        print("ready", flush=True)

    def _message(self, msg: Any) -> None:
        body = msg["body"]
        if msg["mucnick"] != self.nick and body.startswith("!echo "):
            self.send_message(mto=self.room, mbody=body[6:], mtype="groupchat")


async def main(jid: str, password: str, port: str, room: str, nick: str) -> None:
    bot = RawBot(jid, password, room, nick)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    bot.connect("127.0.0.1", int(port))
    await stop.wait()
    await asyncio.wait_for(bot.disconnect(), 2)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
