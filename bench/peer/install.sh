#!/bin/sh
# Install the Node-RED peer (versions pinned in package.json / package-lock.json) into bench/peer/node_modules.
set -eu
cd "$(dirname "$0")"
if [ -f package-lock.json ]; then
    npm ci --omit=dev --no-audit --no-fund
else
    npm install --omit=dev --no-audit --no-fund
fi
node -e 'console.log("node-red", require("node-red/package.json").version, "pg", require("pg/package.json").version)'
