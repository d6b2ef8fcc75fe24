#!/usr/bin/env bash
# FUSE-over-io_uring is off by default; the uring transport refuses to run without it.
param=/sys/module/fuse/parameters/enable_uring
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
if [ -w "$param" ] && [ "$(cat "$param")" != Y ]; then
  echo Y > "$param" && echo "enabled FUSE-over-io_uring ($param = Y)"
elif [ -e "$param" ] && [ "$(cat "$param")" != Y ]; then
  echo "note: $param is N and not writable by $(id -un): the uring transport will not run" >&2
fi
exit 0
