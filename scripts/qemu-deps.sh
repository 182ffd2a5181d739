#!/usr/bin/env bash
# qemu-deps.sh: installs what the QEMU end-to-end tests (./e2e) need, and does nothing when it is
# already there, so `make test` runs it every time.
#
#   1. QEMU 10 (qemu-system-x86_64). On Debian bookworm it comes from bookworm-backports: the
#      suite is added to the existing Debian source entry, and only qemu-system-x86,
#      qemu-system-common, qemu-system-data and seabios are installed from it (bookworm's QEMU 7.2
#      corrupts its heap after a vCPU unplug under TCG and refuses device_del of virtio-mem).
#   2. A guest kernel: Debian's linux-image package for amd64, fetched with `apt-get download` and
#      unpacked (never installed on this host) into .cache/qemu/kernel/: vmlinuz, vmlinux (the
#      uncompressed ELF, booted through PVH with qboot: about twice as fast under TCG), the config
#      and the modules the guests load (virtio PCI, virtio-net, virtio-mem and what they need; for
#      the systemd guest also virtio-blk, virtio-console and ext4 with its checksums).
#   3. The systemd guest's Debian image (scripts/guest-image.sh), cached the same way.
#
# Only apt is used. Installing QEMU needs root (CI runs as root); the kernel needs none.
# Environment: HOTPLUG_QEMU_CACHE overrides the cache folder (default <repo>/.cache/qemu).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${HOTPLUG_QEMU_CACHE:-$root/.cache/qemu}
kdir=$cache/kernel
export DEBIAN_FRONTEND=noninteractive

say() { echo "qemu-deps: $*"; }
die() { echo "qemu-deps: $*" >&2; exit 1; }

as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		sudo -n "$@"
	else
		return 126
	fi
}

updated=
apt_update() {
	[ -n "$updated" ] && return 0
	say "apt-get update"
	as_root apt-get update -qq || die "apt-get update failed (root is needed to install QEMU)"
	updated=1
}

qemu_major() {
	command -v qemu-system-x86_64 >/dev/null || { echo 0; return; }
	qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version \([0-9]*\)\..*/\1/p' | head -1
}

codename=$( (. /etc/os-release && echo "${VERSION_CODENAME:-}") 2>/dev/null || true)

# add_backports adds "$codename-backports" to the Suites of the Debian entry (deb822 sources) or
# a matching line next to the Debian line (one-line sources.list). It changes nothing when present.
add_backports() {
	local bp=$codename-backports f
	if grep -rqs -- "$bp" /etc/apt/sources.list /etc/apt/sources.list.d/; then
		return 0
	fi
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		# A stanza whose URIs end in /debian (not debian-security) and whose Suites name the release.
		if awk -v rel="$codename" '
			/^[ \t]*$/ { if (deb && suite) found = 1; deb = suite = 0; next }
			/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) deb = 1 }
			/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == rel) suite = 1 }
			END { if (deb && suite) found = 1; exit !found }' "$f"; then
			as_root awk -v rel="$codename" -v bp="$bp" '
				function flush() { for (j = 1; j <= n; j++) { l = buf[j]; if (j == si && deb) l = l " " bp; print l } n = deb = si = 0 }
				/^[ \t]*$/ { flush(); print; next }
				{ buf[++n] = $0 }
				/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) deb = 1 }
				/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == rel) si = n }
				END { flush() }' "$f" >"$f.new.$$" ||
				die "cannot rewrite $f (root is needed to install QEMU)"
			as_root sh -c "cat '$f.new.$$' > '$f' && rm -f '$f.new.$$'"
			say "added $bp to the Debian entry of $f"
			updated=
			return 0
		fi
	done
	f=/etc/apt/sources.list
	local line
	line=$(grep -Es "^deb +(\[[^]]*\] +)?[a-z]+://[^ ]*/debian/? +$codename( |$)" "$f" | head -1 || true)
	[ -n "$line" ] || die "no Debian $codename source entry found to add $bp to"
	line=$(echo "$line" | sed -E "s/ $codename( |$)/ $bp\1/")
	as_root sh -c "echo '$line' >> '$f'" || die "cannot write $f (root is needed)"
	say "added '$line' to $f"
	updated=
}

