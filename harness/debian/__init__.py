"""Debian's archive, reached the way this machine reaches it: its apt sources name the
mirror (sources), and a private apt state below `.cache/` fetches from it (private_apt)
without touching the host's apt configuration."""
