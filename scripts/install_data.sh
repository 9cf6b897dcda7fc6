#!/usr/bin/env bash
# Installs the real Fashion-MNIST files (Debian package dataset-fashion-mnist) when this machine can.
# Without root or apt-get the study falls back to scikit-learn's embedded digits and says so.
set -u
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "geomxai: installing dataset-fashion-mnist with apt-get"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
        >/tmp/geomxai-apt.log 2>&1 \
        || echo "geomxai: apt-get could not install dataset-fashion-mnist (see /tmp/geomxai-apt.log); the study will use 'digits'"
else
    echo "geomxai: not root or no apt-get; Fashion-MNIST not installed, the study will use 'digits'"
fi
exit 0
