"""Guests: a kernel under test booted in a throw-away qemu guest (`ringside guest`).

- `host.py`: on the host, boots virtme-ng/qemu, runs the command in the guest, stops it.
- `inside.py`: what code asks about where it runs (in a guest or not, which accelerator,
  how much slower), read from facts the host side recorded when it booted the guest.
- `guest-init.sh`: the script the guest runs first (prepares FUSE, runs the command).
- `kernels.py`: the kernels a guest boots: Debian's packages fetched into a cache, or an
  image or build tree of one's own.
- `reaper.py`: a small process that stops qemu's process group should Ringside die.
"""
