"""python -m servers.training: the genmesh Training server (the same as ``python -m servers training``)."""

from servers.registry import main

if __name__ == "__main__":
    main("training")
