"""``python -m operators.crpc``: run the ChatOps RPC operator as a process."""

from operators.crpc.service import main

if __name__ == "__main__":
    main()
