#!/usr/bin/env bash
# What a fresh machine may lack that udev or systemd would otherwise have set up, done the way
# they would do it. Prints one line for each change; leaves what is already right alone.
# Run by `make setup` (as root; as a user it only reports).
set -u
param=/sys/module/fuse/parameters/enable_uring
root=$([ "$(id -u)" = 0 ] && echo yes || echo no)

udev_running() {  # its control socket, or the daemon itself (procps may be missing)
  [ -S /run/udev/control ] && return 0
  grep -qxE 'systemd-udevd|udevd' /proc/[0-9]*/comm 2>/dev/null
}

# 1. The fuse module and its device node (devtmpfs makes the node; udev sets its mode).
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
if [ ! -e /dev/fuse ] && [ -e /sys/class/misc/fuse/dev ] && [ $root = yes ]; then
  IFS=: read -r major minor < /sys/class/misc/fuse/dev
  mknod -m 0666 /dev/fuse c "$major" "$minor" && echo "created /dev/fuse ($major:$minor, mode 0666): no devtmpfs node"
fi

# 2. Debian's udev rule makes /dev/fuse 0666 (fusermount3 and unprivileged servers open it).
if [ -c /dev/fuse ] && [ "$(stat -c %a /dev/fuse)" != 666 ]; then
  if udev_running; then
    echo "note: /dev/fuse is $(stat -c %a /dev/fuse) and udev is running: left to udev's rules" >&2
  elif [ $root = yes ]; then
    old=$(stat -c %a /dev/fuse)
    chmod 0666 /dev/fuse && echo "/dev/fuse was $old with no udev running: set 0666, as Debian's udev rule would"
  else
    echo "note: /dev/fuse is $(stat -c %a /dev/fuse): as root run \`chmod 0666 /dev/fuse\`" >&2
  fi
fi

# 3. FUSE-over-io_uring is off by default; the uring transport refuses to run without it.
if [ -w "$param" ] && [ "$(cat "$param")" != Y ]; then
  echo Y > "$param" && echo "enabled FUSE-over-io_uring ($param = Y)"
elif [ -e "$param" ] && [ "$(cat "$param")" != Y ]; then
  echo "note: $param is N and not writable by $(id -un): the uring transport will not run" >&2
fi

# fusectl (/sys/fs/fuse/connections) is not mounted here: what needs its abort files (uring's
# stop of a connection a client holds open, the fault tests) mounts it for that moment and
# unmounts it after (transports/fuse/mounting.py: fusectl), leaving the machine as found.
exit 0
