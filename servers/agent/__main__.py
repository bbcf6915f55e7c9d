"""python -m servers.agent: the genmesh Agent server (the same as ``python -m servers agent``)."""

from servers.registry import main

if __name__ == "__main__":
    main("agent")
