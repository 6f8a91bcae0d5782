"""``python -m operators.xmpp``: run the XMPP connector as an operator process."""

from operators.xmpp.platform import main

main()
