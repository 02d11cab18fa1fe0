#!/bin/sh
# Builds the small images the examples use, offline, from Debian's busybox-static:
#   myimage           busybox with CMD ["/bin/sh"] (the seed sample's image)
#   berth/entrypoint  busybox with ENTRYPOINT ["/bin/echo", "entrypoint:"] and WORKDIR /app
# Both have a user appuser (2100, primary group appgroup 2200) and a group othergroup (2300)
# for `--user NAME` tests; in berth/entrypoint /etc/passwd is a relative symbolic link.
# Usage: examples/build-images.sh [docker CLI args, e.g. -H unix:///path/docker.sock]
set -eu
BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || { echo "build-images: $BUSYBOX not found (apt-get install busybox-static)" >&2; exit 1; }
file "$BUSYBOX" 2>/dev/null | grep -q 'dynamically linked' && { echo "build-images: $BUSYBOX must be static (busybox-static)" >&2; exit 1; }
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/bin" "$ROOT/tmp" "$ROOT/app" "$ROOT/etc"
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for c in sh echo cat ls id sleep env true false pwd mkdir rm touch dd kill stat wc grep head tail seq date printf test expr trap sync; do
  ln -sf busybox "$ROOT/bin/$c"
done
printf 'root:x:0:0:root:/root:/bin/sh\nappuser:x:2100:2200::/home/app:/bin/sh\n' > "$ROOT/etc/passwd"
printf 'root:x:0:\nappgroup:x:2200:\nothergroup:x:2300:appuser\n' > "$ROOT/etc/group"
tar -C "$ROOT" -c . | docker "$@" import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' - myimage:latest >/dev/null
mkdir -p "$ROOT/lib/users"
mv "$ROOT/etc/passwd" "$ROOT/lib/users/passwd"
ln -s ../lib/users/passwd "$ROOT/etc/passwd"
tar -C "$ROOT" -c . | docker "$@" import -c 'ENTRYPOINT ["/bin/echo", "entrypoint:"]' -c 'CMD ["default-cmd"]' -c 'WORKDIR /app' -c 'ENV PATH=/bin' - berth/entrypoint:latest >/dev/null
echo "built myimage:latest and berth/entrypoint:latest"
