"""python -m servers.video: the genmesh Video server (the same as ``python -m servers video``)."""

from servers.registry import main

if __name__ == "__main__":
    main("video")
