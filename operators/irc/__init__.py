"""IRC: the connector of the ``irc`` platform, one operator per network (``irc.<network>``).

It keeps one client connection to an IRC server and translates between IRC and the bus:

- **Inbound.** Channel and private ``PRIVMSG``, ``NOTICE`` and CTCP ``ACTION`` become
  :class:`~eeveepy.protocol.models.ChatMessage` on ``{p}.chat.in.irc.<network>.<room>`` (room:
  the channel, or the sender's nick for a private message); ``JOIN``, ``PART``, ``QUIT``,
  ``KICK``, ``NICK``, ``TOPIC``, ``INVITE`` and the connection going up or down become
  :class:`~eeveepy.protocol.models.ChatEvent` on ``{p}.chat.event.irc.<network>.<event>``.
  Services accounts come from the IRCv3 ``account-tag``, ``extended-join`` and
  ``account-notify`` capabilities and WHOX, when the server offers them. The bot's own lines
  are never echoed.
- **Outbound.** ``{p}.chat.out.irc.<network>`` (:class:`~eeveepy.protocol.models.
  OutgoingMessage`): simple markdown becomes IRC formatting, text is split into lines that fit
  the 512-byte limit (never inside a UTF-8 character) and sent through a token bucket,
  round-robin across targets so one busy channel cannot starve the others. CR, LF and NUL
  never reach the socket (:func:`~operators.irc.lines.format_line` builds every line), and
  text cannot start a CTCP sequence: ``\\x01`` and other non-formatting control characters are
  shown as ``␁``... and only an ``action`` style is wrapped as ``\\x01ACTION ...\\x01``
  (:func:`~operators.irc.safety.outgoing_lines`). A target that is not one channel or one nick
  (``0``, ``#a,#b``, spaces...) is refused: logged and dead-lettered, never sent.
- **Control.** Requests on ``{p}.chat.ctl.irc.<network>``
  (:class:`~eeveepy.protocol.models.ConnectorControl`: join, part, nick, names) are answered
  with :class:`~eeveepy.protocol.models.ConnectorControlResult`; a room that is not one channel
  of the server (``0``, commas, spaces, no CHANTYPES prefix, too long) is refused with
  ``ok: false``.
- **Resilience.** The connector runs on the connector kit (:mod:`eeveepy.connector`): the
  connection runs in a background task, so the operator answers the supervisor's pings while
  the server is away. After a disconnect, a ping timeout or a refused connection it reconnects
  with exponential backoff and jitter between ``reconnect_min`` and ``reconnect_max``, rejoins
  its channels, falls back to alternate nicks on a collision and tries to reclaim its main nick
  every ``reclaim_nick_interval`` seconds. A SASL failure is reported once per attempt (an
  error log and a ``disconnected`` event saying "SASL authentication failed") and is retried
  only slowly. Control requests are served concurrently.

The IRC protocol client is written here rather than taken from a library, so that every byte
written goes through one sanitising path, line order is kept, and SASL failure and ping
timeouts follow this connector's rules. The package, from the wire up:

================ =============================================================================
``text``         formatting, splitting, case mapping (pure)
``lines``        parse and build protocol lines (pure)
``safety``       what is defused or refused before it is sent (pure)
``settings``     :class:`~operators.irc.settings.IrcSettings`; which changes need a new session
``state``        what the client knows about the server and itself
``events``       what the protocol client reports
``negotiation``  CAP and SASL (sans-I/O)
``tracking``     channels, users, accounts and messages (sans-I/O)
``protocol``     the IRC client as a state machine: lines in, lines and events out (sans-I/O)
``translate``    events to envelopes, outgoing messages to lines (pure)
``connection``   one TCP/TLS connection: read a line, write a line
``session``      one connection driven through the protocol client, onto the kit's link
``platform``     :class:`~operators.irc.platform.IrcPlatform`, the kit's ``Platform``: plan,
                 render, send, control requests; ``create()`` builds the operator
================ =============================================================================

Run it under ``eevee up`` (``module = "operators.irc"``) or alone::

    python -m operators.irc --id irc.local --nats-url nats://127.0.0.1:4222 --settings irc.toml
"""
