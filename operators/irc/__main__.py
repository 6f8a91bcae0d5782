"""``python -m operators.irc``: run the IRC connector as an operator process."""

from operators.irc.platform import main

main()
