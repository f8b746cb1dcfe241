#!/usr/bin/env bash
# Installs the Debian packages Palisade's server, agent, lab and tests use (idempotent; needs root).
set -euo pipefail
PKGS=(iptables ipset ebtables arptables nftables conntrack iproute2 iputils-ping ncat netcat-openbsd
      ulogd2 ulogd2-json  # the agent reads the kernel's drop log (NFLOG) with ulogd2's JSON output
      hping3 arping tcpdump iperf3 python3-scapy cs python3-cs python3-libcloud ansible postgresql kmod procps
      chromium fonts-dejavu-core  # the web console tests drive Debian's Chromium (playwright-core downloads no browser)
      python3 make g++)  # the last three: npm ci builds better-sqlite3 when no prebuilt binary is at hand; ansible: its CloudStack modules are tested against the API
missing=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Kernel modules the dataplane and lab need (present on a stock Debian kernel).
for m in br_netfilter ip_set xt_physdev xt_set nf_conntrack ebtables ebtable_nat ebtable_filter; do modprobe "$m" 2>/dev/null || true; done
