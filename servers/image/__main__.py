"""python -m servers.image: the genmesh Image server (the same as ``python -m servers image``)."""

from servers.registry import main

if __name__ == "__main__":
    main("image")
