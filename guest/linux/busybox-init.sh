#!/bin/busybox sh
# /init of tt's interactive Linux guest (scripts/linux-guest): busybox-static, the disk's
# drivers as modules, the disk (the first IDE disk, /dev/sda) at /mnt, then a shell on the
# serial console. `poweroff -f` ends the run (QEMU exits; tt record returns).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /etc/modules); do
    insmod /lib/modules/$m 2>/dev/null
done
# The disk appears once the ATA bus is probed: wait for it (at most about 10 s).
n=0
while [ ! -b /dev/sda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
if [ -b /dev/sda ]; then
    mount -t ext4 -o ro /dev/sda /mnt && echo "tt-guest: /dev/sda on /mnt"
else
    echo "tt-guest: no disk (give one with tt record --disk guest/build/linux/disk.ext4)"
fi
echo "tt-guest: busybox shell on ttyS0; poweroff -f ends the run"
export PS1='tt-guest# '
exec setsid cttyhack sh
