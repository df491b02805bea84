#!/bin/sh
# Mayfly initramfs /init (busybox sh): load the virtio drivers, mount the root disk and hand PID 1
# to mayfly-guest. No udev, no systemd. Kernel command line options read here:
#   root=DEV (default /dev/vda)  rootfstype=TYPE (default ext4)  ro  mayfly.shell (stop in a shell)
export PATH=/sbin:/bin:/usr/sbin:/usr/bin

fail() {
    echo "mayfly-init: ERROR: $*"
    echo "mayfly-init: mayfly-guest was not started; dropping to a busybox shell on the console"
    exec setsid cttyhack sh
}

mount -t proc proc /proc || fail "cannot mount /proc"
mount -t sysfs sysfs /sys || fail "cannot mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "cannot mount devtmpfs on /dev"

root=/dev/vda
rootfstype=ext4
rootflags=rw
shell=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        root=*) root="${arg#root=}" ;;
        rootfstype=*) rootfstype="${arg#rootfstype=}" ;;
        ro) rootflags=ro ;;
        mayfly.shell) shell=1 ;;
    esac
done

for m in @MODULES@; do
    insmod "/lib/modules/$m.ko" || echo "mayfly-init: warning: insmod $m failed, continuing"
done

tries=0
while [ ! -b "$root" ]; do
    tries=$((tries + 1))
    [ "$tries" -gt 100 ] && fail "root device $root did not appear within 10 s"
    usleep 100000
done

[ -n "$shell" ] && fail "mayfly.shell is on the kernel command line"

mount -t "$rootfstype" -o "$rootflags" "$root" /newroot || fail "cannot mount $root ($rootfstype) on /newroot"
[ -x /newroot/usr/local/sbin/mayfly-guest ] || fail "$root has no executable /usr/local/sbin/mayfly-guest"
for d in dev proc sys; do
    mount --move "/$d" "/newroot/$d" || fail "cannot move /$d to /newroot/$d"
done
exec switch_root /newroot /usr/local/sbin/mayfly-guest init
