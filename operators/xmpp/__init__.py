"""XMPP: the connector of the ``xmpp`` platform, one operator per account (``xmpp.<name>``).

It keeps one client stream to an XMPP server (slixmpp) and translates between XMPP and the bus:

- **Inbound.** Messages in joined multi-user chat rooms and one-to-one messages (and private
  messages through a room) become :class:`~eeveepy.protocol.models.ChatMessage` on
  ``{p}.chat.in.xmpp.<network>.<room>`` (room: the room's JID, or the sender's JID for a
  private message). A room occupant is known by the real bare JID when the room reveals it
  (that is the identity permissions use), else by the occupant JID ``room@service/nick``.
  ``/me`` is an action. History replayed on joining a room (XEP-0045, XEP-0203) is never
  taken for a new message, nor are the bot's own reflections. Joins, parts, kicks, nick
  changes, subject changes, invitations and the connection going up or down become
  :class:`~eeveepy.protocol.models.ChatEvent`.
- **Outbound.** ``{p}.chat.out.xmpp.<network>``: ``groupchat`` to a room, ``chat`` to a JID
  for a private answer; markdown as XEP-0393 message styling (``styling``), characters XML
  cannot carry replaced, a text over ``max_message_bytes`` split at line and word boundaries.
- **Control.** ``join``, ``part``, ``names`` and ``nick`` (``xmpp.nick``: the bot's nick in
  every room) on ``{p}.chat.ctl.xmpp.<network>``.
- **Resilience.** On the connector kit: pings answered while the server is away, reconnects
  with the kit's backoff, rooms rejoined, a taken nick replaced by the next of
  ``alt_nicks``. Stream management (XEP-0198) resumes a dropped stream so that a short network
  drop loses no message either way; a ping (XEP-0199) every ``ping_interval`` notices a
  silent server. TLS (STARTTLS required by default) is verified with ``ca_file``; a server
  that cannot be trusted is retried only slowly.

================ =============================================================================
``text``         JIDs, XML-safe text, message styling, splitting (pure)
``settings``     :class:`~operators.xmpp.settings.XmppSettings`; which changes need a new session
``stanzas``      the parts of a received stanza the connector uses, as plain data (pure)
``muc``          the rooms the bot is in, from their presences (sans-I/O)
``translate``    stanzas to envelopes, outgoing messages to sends (pure)
``client``       :class:`~operators.xmpp.client.XmppStream`: the slixmpp client, set up for a bot
``rooms``        the presences that join, leave and rename
``session``      one connection, onto the kit's link
``platform``     :class:`~operators.xmpp.platform.XmppPlatform`, the kit's ``Platform``;
                 ``create()`` builds the operator
================ =============================================================================

Run it under ``eevee up`` (``module = "operators.xmpp"``) or alone::

    python -m operators.xmpp --id xmpp.example --nats-url nats://127.0.0.1:4222 --settings xmpp.toml
"""
