#!/usr/bin/env bash
# Installs the deployment checks' validators (package-lock.json, exact versions and hashes) into
# DEST/node_modules with `npm ci`; a no-op when DEST already holds this lockfile's install.
#   npm-install.sh DEST
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dest=${1:?usage: npm-install.sh DEST}

command -v npm >/dev/null || { echo "npm-install: npm is missing (bash deploy/install-deps.sh)" >&2; exit 1; }
mkdir -p "$dest"
if cmp -s "$here/package-lock.json" "$dest/package-lock.json" &&
   [ -f "$dest/node_modules/.package-lock.json" ]; then
  echo "npm-install: $dest is up to date"
  exit 0
fi
cp "$here/package.json" "$here/package-lock.json" "$dest/"
(cd "$dest" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
echo "npm-install: installed $(ls "$dest/node_modules" | wc -l) packages into $dest/node_modules"
