"""Peer transport `external:COMMAND`: any program a user has that serves the image.

COMMAND is run by /bin/sh with {image}, {mountpoint} and {size} replaced (shell-quoted),
e.g. `external:my-fuse-server --image {image} {mountpoint}`. It must mount the image on
the mountpoint; Ringside then measures it like every other transport, and stops it with
SIGTERM to its process group. So a C server stands in the same table as ours.
"""

from __future__ import annotations

import shlex

from transports.base import Option, SpecError
from transports.export.image import Export
from transports.peers.peer import PeerTransport


def _command(raw: str) -> str:
    if not raw.strip():
        raise ValueError("give the command, e.g. external:my-server {image} {mountpoint}")
    if "{mountpoint}" not in raw:
        raise ValueError("the command must contain {mountpoint}, where it is to mount the image")
    return raw


class ExternalTransport(PeerTransport):
    name = "external"
    description = "a user-supplied command that serves the image on the mountpoint"
    program = "the external command"
    # Everything after "external:" is the command, commas and '=' included.
    raw_option = "command"
    options = {"command": Option(_command, "", "shell command serving {image} on {mountpoint}")}

    def command(self, image: str, mountpoint: str, export: Export) -> list[str]:
        text = self.settings.get("command", "")
        try:
            line = text.format(
                image=shlex.quote(image), mountpoint=shlex.quote(mountpoint), size=export.size
            )
        except (KeyError, IndexError, ValueError) as e:
            raise SpecError(
                f"external: bad placeholder in {text!r} ({e}): use {{image}}, "
                "{mountpoint} and {size}"
            ) from None
        return ["/bin/sh", "-c", line]
