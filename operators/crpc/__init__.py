"""ChatOps RPC: call GitHub-style chatops servers from chat, and serve eevee's commands."""
