"""Matrix: the connector of the ``matrix`` platform, one operator per account (``matrix.<name>``).

It logs one Matrix account in to its homeserver (client-server API, through matrix-nio) and
translates between Matrix and the bus:

- **Inbound.** ``m.text``, ``m.notice`` and ``m.emote`` in joined rooms become
  :class:`~eeveepy.protocol.models.ChatMessage` on ``{p}.chat.in.matrix.<network>.<room>``
  (room: the room id; user: the sender's Matrix id as ``id`` and ``account``, the identity
  permissions use, and its display name; ``message_id``: the event id). Edits and
  redactions are never messages. Memberships (join, part, kick, invite, display name) and
  topics become :class:`~eeveepy.protocol.models.ChatEvent`, as do the connection going up
  or down. The bot's own events are ignored. Encrypted rooms are read and answered (the
  library's vodozemac support; keys kept in the data directory).
- **Outbound.** ``{p}.chat.out.matrix.<network>``: ``m.text``, ``m.notice`` or ``m.emote``
  with a plain ``body`` and an HTML ``formatted_body`` (from the markdown-ish text the
  other connectors accept), as a reply (``m.in_reply_to``) to the triggering event and in
  its thread when it was in one; a private message goes to the direct room with the user.
- **Control.** ``{p}.chat.ctl.matrix.<network>``: join, part, names (the members' ids) and
  nick (the display name).
- **State.** In the operator's data directory: the access token and device (one device
  across restarts), the sync token (a restart resumes where the last one stopped: nothing
  replayed, nothing lost) and the encryption keys. Messages older than
  ``max_command_age`` when read are not published.
- **Resilience.** On the connector kit: a homeserver that is down or stops answering ends
  the session and the kit reconnects with backoff (the operator answers pings meanwhile);
  a 429 is waited out as its ``retry_after_ms`` says; a ``limited`` sync timeline is
  completed from ``/messages``, so no burst loses a message.

================ =============================================================================
``settings``     :class:`~operators.matrix.settings.MatrixSettings`, which need a new session
``store``        the data directory: credentials, sync token
``markup``       markdown-ish text to HTML, splitting (pure)
``translate``    events to envelopes, outgoing messages to event content (pure)
``client``       the matrix-nio client: made, logged in; requests checked, 429s waited out
``timeline``     a room's timeline completed (gaps fetched) and filtered
``session``      the sync loop onto the kit's link; invites
``platform``     :class:`~operators.matrix.platform.MatrixPlatform`, the kit's ``Platform``;
                 ``create()`` builds the operator
================ =============================================================================

Run it under ``eevee up`` (``module = "operators.matrix"``) or alone::

    python -m operators.matrix --id matrix.example --nats-url nats://127.0.0.1:4222 \\
        --settings matrix.toml
"""
