#!/bin/bash
# ringside guest: run by virtme-ng-init inside the guest (booted by harness/guests/host.py).
#
#   bash guest-init.sh STATUS
#
# STATUS is a directory shared read-write with the host. The host writes params.sh there
# before booting (the environment, among it the accelerator it chose, the working
# directory, the console setting, the command); this script leaves the command's exit
# status in STATUS/exit, and stops the command when the host leaves STATUS/stop (Ctrl-C).
status=$1
. "$status/params.sh" || exit 125
cd "$workdir" || exit 125
fail() { echo "ringside guest: $*"; echo 125 > "$status/exit"; exit 125; }
[ -d /sys/module/fuse ] || modprobe fuse || fail "no FUSE in kernel $(uname -r): \
CONFIG_FUSE_FS is not set"
param=/sys/module/fuse/parameters/enable_uring
[ -e $param ] || fail "kernel $(uname -r) has no FUSE-over-io_uring ($param is missing): \
it was built without CONFIG_FUSE_IO_URING=y"
echo Y > $param || fail "cannot set $param"
# What a distribution's udev and systemd set up, and the tests expect.
chmod 0666 /dev/fuse
mountpoint -q /sys/fs/fuse/connections || mount -t fusectl fusectl /sys/fs/fuse/connections
echo 0 > /proc/sys/kernel/io_uring_disabled 2>/dev/null
# virtme-ng bind-mounts a generated /etc/shadow (and a few more): useradd replaces files by
# rename, which a bind-mounted file refuses. Keep their content in the writable /etc.
for f in /etc/shadow /etc/gshadow /etc/passwd /etc/group; do
  if mountpoint -q $f; then
    cp $f /run/ringside-etc && umount $f && cat /run/ringside-etc > $f
  fi
done
# Kernel messages would cut into the command's output, unless asked for (--console).
[ "$show_console" = 1 ] || dmesg -n 1
echo "ringside guest: $(uname -r), enable_uring=$(cat $param), $RINGSIDE_VIRTUALIZATION"
# Ctrl-C on the host leaves a file here: the command gets SIGTERM (ringside run and
# campaign unwind as on Ctrl-C: the cut run is marked, the mount undone).
"${command[@]}" </dev/null &
pid=$!
while kill -0 $pid 2>/dev/null; do
  if [ -e "$status/stop" ]; then
    echo "ringside guest: stopping the command (interrupted on the host)"
    kill -TERM $pid
    break
  fi
  sleep 1
done
wait $pid
rc=$?
echo $rc > "$status/exit"
exit $rc
