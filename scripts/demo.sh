#!/usr/bin/env bash
# The seed scenario on a local lab, end to end: installs what is missing, builds, brings up
# `palisade lab` (server + two hypervisor namespaces with agents), creates Production_Web_Tier through
# the real `cloudstack` CLI, deploys two VMs and sends real packets to show what passes and what is
# blocked (and by whose rules), then changes a rule live. It checks its own claims: the exit status
# is non-zero when any expected pass or block does not happen.
#
#   sudo bash scripts/demo.sh          # leaves the lab up to explore (palisade lab down removes it)
#   sudo bash scripts/demo.sh --down   # removes the lab at the end
#
# Honours PALISADE_LAB_DIR (lab state, default /var/lib/palisade-lab) and PALISADE_CONFIG (CLI profile).
set -euo pipefail

DOWN=0
for arg in "$@"; do
  case "$arg" in
    --down) DOWN=1 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option: $arg (usage: sudo bash scripts/demo.sh [--down])" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ]; then echo "the demo needs root (it creates network namespaces): sudo bash scripts/demo.sh" >&2; exit 1; fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
STATE_DIR=${PALISADE_LAB_DIR:-/var/lib/palisade-lab}
T0=$SECONDS

if [ -t 1 ]; then B=$'\e[1m'; DIM=$'\e[2m'; G=$'\e[32m'; R=$'\e[31m'; N=$'\e[0m'; else B=; DIM=; G=; R=; N=; fi

# ---- printing ------------------------------------------------------------------------------------

step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
note() { printf '%s\n' "$*"; }
# The command line as one would type it (words quoted only when they need it).
cmdline() {
  local out="" w
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=" $w"; else out+=" '${w//\'/\'\\\'\'}'"; fi
  done
  printf '%s' "${out# }"
}
# Prints a command, then runs it (its output indented); stops the demo when it fails.
show() {
  printf '%s$ %s%s\n' "$B" "$(cmdline "$@")" "$N"
  if ! "$@" 2>&1 | sed 's/^/  /'; then
    printf '%sthe demo stopped: that command failed%s\n' "$R" "$N" >&2
    return 1
  fi
}

# ---- Node.js, packages, build --------------------------------------------------------------------

node_ok() { command -v node >/dev/null && node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; }

ensure_node() {
  node_ok && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  local cand
  cand=$(apt-cache policy nodejs 2>/dev/null | awk '/Candidate:/ { print $2 }')
  if [[ ${cand%%.*} =~ ^[0-9]+$ ]] && [ "${cand%%.*}" -ge 20 ]; then
    note "installing Node.js $cand from the distribution"
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  else
    # Debian 12 ships Node.js 18; Palisade needs 20 or later, which we do not fetch from third-party sources.
    echo "Node.js 20 or later is needed (the distribution offers ${cand:-none}); install it, then run this again" >&2
    exit 1
  fi
  node_ok || { echo "could not install Node.js 20 or later" >&2; exit 1; }
}

# node_modules is current when every package of package-lock.json is installed at its locked version
# (npm's own record, node_modules/.package-lock.json) and the native SQLite binding loads.
deps_current() {
  [ -d node_modules ] || return 1
  node -e '
    const fs = require("fs");
    const lock = JSON.parse(fs.readFileSync("package-lock.json", "utf8")).packages || {};
    let have;
    try { have = JSON.parse(fs.readFileSync("node_modules/.package-lock.json", "utf8")).packages || {}; } catch { process.exit(1); }
    for (const [k, v] of Object.entries(lock)) {
      if (!k || v.optional || v.link) continue;
      if (!have[k] || have[k].version !== v.version) process.exit(1);
    }
    new (require("better-sqlite3"))(":memory:").close();
  ' 2>/dev/null
}

step "1. Install what is missing, build"
ensure_node
note "node $(node --version), npm $(npm --version)"
show bash scripts/install-deps.sh
if deps_current; then
  note "node_modules matches package-lock.json: no npm ci needed"
