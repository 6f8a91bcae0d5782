"""``python -m operators.logging``: run the logging operator as a process."""

from operators.logging.service import main

if __name__ == "__main__":
    main()
