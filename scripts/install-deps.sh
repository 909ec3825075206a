#!/usr/bin/env bash
# Installs, from Debian packages, the programs the integration tests run for real:
# Prometheus Alertmanager (end-to-end test), PostgreSQL (the shared-store backend), and
# Chromium with its WebDriver (the console's browser tests).
# Idempotent; does nothing when all are present.
set -euo pipefail

need=()
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 \
  || need+=(prometheus-alertmanager)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)

if [ ${#need[@]} -eq 0 ]; then
  echo "already installed: alertmanager, postgresql, chromium, chromedriver"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# Package scripts must not start system services on a build machine.
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
