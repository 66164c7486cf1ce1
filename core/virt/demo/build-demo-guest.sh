#!/bin/bash
# Builds the demo Service VM guest: Debian's cloud kernel plus a busybox initramfs that serves HTTP on port 8080.
#
#   build-demo-guest.sh OUTDIR
#
# Produces OUTDIR/vmlinuz, OUTDIR/initrd.img, OUTDIR/cmdline (the kernel command line the guest expects) and
# OUTDIR/stamp (package versions + this script's hash). Nothing is installed on the host: the packages are
# fetched with `apt-get download` and unpacked with `dpkg -x`. When OUTDIR/stamp already matches, it does
# nothing (so the build can call it every time; only the first run needs Debian's archive).
#
# The guest's page (GET / on port 8080, a CGI so every reply is fresh) shows the guest's boot id and uptime:
# a restored instance keeps the boot id and uptime of the saved one, a cold-booted one does not.
set -euo pipefail

die() { echo "build-demo-guest: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
outdir=$1
case $outdir in /*) ;; *) outdir=$PWD/$outdir ;; esac

for tool in apt-cache apt-get dpkg-deb cpio gzip sha256sum; do
  command -v "$tool" >/dev/null || die "missing tool: $tool"
done

# Modules for virtio networking (and the disk), in dependency order: insmod has no dependency resolution and
# a wrong order fails with "unknown symbol".
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover
         virtio_net virtio_blk)

# One apt-cache call (each takes about a second without a package cache): the cloud meta package names the
# exact kernel package and version it depends on.
show_meta() {
  apt-cache show --no-all-versions linux-image-cloud-amd64 busybox-static 2>/dev/null || true
}
meta=$(show_meta)
if ! grep -q '^Package: linux-image-cloud-amd64$' <<<"$meta"; then
  # A fresh machine may have no package lists yet.
  [ "$(id -u)" -eq 0 ] || die "no package lists for linux-image-cloud-amd64; run apt-get update as root"
  echo "build-demo-guest: no package lists, running apt-get update" >&2
  apt-get update -o DPkg::Lock::Timeout=600 >&2
  meta=$(show_meta)
fi
field() {  # field PACKAGE NAME: the NAME field of PACKAGE's stanza in $meta
  awk -v p="$1" -v f="$2" '/^Package: /{cur=$2} cur==p && index($0, f": ")==1 {print substr($0, length(f)+3); exit}' <<<"$meta"
}
dep=$(field linux-image-cloud-amd64 Depends)
kernel_pkg=$(sed -n 's/^\(linux-image-[^ ]*-cloud-amd64\) (= \([^)]*\)).*$/\1/p' <<<"$dep")
kernel_ver=$(sed -n 's/^\(linux-image-[^ ]*-cloud-amd64\) (= \([^)]*\)).*$/\2/p' <<<"$dep")
busybox_ver=$(field busybox-static Version)
[ -n "$kernel_pkg" ] && [ -n "$kernel_ver" ] || die "cannot read the kernel package linux-image-cloud-amd64 depends on ('$dep')"
[ -n "$busybox_ver" ] || die "no version for busybox-static"
script_hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)
stamp="kernel=$kernel_pkg $kernel_ver
busybox-static=$busybox_ver
script=$script_hash"

if [ -f "$outdir/stamp" ] && [ -s "$outdir/vmlinuz" ] && [ -s "$outdir/initrd.img" ] && [ -s "$outdir/cmdline" ] &&
   [ "$(cat "$outdir/stamp")" = "$stamp" ]; then
  exit 0
fi

mkdir -p "$outdir"
work=$(mktemp -d "$outdir/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT

echo "build-demo-guest: fetching $kernel_pkg $kernel_ver and busybox-static $busybox_ver" >&2
# apt-get download writes into the current directory; as root it warns that _apt cannot write there (harmless).
(cd "$work" && apt-get download -o DPkg::Lock::Timeout=600 "$kernel_pkg=$kernel_ver" "busybox-static=$busybox_ver" 2>&1 |
   grep -v 'unsandboxed as root' >&2 || true)
kernel_deb=$(find "$work" -maxdepth 1 -name "${kernel_pkg}_*.deb" | head -n1)
busybox_deb=$(find "$work" -maxdepth 1 -name 'busybox-static_*.deb' | head -n1)
[ -n "$kernel_deb" ] || die "download of $kernel_pkg failed"
[ -n "$busybox_deb" ] || die "download of busybox-static failed"

dpkg-deb -x "$kernel_deb" "$work/kernel"
dpkg-deb -x "$busybox_deb" "$work/busybox"
vmlinuz=$(find "$work/kernel/boot" -maxdepth 1 -name 'vmlinuz-*' | head -n1)
[ -n "$vmlinuz" ] || die "no boot/vmlinuz-* in $kernel_pkg"
moddir=$(find "$work/kernel/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)
[ -n "$moddir" ] || die "no lib/modules in $kernel_pkg"

# ---- the initramfs tree ----
root=$work/root
mkdir -p "$root"/{bin,sbin,etc,proc,sys,dev,tmp,run,www/cgi-bin,lib/modules}
install -m 0755 "$work/busybox/bin/busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"

: >"$root/etc/modules"
for m in "${modules[@]}"; do
  ko=$(find "$moddir/kernel" -name "$m.ko" | head -n1)
  if [ -n "$ko" ]; then
    install -m 0644 "$ko" "$root/lib/modules/$m.ko"
    echo "$m" >>"$root/etc/modules"
  elif grep -q "/$m.ko\$" "$moddir/modules.builtin" 2>/dev/null; then
    :  # built into this kernel
  else
    die "module $m is neither in $kernel_pkg nor built in"
  fi
done

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec 0</dev/console 1>/dev/console 2>&1
hostname demo-guest
for m in $(cat /etc/modules); do
  insmod "/lib/modules/$m.ko" || echo "demo-guest: insmod $m failed"
done
ip link set lo up
ip link set eth0 up
if ! udhcpc -i eth0 -n -q -t 5 -T 1 -s /etc/udhcpc.sh; then
  echo "demo-guest: no DHCP answer, using 10.0.2.15"
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2 dev eth0
fi
echo "demo-guest: boot_id $(cat /proc/sys/kernel/random/boot_id), serving http on port 8080"
exec httpd -f -p 8080 -h /www
EOF
chmod 0755 "$root/init"

cat >"$root/etc/udhcpc.sh" <<'EOF'
#!/bin/sh
case "$1" in
  deconfig) ip addr flush dev "$interface" ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "${router:-}" ] && ip route add default via "${router%% *}" dev "$interface"
    ;;
esac
exit 0
EOF
chmod 0755 "$root/etc/udhcpc.sh"

# busybox httpd runs cgi-bin/index.cgi for "/" when there is no index.html.
cat >"$root/www/cgi-bin/index.cgi" <<'EOF'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
echo "cloudlet demo guest"
echo "hostname=$(hostname)"
echo "boot_id=$(cat /proc/sys/kernel/random/boot_id)"
echo "uptime=$(cut -d' ' -f1 /proc/uptime)"
echo "address=$(ip -4 -o addr show dev eth0 | awk '{print $4}')"
EOF
chmod 0755 "$root/www/cgi-bin/index.cgi"

# The kernel opens /dev/console before init runs; create it when allowed (init copes without it).
mknod -m 0600 "$root/dev/console" c 5 1 2>/dev/null || true

(cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --owner 0:0) | gzip -9 -n >"$work/initrd.img"
install -m 0644 "$vmlinuz" "$work/vmlinuz"
echo "console=ttyS0 panic=-1 quiet" >"$work/cmdline"

# Replace the outputs, the stamp last: an interrupted build is never mistaken for a finished one.
rm -f "$outdir/stamp"
mv -f "$work/vmlinuz" "$outdir/vmlinuz"
mv -f "$work/initrd.img" "$outdir/initrd.img"
mv -f "$work/cmdline" "$outdir/cmdline"
printf '%s\n' "$stamp" >"$work/stamp"
mv -f "$work/stamp" "$outdir/stamp"
echo "build-demo-guest: built $outdir (kernel $kernel_ver, initrd $(stat -c %s "$outdir/initrd.img") bytes)" >&2