else
  show npm ci --no-audit --no-fund
fi
show npm run build --silent
T1=$SECONDS

# The CLI, as the build produced it (no global install).
palisade() { node "$REPO/dist/main.js" "$@"; }

# ---- checked claims ------------------------------------------------------------------------------

CLAIMS=0
FAILED=()
# expect pass|blocked WHY REGEX|'' -- PALISADE-ARGS…: runs a probe (exit 0 = passed, 1 = blocked) and
# records whether the outcome, and the rules it names (REGEX), are the expected ones.
expect() {
  local want=$1 why=$2 rx=$3 out code
  shift 4
  printf '%s$ %s%s\n' "$B" "$(cmdline palisade "$@")" "$N"
  set +e
  out=$(palisade "$@" 2>&1)
  code=$?
  set -e
  printf '%s\n' "$out" | sed 's/^/  /'
  CLAIMS=$((CLAIMS + 1))
  local got=error
  [ "$code" = 0 ] && got=pass
  [ "$code" = 1 ] && [[ $out == BLOCKED* ]] && got=blocked
  if [ "$got" = "$want" ] && { [ -z "$rx" ] || [[ $out =~ $rx ]]; }; then
    printf '  %s-> expected: %s%s\n' "$G" "$why" "$N"
  else
    printf '  %s-> NOT AS EXPECTED (wanted %s: %s)%s\n' "$R" "$want" "$why" "$N"
    FAILED+=("$(cmdline "$@") (wanted $want${rx:+, naming /$rx/})")
  fi
}

# ---- lab -----------------------------------------------------------------------------------------

UP=0
finish() {
  local code=$?
  if [ "$code" != 0 ] && [ "$UP" = 1 ] && [ -d "$STATE_DIR" ]; then
    for f in "$STATE_DIR"/server.log "$STATE_DIR"/agent-*.log; do
      [ -f "$f" ] && { echo "--- last lines of $f"; tail -n 15 "$f"; }
    done
  fi
  if [ "$DOWN" = 1 ] && [ "$UP" = 1 ]; then
    step "Remove the lab (--down)"
    show palisade lab down || code=1
  fi
  exit "$code"
}
trap finish EXIT

step "2. Bring the lab up: a server, hypervisors h1 and h2 (namespaces with a bridge and an agent each)"
if [ -f "$STATE_DIR/lab.json" ]; then
  note "a lab from an earlier run is up (state in $STATE_DIR): removing it first"
  show palisade lab down
fi
UP=1
show palisade lab up

read_state() { node -p "JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8')).$1" "$STATE_DIR/lab.json"; }
export CLOUDSTACK_ENDPOINT CLOUDSTACK_KEY CLOUDSTACK_SECRET
CLOUDSTACK_ENDPOINT=$(read_state url)
CLOUDSTACK_KEY=$(read_state apikey)
CLOUDSTACK_SECRET=$(read_state secretkey)
unset CLOUDSTACK_CONFIG CLOUDSTACK_REGION
note "The cloudstack CLI (python3-cs) talks to it with the lab's admin keys:"
note "  export CLOUDSTACK_ENDPOINT=$CLOUDSTACK_ENDPOINT CLOUDSTACK_KEY=<apikey> CLOUDSTACK_SECRET=<secretkey>   # from $STATE_DIR/lab.json"

