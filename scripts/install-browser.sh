#!/usr/bin/env bash
# Installs what the console's browser tests (tests/browser/main.rs) drive: Debian's `chromium` and
# `chromium-driver` (chromedriver), from the distribution's own packages, when either is missing.
# Prints both versions; they come from the same source package, so they match. fonts-liberation (a
# recommendation of chromium that --no-install-recommends skips) makes the screenshots readable.
set -euo pipefail

have_browser() { [ -x /usr/bin/chromium ] && command -v chromedriver >/dev/null; }

if ! have_browser; then
  echo "chromium or chromedriver not found: installing chromium and chromium-driver with apt-get"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    chromium chromium-driver fonts-liberation
fi
if ! have_browser; then
  echo "chromium (/usr/bin/chromium) or chromedriver (PATH=$PATH) is still missing after apt-get" >&2
  exit 1
fi
# Debian's /usr/bin/chromium is a wrapper script whose checks can print shell noise on stderr.
echo "chromium: /usr/bin/chromium ($(/usr/bin/chromium --version 2>/dev/null))"
echo "chromedriver: $(command -v chromedriver) ($(chromedriver --version))"
