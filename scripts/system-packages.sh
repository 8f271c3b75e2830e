#!/usr/bin/env bash
# System packages the tests use beside the Python ones, for the `scale` profile's backends:
# redis-server (online store) and PostgreSQL (prediction log), curl (the walkthroughs' steps
# call the router with it, as a reader would), and Debian's chromium (the browser test of the
# router's API docs), Debian's docker.io and debootstrap (the container test,
# tests/integration/test_container_images.py: it starts dockerd and makes its base image, no
# registry being reachable). Installed with apt when we may (root on Debian/Ubuntu); otherwise we say
# how, and those tests skip with the reason (in CI, with CI=true, they fail instead:
# tests/support/system_services.py).
set -u
missing=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# Headless Chromium: the test that the router's /docs and /redoc render offline.
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
# dockerd, not docker: some machines have a client alone. The docker.io package brings both.
command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${missing[*]} (Debian packages) for the scale-profile tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null) \
    || echo "warning: could not install ${missing[*]}; those tests will be skipped (and fail when CI=true)"
else
  echo "note: ${missing[*]} not installed (e.g. 'sudo apt-get install ${missing[*]}' or 'brew install redis postgresql');" \
       "the Redis / PostgreSQL tests will be skipped (and fail when CI=true)"
fi
exit 0