# The web console: the server serves it at / of the API's origin; the first admin's password is in the
# credentials file the server wrote (its path is in the lab state). Checked: the page loads and that
# password logs in, as the console does it (login with username and password).
CONSOLE_URL=$(read_state console.url)
CONSOLE_CREDS=$(read_state console.credentialsFile)
CONSOLE_PORT=${CONSOLE_URL##*:}
note "The web console (open it in a browser on this machine, or through an SSH tunnel to port ${CONSOLE_PORT%/}):"
note "  $CONSOLE_URL   user admin, domain empty (ROOT), password:"
note "  node -p \"require('$CONSOLE_CREDS').password\""
if ! node -e '
  const [page, api, creds] = process.argv.slice(1);
  (async () => {
    const r = await fetch(page);
    if (r.status !== 200 || !/<div id="root">/.test(await r.text())) throw new Error(`GET ${page} answered ${r.status} without the console page`);
    const password = JSON.parse(require("fs").readFileSync(creds, "utf8")).password;
    const body = new URLSearchParams({ command: "login", response: "json", username: "admin", password });
    const login = await (await fetch(api, { method: "POST", body })).json();
    const key = login.loginresponse && login.loginresponse.sessionkey;
    if (!key) throw new Error(`login as admin failed: ${JSON.stringify(login)}`);
  })().then(() => console.log("  (checked: the page loads and that password logs in)"), (e) => { console.error(String(e.message || e)); process.exit(1); });
' "$CONSOLE_URL" "$CLOUDSTACK_ENDPOINT" "$CONSOLE_CREDS"; then
  printf '%sthe demo stopped: the web console does not answer as expected%s\n' "$R" "$N" >&2
  exit 1
fi

# One line per ingress rule in an API answer (a job result or a list), with its id.
rules_of() {
  node -e '
    let t = ""; process.stdin.on("data", (d) => t += d).on("end", () => {
      const j = JSON.parse(t);
      const g = j.securitygroup ? (Array.isArray(j.securitygroup) ? j.securitygroup[0] : j.securitygroup) : j;
      for (const r of g.ingressrule || []) {
        const what = r.protocol === "icmp" ? `icmp type ${r.icmptype} code ${r.icmpcode}` : `${r.protocol} ${r.startport}-${r.endport}`;
        console.log(`ingress ${what} from ${r.cidr}  (ruleid ${r.ruleid})`);
      }
    });'
}

step "3. Create the security group through the real cloudstack CLI"
show cloudstack createSecurityGroup name=Production_Web_Tier 'description=Standard web ingress rules'

# Runs an authorize command (cloudstack … or palisade …), shows the rule the async job added; its id in RULE_ID.
RULE_ID=
authorize() {
  printf '%s$ %s%s\n' "$B" "$(cmdline "$@")" "$N"
  local out rules
  if ! out=$("$@"); then
    printf '%s\n' "$out" | sed 's/^/  /'
    printf '%sthe demo stopped: that command failed%s\n' "$R" "$N" >&2
    return 1
  fi
  rules=$(printf '%s\n' "$out" | rules_of)
  note "  (the CLI waited for the async job, which answers with the rule added:)"
  printf '%s\n' "$rules" | sed 's/^/    /'
  RULE_ID=$(printf '%s\n' "$rules" | sed -n 's/.*(ruleid \(.*\))$/\1/p' | tail -n 1)
}
note "SSH from one admin address, HTTP/HTTPS from anywhere, ping from the private 10.0.0.0/8:"
authorize cloudstack authorizeSecurityGroupIngress securitygroupname=Production_Web_Tier protocol=TCP startport=22 endport=22 cidrlist=203.0.113.50/32
authorize cloudstack authorizeSecurityGroupIngress securitygroupname=Production_Web_Tier protocol=TCP startport=80 endport=443 cidrlist=0.0.0.0/0
authorize cloudstack authorizeSecurityGroupIngress securitygroupname=Production_Web_Tier protocol=ICMP icmptype=-1 icmpcode=-1 cidrlist=10.0.0.0/8
show cloudstack listSecurityGroups securitygroupname=Production_Web_Tier

step "4. The audit trail, through palisade (cloudmonkey syntax)"
note "Each authorization is an async job: Scheduled, Started, Completed."
show palisade list events type=SECURITY.GROUP.AUTHORIZE filter=type,state,description --output table

step "5. Two VMs on different hypervisors; each VM is a namespace plugged into its host's bridge"
note "web1 on h1 in Production_Web_Tier, client on h2 in the default group (no ingress rules), both on the"
note "guest network 10.1.0.0/24, which lies inside 10.0.0.0/8. The outside namespace (198.51.100.1) is the internet."
WEB_IP=10.1.0.10
CLIENT_IP=10.1.0.20
show palisade lab vm add web1 host=h1 groups=Production_Web_Tier ip=$WEB_IP
show palisade lab vm add client host=h2 groups=default ip=$CLIENT_IP
show palisade lab status

step "6. Real packets: what passes"
expect pass "HTTP is open to 0.0.0.0/0" "" -- lab probe from=client to=web1 proto=tcp port=80
expect pass "HTTPS too (80-443)" "" -- lab probe from=client to=web1 proto=tcp port=443
expect pass "the internet reaches HTTP as well" "" -- lab probe from=outside to=web1 proto=tcp port=80
expect pass "ping from $CLIENT_IP is inside 10.0.0.0/8" "" -- lab probe from=client to=web1 proto=icmp

step "7. Real packets: what is blocked, and by whose rules"
expect blocked "SSH is only open to 203.0.113.50/32" "web1's ingress rules" -- lab probe from=client to=web1 proto=tcp port=22
expect blocked "no rule opens 8080" "web1's ingress rules" -- lab probe from=client to=web1 proto=tcp port=8080
expect blocked "ping from 198.51.100.1 is outside 10.0.0.0/8" "web1's ingress rules" -- lab probe from=outside to=web1 proto=icmp
expect blocked "client's default group has no ingress rules" "client's ingress rules" -- lab probe from=web1 to=client proto=tcp port=80

step "8. A live change: open SSH to the client's address, then close it again"
authorize palisade authorize securitygroupingress securitygroupname=Production_Web_Tier protocol=tcp startport=22 endport=22 cidrlist=$CLIENT_IP/32
expect pass "SSH from $CLIENT_IP/32 is now allowed" "" -- lab probe from=client to=web1 proto=tcp port=22
show palisade revoke securitygroupingress id="$RULE_ID"
expect blocked "the rule is gone again" "web1's ingress rules" -- lab probe from=client to=web1 proto=tcp port=22

# ---- verdict -------------------------------------------------------------------------------------

step "Result"
note "set-up $((T1 - T0)) s, lab and scenario $((SECONDS - T1)) s"
if [ "${#FAILED[@]}" -eq 0 ]; then
  note "${G}all $CLAIMS expected passes and blocks happened${N}"
else
  note "${R}${#FAILED[@]} of $CLAIMS claims did not hold:${N}"
  printf '  %s\n' "${FAILED[@]}"
fi
if [ "$DOWN" = 0 ]; then
  cat <<EOF

The lab is still up. Explore it (as root):
  palisade() { node $REPO/dist/main.js "\$@"; }
  palisade list securitygroups filter=name,description,virtualmachinecount --output table
  palisade list securitygroups securitygroupname=Production_Web_Tier     # its rules
  palisade lab status                                                    # hosts, agents, VMs, rules applied?
  palisade lab probe from=client to=web1 proto=tcp port=443
  export CLOUDSTACK_ENDPOINT=$CLOUDSTACK_ENDPOINT CLOUDSTACK_KEY=$CLOUDSTACK_KEY CLOUDSTACK_SECRET=$CLOUDSTACK_SECRET
  cloudstack listSecurityGroups
The web console: $CONSOLE_URL (user admin; password: node -p "require('$CONSOLE_CREDS').password")
  Production_Web_Tier's rules with a preview of each change, web1's "Can this reach my VM?", Hosts, Events, Settings.
Remove everything (namespaces, processes, state, CLI profile):
  palisade lab down
EOF
fi
[ "${#FAILED[@]}" -eq 0 ]
