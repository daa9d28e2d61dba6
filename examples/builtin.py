"""voicebots' built-in agent (``bots/agent.py``) as an example file.

It is the agent ``voicebots up`` runs when no ``--bot`` is given; re-exported here, it runs
on pipecat's development runner like the other examples (with voicebots installed, so that
``bots`` imports)::

    python examples/builtin.py -t webrtc
"""

from __future__ import annotations

from bots.agent import bot

__all__ = ["bot"]

if __name__ == "__main__":
    from pipecat.runner.run import main

    main()
