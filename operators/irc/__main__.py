"""``python -m operators.irc``: run the IRC connector as an operator process."""

from operators.irc.connector import main

main()