install_qemu() {
	local major
	major=$(qemu_major)
	if [ "${major:-0}" -ge 10 ]; then
		say "QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}') already installed"
		return 0
	fi
	if ! as_root true 2>/dev/null; then
		# Without root a developer's `make test` goes on and the QEMU tests skip, saying why; CI
		# (CI=true) must never skip them.
		[ "${CI:-}" = true ] && die "QEMU 10 is missing and installing it needs root"
		echo "qemu-deps: QEMU 10 is missing and installing it needs root: the QEMU end-to-end tests will skip (run: sudo bash scripts/qemu-deps.sh)" >&2
		return 0
	fi
	local pkgs=(qemu-system-x86 qemu-system-common qemu-system-data seabios) target=()
	if [ "$codename" = bookworm ]; then
		add_backports
		target=(-t bookworm-backports)
	fi
	apt_update
	say "apt-get install ${target[*]} ${pkgs[*]}"
	as_root apt-get install -y -qq --no-install-recommends "${target[@]}" "${pkgs[@]}" >/dev/null ||
		die "apt-get install ${pkgs[*]} failed"
	major=$(qemu_major)
	[ "${major:-0}" -ge 10 ] || die "installed QEMU is $(qemu-system-x86_64 --version | head -1), need 10 or newer"
	say "installed: $(dpkg-query -W -f '${Package} ${Version}, ' "${pkgs[@]}" | sed 's/, $//')"
}

# kernel_package names the versioned linux-image package the amd64 meta-package depends on.
kernel_package() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

fetch_kernel() {
	# ext4.ko: the modules of the systemd guest, missing from caches unpacked before it existed.
	if [ -s "$kdir/version" ] && [ -s "$kdir/vmlinuz" ] && [ -s "$kdir/vmlinux" ] && [ -f "$kdir/modules/fs/ext4/ext4.ko" ]; then
		say "guest kernel $(cat "$kdir/version") already in $kdir"
		return 0
	fi
	local pkg
	pkg=$(kernel_package)
	if [ -z "$pkg" ]; then
		apt_update
		pkg=$(kernel_package)
	fi
	[ -n "$pkg" ] || die "apt knows no linux-image-amd64: cannot choose a guest kernel"
	local ver=${pkg#linux-image-}
	mkdir -p "$cache"
	tmp=$(mktemp -d "$cache/kernel.tmp.XXXXXX")
	trap 'rm -rf "${tmp:-}"' EXIT
	say "apt-get download $pkg"
	if ! (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1); then
		apt_update
		(cd "$tmp" && apt-get download -q "$pkg" >/dev/null) || die "apt-get download $pkg failed"
	fi
	local deb m=./lib/modules/$ver/kernel
	deb=$(ls "$tmp"/*.deb)
	# Only what the guests need: the kernel, its config and the virtio modules; for the systemd
	# guest's disk virtio-blk and ext4 (crc32c_generic: ext4 and jbd2 load the crc32c checksum
	# by name, which only modprobe resolves), and virtio-console for its guest agent's port.
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" \
		"./boot/vmlinuz-$ver" "./boot/config-$ver" \
		"$m/drivers/virtio" "$m/drivers/net/virtio_net.ko" "$m/drivers/net/net_failover.ko" \
		"$m/net/core/failover.ko" \
		"$m/drivers/block/virtio_blk.ko" "$m/drivers/char/virtio_console.ko" \
		"$m/fs/ext4" "$m/fs/jbd2" "$m/fs/mbcache.ko" "$m/lib/crc16.ko" "$m/crypto/crc32c_generic.ko"
	mkdir -p "$tmp/out"
	mv "$tmp/boot/vmlinuz-$ver" "$tmp/out/vmlinuz"
	mv "$tmp/boot/config-$ver" "$tmp/out/config"
	mv "$tmp/lib/modules/$ver/kernel" "$tmp/out/modules"
	# vmlinux: the xz payload of the bzImage (CONFIG_KERNEL_XZ), as scripts/extract-vmlinux does.
	local off
	off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$tmp/out/vmlinuz" | head -1 | cut -d: -f1 || true)
	[ -n "$off" ] || die "no xz payload in vmlinuz-$ver: cannot extract vmlinux"
	# (tail may die of SIGPIPE once xz has read its one stream: only xz's status counts)
	{ tail -c +$((off + 1)) "$tmp/out/vmlinuz" || true; } | xz -dc --single-stream >"$tmp/out/vmlinux" 2>/dev/null ||
		die "cannot decompress vmlinux from vmlinuz-$ver"
	head -c 4 "$tmp/out/vmlinux" | grep -q 'ELF' || die "vmlinux extracted from vmlinuz-$ver is not an ELF file"
	echo "$ver" >"$tmp/out/version"
	rm -rf "$kdir"
	mv "$tmp/out" "$kdir"
	say "guest kernel $ver unpacked into $kdir ($(du -sh "$kdir" | cut -f1))"
}

command -v xz >/dev/null || { apt_update; as_root apt-get install -y -qq xz-utils >/dev/null || die "cannot install xz-utils"; }
install_qemu
fetch_kernel
bash "$root/scripts/guest-image.sh"
