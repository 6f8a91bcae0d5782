"""ChatOps RPC: call GitHub-style chatops servers from chat, and serve eevee's commands.

Client side: ``rpc add URL --prefix P`` (admins) makes the methods listed at URL chat commands
``P METHOD...``, signed with RS256 (see docs/crpc.md). Modules: :mod:`.settings`,
:mod:`.service` (the operator), :mod:`.chatcmds` (``rpc``), :mod:`.client` (the endpoints'
commands), :mod:`.endpoints` (store and polling), :mod:`.listing` and :mod:`.rubyre` (pure:
listings and Ruby regexes), :mod:`.invoke` (pure: request body, display),
:mod:`.transport` (signed HTTP), :mod:`.signing` (RS256 headers, shared with the server side).
Run it with ``python -m operators.crpc``.
"""
