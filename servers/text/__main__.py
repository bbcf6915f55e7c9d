"""python -m servers.text: the genmesh Text server (the same as ``python -m servers text``)."""

from servers.registry import main

if __name__ == "__main__":
    main("text")
