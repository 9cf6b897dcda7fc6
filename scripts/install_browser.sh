#!/usr/bin/env bash
# Installs Debian's Chromium for the report's headless-render test when this machine can.
# Without root or apt-get the test is skipped and says why.
set -u
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "geomxai: installing chromium with apt-get (headless report check)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
        >/tmp/geomxai-apt-chromium.log 2>&1 \
        || echo "geomxai: apt-get could not install chromium (see /tmp/geomxai-apt-chromium.log)"
else
    echo "geomxai: not root or no apt-get; the headless report check will be skipped"
fi
exit 0
