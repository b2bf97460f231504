"""`python -m request_crypto`: the same CLI as the `request-crypto` console script."""

from .cli import main

if __name__ == "__main__":
    main()
