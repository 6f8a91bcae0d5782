"""``python -m operators.router``: run the router operator as a process."""

from operators.router.service import main

if __name__ == "__main__":
    main()
