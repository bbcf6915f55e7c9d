"""python -m servers.models: the genmesh models server (the same as ``python -m servers models``)."""

from servers.registry import main

if __name__ == "__main__":
    main("models")
