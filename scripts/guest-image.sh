#!/usr/bin/env bash
# guest-image.sh: builds the Debian guest of the systemd end-to-end tests (./e2e, TestIntegrationSystemd)
# from Debian's packages, and does nothing when the image of this script is already built, so
# `make test` (through scripts/qemu-deps.sh) runs it every time.
#
# The image is a bookworm root file system made by mmdebstrap (variant apt: the Essential packages
# and apt) with systemd as PID 1, udev, and qemu-guest-agent (the tests run commands in the guest
# through it, over a virtio-serial port: no ssh, no shell on the console), packed into an ext4 file
# with `mkfs.ext4 -d` (no mount, no loop device). It has no kernel and no modules: the tests boot
# the kernel of scripts/qemu-deps.sh with a small initramfs (cmd/hotplug-guest-init) that loads
# virtio and ext4, brings up the NIC and switches to /sbin/init on the disk.
#
# The agent must be the one that onlines hot-added CPUs and memory: the script fails if a udev rule
# of the image writes a CPU's or memory block's online state (Debian's have none), and the tests
# boot with memhp_default_state=offline.
#
# Packages come from this machine's own apt sources (the same Debian mirror). The image is cached in
# <cache>/guest/ (rootfs.ext4, with packages.txt and the build log) under the hash of this script:
# changing the script, its package list included, rebuilds it; nothing else does. Building needs
# root (mmdebstrap's root mode) and the packages mmdebstrap and e2fsprogs, which it installs.
# Environment: HOTPLUG_QEMU_CACHE overrides the cache folder (default <repo>/.cache/qemu).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${HOTPLUG_QEMU_CACHE:-$root/.cache/qemu}
out=$cache/guest
export DEBIAN_FRONTEND=noninteractive

say() { echo "guest-image: $*"; }
die() { echo "guest-image: $*" >&2; exit 1; }

# What the image holds beyond variant apt. No Recommends (mmdebstrap's default).
packages=(systemd systemd-sysv udev qemu-guest-agent procps iproute2)
# Units that would only cost boot time under TCG, or wait for a network the guest does not have.
masked=(apt-daily.timer apt-daily-upgrade.timer fstrim.timer e2scrub_all.timer
	systemd-firstboot.service getty-static.service getty@tty1.service serial-getty@ttyS0.service)
# The image's size: what the packages take plus room for the tests (the agent's package, logs).
slack_mib=512

key=$(sha256sum "$0" | cut -c1-16)
if [ -s "$out/rootfs.ext4" ] && [ "$(cat "$out/key" 2>/dev/null)" = "$key" ]; then
	say "guest image $key already in $out ($(du -h --apparent-size "$out/rootfs.ext4" | cut -f1) apparent, $(du -h "$out/rootfs.ext4" | cut -f1) used)"
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	[ "${CI:-}" = true ] && die "the guest image is missing and building it needs root"
	echo "guest-image: the guest image is missing and building it needs root: the systemd guest tests will skip (run: sudo bash scripts/guest-image.sh)" >&2
	exit 0
fi

need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
	say "apt-get install ${need[*]}"
	apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 || {
		apt-get -o DPkg::Lock::Timeout=600 update -qq
		apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	} || die "cannot install ${need[*]}"
fi

# The host's apt sources, as one file mmdebstrap reads (deb822 or one-line).
tmp=$(mktemp -d "${TMPDIR:-/tmp}/guest-image.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
sources=$tmp/sources
for f in /etc/apt/sources.list.d/*.sources; do
	if [ -f "$f" ]; then cat "$f"; echo; fi
done >"$sources"
if [ ! -s "$sources" ]; then
	grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list >"$sources" || true
fi
[ -s "$sources" ] || die "no apt sources on this machine to build the guest from"
codename=$( (. /etc/os-release && echo "${VERSION_CODENAME:-}") 2>/dev/null || true)
[ "$codename" = bookworm ] || say "this machine is Debian '$codename'; the guest is bookworm all the same"

start=$(date +%s)
rootfs=$tmp/rootfs
mid=$(echo "$key" | sha256sum | cut -c1-32)
say "mmdebstrap bookworm (variant apt + ${packages[*]}) into $rootfs"
# The customize hook: a fixed machine id (no first boot), a hostname, an empty fstab (the
# initramfs mounts the root read-write), a volatile journal, the masked units, and the check
# that no udev rule onlines CPUs or memory.
if ! mmdebstrap --mode=root --variant=apt --include="$(IFS=,; echo "${packages[*]}")" \
	--dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	--customize-hook="echo $mid > \"\$1/etc/machine-id\"" \
	--customize-hook='echo guest > "$1/etc/hostname"' \
	--customize-hook='echo "# the initramfs mounts / (/dev/vda) read-write" > "$1/etc/fstab"' \
	--customize-hook='mkdir -p "$1/etc/systemd/journald.conf.d" && printf "[Journal]\nStorage=volatile\n" > "$1/etc/systemd/journald.conf.d/volatile.conf"' \
	--customize-hook="chroot \"\$1\" systemctl mask ${masked[*]}" \
	--customize-hook='rm -f "$1/etc/dpkg/dpkg.cfg.d/99mmdebstrap"' \
	--customize-hook='chroot "$1" dpkg-query -W -f "\${Package} \${Version}\n" > "$1/root/packages.txt"' \
	bookworm "$rootfs" "$sources" >"$tmp/build.log" 2>&1; then
	tail -n 30 "$tmp/build.log" >&2
	die "mmdebstrap failed (log above)"
fi

# No udev rule may write a CPU's or memory block's online state: the agent does that.
if rules=$(grep -lsE 'ATTR\{(online|state)\}="' "$rootfs"/lib/udev/rules.d/*.rules "$rootfs"/etc/udev/rules.d/*.rules); then
	die "udev rules of the image online CPUs or memory, which the agent must do itself: $rules"
fi

mv "$rootfs/root/packages.txt" "$tmp/packages.txt"
mib=$(( $(du -sm "$rootfs" | cut -f1) + slack_mib ))
mkdir -p "$out"
rm -f "$out/rootfs.ext4.new"
# -d copies the tree with owners, modes, links and device nodes; no mount needed.
mkfs.ext4 -q -F -L guestroot -U "$(echo "$mid" | sed -E 's/(.{8})(.{4})(.{4})(.{4})(.{12})/\1-\2-\3-\4-\5/')" \
	-E root_owner=0:0 -d "$rootfs" "$out/rootfs.ext4.new" "${mib}M" >>"$tmp/build.log" 2>&1 ||
	{ tail -n 20 "$tmp/build.log" >&2; die "mkfs.ext4 -d failed"; }
mv "$tmp/packages.txt" "$out/packages.txt"
cp "$tmp/build.log" "$out/build.log"
mv "$out/rootfs.ext4.new" "$out/rootfs.ext4"
echo "$key" >"$out/key"
say "built guest image $key in $(( $(date +%s) - start )) s: $out/rootfs.ext4 (${mib} MiB, $(du -h "$out/rootfs.ext4" | cut -f1) used; $(wc -l <"$out/packages.txt") packages)"
