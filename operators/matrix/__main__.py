"""``python -m operators.matrix``: run the Matrix connector as an operator process."""

from operators.matrix.platform import main

main()
