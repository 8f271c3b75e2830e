#!/usr/bin/env bash
# System packages the tests use beside the Python ones: redis-server, for the `scale` profile's
# online store. Installed with apt when we may (root on Debian/Ubuntu); otherwise we say how.
set -u
if command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing redis-server (Debian package) for the Redis online-store tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
    || echo "warning: could not install redis-server; the Redis tests will be skipped"
else
  echo "note: redis-server is not installed; install it (e.g. 'sudo apt-get install redis-server'" \
       "or 'brew install redis') to run the Redis online-store tests"
fi
exit 0
