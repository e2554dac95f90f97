#!/usr/bin/env bash
# e2e-tools.sh: install the apt packages and build the pinned tools the CRI-O end-to-end test
# needs (CRI-O v1.34 and v1.36, their pinns, crictl, Jaeger, the kubelet) into a cache outside the
# repository.
#
# Every tool lands in $E2E_CACHE/<tool>-<version>/ and is reused when its `.done` marker is
# present, so only the first run on a machine pays for the builds. Heavy builds run under
# `nice -n 10` because the machine is shared. Prints one line per tool with its build time
# (or that it was cached) and, last, the shell assignments the e2e test reads (CRIO=..., etc.).
#
# Usage: hack/e2e-tools.sh            (E2E_CACHE defaults to /var/cache/gomon-e2e)
set -euo pipefail
shopt -s inherit_errexit

E2E_CACHE=${E2E_CACHE:-/var/cache/gomon-e2e}
BUILD_DIR=${BUILD_DIR:-$E2E_CACHE/.build}
GO=${GO:-go}
NICE=${NICE:-nice -n 10}

CRIO_VERSION=v1.34.0
# The second CRI-O of the matrix: the newest v1.36 patch the module proxy serves (its conmon-rs
# client is v0.7.3; v1.34's is v0.6.6). The crictl-driven e2e runs against both.
CRIO_NEXT_VERSION=v1.36.3
CRICTL_VERSION=v1.34.0
JAEGER_VERSION=v1.76.0
# The kubelet of the standalone-kubelet e2e. Kubernetes' go.mod points its k8s.io/* staging modules
# at ./staging/src/k8s.io/<m>, which the module zip does not carry; each is published on its own as
# k8s.io/<m> v0.<minor>.<patch>, so the build replaces every one of them with that version.
KUBELET_VERSION=v1.34.4
KUBE_STAGING_VERSION=v0.${KUBELET_VERSION#v1.}
# What Kubernetes' own build stamps, so `kubelet --version` says v1.34.4 (not v0.0.0-master).
KUBELET_LDFLAGS=
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	KUBELET_LDFLAGS+=" -X $p.gitVersion=$KUBELET_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$(cut -d. -f2 <<<"$KUBELET_VERSION")"
	KUBELET_LDFLAGS+=" -X $p.gitTreeState=clean"
done
CRIO_TAGS="containers_image_openpgp containers_image_ostree_stub exclude_graphdriver_btrfs btrfs_noversion seccomp"
APT_PACKAGES=(conmon umoci skopeo containernetworking-plugins libseccomp-dev gcc make pkg-config)

log() { printf 'e2e-tools: %s\n' "$*" >&2; }

# install_apt installs the missing apt packages only, so repeated runs do not touch apt.
install_apt() {
	local missing=() p
	for p in "${APT_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if ((${#missing[@]})); then
		log "apt-get install ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
			{ apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
	fi
}

# module_dir downloads module@version into the module cache and prints its directory.
module_dir() {
	(cd "$(mktemp -d)" && GOFLAGS=-mod=mod $GO mod download -json "$1@$2") |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

# build_go_tool NAME MODULE VERSION PACKAGE TAGS CGO [STAGING [LDFLAGS]] builds PACKAGE of
# MODULE@VERSION in a temporary main module that requires MODULE, starts from MODULE's go.sum and
# copies MODULE's replace directives, so the binary is built from the exact dependency versions
# MODULE pins. With STAGING, a replace to ./staging/src/<m> becomes <m>@STAGING (Kubernetes'
# published staging modules). LDFLAGS are added to the linker flags (version stamps).
build_go_tool() {
	local name=$1 mod=$2 ver=$3 pkg=$4 tags=$5 cgo=$6 staging=${7:-} ldflags=${8:-}
	local out=$E2E_CACHE/$name-$ver
	[[ -f $out/.done ]] && { echo "$name cached"; return; }
	local start=$SECONDS src tmp
	src=$(module_dir "$mod" "$ver")
	[[ -n $src && -f $src/go.mod ]] || { log "cannot download $mod@$ver"; return 1; }
	tmp=$(mktemp -d "$BUILD_DIR/$name.XXXXXX")
	(
		cd "$tmp"
		$GO mod init gomon-e2e-tools/"$name" >/dev/null 2>&1
		cp "$src/go.sum" go.sum
		local gov
		gov=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$src/go.mod")
		$GO mod edit -go="$gov" -require="$mod@$ver"
		# Copy the module's replace directives (single-line and block form).
		awk '/^replace \(/{b=1;next} b&&/^\)/{b=0;next} b{print;next} /^replace /{sub(/^replace /,"");print}' "$src/go.mod" |
			while read -r from _ to tover; do
				[[ -n $from ]] || continue
				if [[ -n $staging && $to == ./staging/src/* ]]; then
					to=${to#./staging/src/} tover=$staging
				fi
				$GO mod edit -replace="$from=$to${tover:+@$tover}"
			done
		GOFLAGS=-mod=mod $GO get "$mod/$pkg@$ver" >&2
		mkdir -p "$out"
		CGO_ENABLED=$cgo $NICE $GO build -trimpath -tags "$tags" -ldflags "-s -w $ldflags" -o "$out/$name" "$mod/$pkg" >&2
	)
	rm -rf "$tmp"
	touch "$out/.done"
	echo "$name $((SECONDS - start))"
}

# build_pinns VERSION builds pinns from the C sources in the CRI-O VERSION module zip.
build_pinns() {
	local ver=$1
	local out=$E2E_CACHE/pinns-$ver
	[[ -f $out/.done ]] && { echo "pinns cached"; return; }
	local start=$SECONDS src tmp
	src=$(module_dir github.com/cri-o/cri-o "$ver")
	tmp=$(mktemp -d "$BUILD_DIR/pinns.XXXXXX")
	cp -r "$src/pinns" "$tmp/pinns"
	chmod -R u+w "$tmp"
	$NICE make -C "$tmp/pinns" >&2
	mkdir -p "$out"
	cp "$tmp/bin/pinns" "$out/pinns"
	rm -rf "$tmp"
	touch "$out/.done"
	echo "pinns $((SECONDS - start))"
}

main() {
	mkdir -p "$E2E_CACHE"
	# One build at a time per cache (concurrent `make e2e` runs share it); a failed build's
	# scratch modules are cleared by the next run.
	exec 9>"$E2E_CACHE/.lock"
	flock 9
	rm -rf "$BUILD_DIR"
	mkdir -p "$BUILD_DIR"
	install_apt
	local line
	for step in "build_pinns $CRIO_VERSION" \
		"build_go_tool crictl sigs.k8s.io/cri-tools $CRICTL_VERSION cmd/crictl '' 0" \
		"build_go_tool crio github.com/cri-o/cri-o $CRIO_VERSION cmd/crio '$CRIO_TAGS' 1" \
		"build_pinns $CRIO_NEXT_VERSION" \
		"build_go_tool crio github.com/cri-o/cri-o $CRIO_NEXT_VERSION cmd/crio '$CRIO_TAGS' 1" \
		"build_go_tool jaeger github.com/jaegertracing/jaeger $JAEGER_VERSION cmd/jaeger '' 0" \
		"build_go_tool kubelet k8s.io/kubernetes $KUBELET_VERSION cmd/kubelet '' 0 $KUBE_STAGING_VERSION '$KUBELET_LDFLAGS'"; do
		line=$(eval "$step") || { log "failed: $step"; exit 1; }
		case ${line#* } in
		cached) log "${line% *}: cached in $E2E_CACHE" ;;
		*) log "${line% *}: built in ${line#* } s" ;;
		esac
	done
	echo "CRIO=$E2E_CACHE/crio-$CRIO_VERSION/crio"
	echo "PINNS=$E2E_CACHE/pinns-$CRIO_VERSION/pinns"
	echo "CRICTL=$E2E_CACHE/crictl-$CRICTL_VERSION/crictl"
	echo "CRIO_NEXT=$E2E_CACHE/crio-$CRIO_NEXT_VERSION/crio"
	echo "PINNS_NEXT=$E2E_CACHE/pinns-$CRIO_NEXT_VERSION/pinns"
	echo "JAEGER=$E2E_CACHE/jaeger-$JAEGER_VERSION/jaeger"
	echo "KUBELET=$E2E_CACHE/kubelet-$KUBELET_VERSION/kubelet"
}

# Sourcing the script (for one build step by hand) defines the functions without running main.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi
