"""Peers: servers that are not Ringside's (qemu-storage-daemon, any external command)."""
