"""Peer programs built from Debian's source packages into the checkout's cache.

`ringside peers fetch PROGRAM [VERSION]` downloads the source through a private apt state
(harness.debian), builds it in a temporary directory and renames it into place with a
stamp only when complete (transports.peers.builds reads the cache)."""


class BuildError(RuntimeError):
    """A peer cannot be fetched or built; the message says why and the fix."""
