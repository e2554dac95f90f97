#!/bin/sh
# mkbundle.sh DIR [ARGS...] - make a busybox OCI bundle in DIR for demos.
#
# rootfs/ gets the host's static busybox plus one symlink per applet at
# its usual path; config.json comes from `runc spec`, edited (without jq)
# to a non-terminal process running ARGS (default: sh -c 'echo hello from gomon').
# Environment: RUNC (default: runc from PATH, else /usr/sbin/runc),
# BUSYBOX (default /bin/busybox).
set -eu

if [ $# -lt 1 ]; then
	echo "usage: $0 DIR [ARGS...]" >&2
	exit 2
fi
dir=$1
shift
if [ $# -eq 0 ]; then
	set -- sh -c 'echo hello from gomon'
fi
busybox=${BUSYBOX:-/bin/busybox}
runc=${RUNC:-$(command -v runc || echo /usr/sbin/runc)}

[ -x "$busybox" ] || { echo "$0: no busybox at $busybox" >&2; exit 1; }
[ -x "$runc" ] || { echo "$0: no runc at $runc" >&2; exit 1; }

rootfs=$dir/rootfs
mkdir -p "$rootfs/bin" "$rootfs/sbin" "$rootfs/usr/bin" "$rootfs/usr/sbin" \
	"$rootfs/proc" "$rootfs/dev" "$rootfs/sys" "$rootfs/tmp" "$rootfs/etc"
cp "$busybox" "$rootfs/bin/busybox"
# Like `busybox --install -s`, but with links valid inside the container.
for applet in $("$busybox" --list-full); do
	[ "$applet" = bin/busybox ] && continue
	mkdir -p "$rootfs/$(dirname "$applet")"
	ln -sf /bin/busybox "$rootfs/$applet"
done

rm -f "$dir/config.json"
(cd "$dir" && "$runc" spec --rootless=false)

# JSON-encode the arguments: escape backslashes and quotes.
json_args=
for a in "$@"; do
	esc=$(printf '%s' "$a" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
	json_args="$json_args${json_args:+, }\"$esc\""
done

# runc spec prints "terminal": true and a multi-line "args" array with "sh";
# replace both. awk passes the encoded args through the environment.
JSON_ARGS=$json_args awk '
	/"terminal": true/ { sub(/true/, "false") }
	/"args": \[/ && !done {
		match($0, /^[ \t]*/); indent = substr($0, 1, RLENGTH)
		print indent "\"args\": [" ENVIRON["JSON_ARGS"] "],"
		skip = 1; done = 1; next
	}
	skip { if ($0 ~ /\],?[ \t]*$/) skip = 0; next }
	{ print }
' "$dir/config.json" > "$dir/config.json.tmp"
mv "$dir/config.json.tmp" "$dir/config.json"
echo "bundle ready: $dir (args: $*)"
