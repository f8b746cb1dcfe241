// `palisade lab …`: a local cloud on network namespaces (needs root). See usage() below.
import { destroyByPrefix, destroyStaleLabs, listByPrefix } from './lab.js';
import { consoleLine, defaultStateDir, labDown, labProbe, labStatus, labUp, labVmAdd, labVmDel, labWaitSynced, loadStack, type StackState } from './stack.js';

const USAGE = `usage: palisade lab <command> [--state-dir DIR]

  up [--port 8080] [--hosts h1,h2] [--profile lab | --no-profile] [--dataplane auto|nftables|iptables|null] [--prefix P]
        start the server, host namespaces with bridges and one agent each, a guest network,
        and write admin credentials into a CLI profile (activated)
  status [--json]          hosts, agents and VMs
  vm add NAME host=H [groups=g1,g2] [ip=A] [ip6=A] [mac=M]
        deploy a VM through the API and plug its namespace into H's bridge
  vm del NAME              destroy the VM and remove its namespace
  probe from=VM to=VM|outside proto=tcp|udp|icmp [port=N] [family=4|6] [timeout=MS] [--no-wait]
        waits until the VMs' rules are applied, then exit 0 when traffic passes, 1 when
        blocked (naming the rules that dropped it)
  wait [timeout=MS]        until every VM's rules are applied on its host (exit 1 if not)
  down [--prefix P]        stop everything and remove every namespace, link, process and file of the lab
  clean PREFIX | --stale   remove namespaces and links named PREFIX-… (after a crash), or of
                           every lab whose creating process / stack is gone

state: --state-dir, or $PALISADE_LAB_DIR, default /var/lib/palisade-lab`;

interface Parsed { pos: string[]; kv: Record<string, string>; flags: Record<string, string | true> }

/** Splits argv into positionals, key=value pairs and --flags (with a value when the flag takes one). Pure. */
export function parseLabArgs(argv: string[], valued: string[]): Parsed {
  const out: Parsed = { pos: [], kv: {}, flags: {} };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
      if (eq > 0) out.flags[name] = a.slice(eq + 1);
      else if (valued.includes(name)) {
        if (i + 1 >= argv.length) throw new UsageError(`--${name} needs a value`);
        out.flags[name] = argv[++i];
      } else out.flags[name] = true;
    } else if (/^[a-z0-9]+=/i.test(a)) {
      const eq = a.indexOf('=');
      out.kv[a.slice(0, eq).toLowerCase()] = a.slice(eq + 1);
    } else out.pos.push(a);
  }
  return out;
}

class UsageError extends Error {}

const str = (v: string | true | undefined): string | undefined => (typeof v === 'string' ? v : undefined);

function requireStack(dir: string): StackState {
  const s = loadStack(dir);
  if (!s) throw new Error(`no lab is up (no state in ${dir}); run \`palisade lab up\``);
  return s;
}

function table(rows: string[][]): string {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd()).join('\n');
}

export async function labCommand(argv: string[]): Promise<number> {
  const out = (s: string) => process.stdout.write(s + '\n');
  const err = (s: string) => process.stderr.write(s + '\n');
  let args: Parsed;
  try {
    args = parseLabArgs(argv, ['state-dir', 'port', 'hosts', 'profile', 'dataplane', 'prefix']);
  } catch (e) { err((e as Error).message); err(USAGE); return 2; }
  const [cmd, ...rest] = args.pos;
  if (!cmd || cmd === 'help' || cmd === '-h' || args.flags.help) { out(USAGE); return cmd || args.flags.help ? 0 : 2; }
  if (process.getuid && process.getuid() !== 0) { err('palisade lab needs root (it creates network namespaces)'); return 1; }
  const dir = str(args.flags['state-dir']) ?? defaultStateDir();
  try {
    switch (cmd) {
      case 'up': {
        const port = str(args.flags.port);
        const s = await labUp({
          stateDir: dir,
          port: port ? Number(port) : undefined,
          hosts: str(args.flags.hosts)?.split(',').filter(Boolean),
          profile: args.flags['no-profile'] ? null : str(args.flags.profile) ?? 'lab',
          dataplane: str(args.flags.dataplane),
          prefix: str(args.flags.prefix),
          progress: out,
        });
        out(`lab ${s.prefix} is up: ${Object.keys(s.hosts).length} hosts, server ${s.url}`);
        if (s.console) out(consoleLine(s.console));
        out(`next: palisade lab vm add web1 host=${Object.keys(s.hosts)[0]} groups=default`);
        return 0;
      }
      case 'status': {
        const s = requireStack(dir);
        const st = await labStatus(s);
        if (args.flags.json) { out(JSON.stringify(st, null, 2)); return 0; }
        out(`lab ${st.prefix}  server ${st.url} pid ${st.server.pid} ${st.server.running ? 'running' : 'NOT RUNNING'}${st.profile ? `  profile ${st.profile}` : ''}`);
        out(consoleLine(st.console));
        out('');
        out(table([['HOST', 'NAMESPACE', 'AGENT', 'STATE', 'SYNCED'],
          ...st.hosts.map((h) => [h.name, h.netns, `${h.agentPid} ${h.agentRunning ? 'running' : 'NOT RUNNING'}`, h.state, h.synced])]));
        out('');
        out(st.vms.length === 0 ? 'no VMs (palisade lab vm add NAME host=H groups=…)' : table([['VM', 'HOST', 'IPV4', 'IPV6', 'GROUPS', 'STATE', 'RULES', 'TAP'],
          ...st.vms.map((v) => [v.name, v.host, v.ipv4 ?? '-', v.ipv6 ?? '-', v.groups, v.state, v.sync, v.tap])]));
        return st.server.running && st.hosts.every((h) => h.agentRunning) ? 0 : 1;
      }
      case 'down': {
        const r = await labDown(dir, { prefix: str(args.flags.prefix) });
        if (!r.prefix) { out('no lab state found; nothing to do (use --prefix P or `palisade lab clean P` after a crash)'); return 0; }
        out(`lab ${r.prefix} down${r.stopped.length ? `: stopped ${r.stopped.join(', ')}` : ''}`);
        if (r.left.namespaces.length || r.left.links.length) { err(`left behind: ${[...r.left.namespaces, ...r.left.links].join(', ')}`); return 1; }
        return 0;
      }
      case 'clean': {
        if (args.flags.stale) {
          const gone = await destroyStaleLabs();
          out(gone.length ? `removed stale labs: ${gone.join(', ')}` : 'no stale labs');
          return 0;
        }
        const prefix = rest[0];
        if (!prefix) throw new UsageError('clean needs a PREFIX or --stale');
        await destroyByPrefix(prefix);
        const left = await listByPrefix(prefix);
        out(`removed ${prefix}-*`);
        return left.namespaces.length || left.links.length ? 1 : 0;
      }
      case 'vm': {
        const [sub, name] = rest;
        const s = requireStack(dir);
        if (sub === 'add') {
          if (!name) throw new UsageError('vm add needs a NAME');
          const host = args.kv.host ?? Object.keys(s.hosts)[0];
          const { vm, sync } = await labVmAdd(s, {
            name, host, groups: (args.kv.groups ?? '').split(',').map((g) => g.trim()).filter(Boolean),
            ip: args.kv.ip, ip6: args.kv.ip6, mac: args.kv.mac,
          });
          out(`VM ${name} on ${host}: ${vm.ipv4 ?? '-'} ${vm.ipv6 ?? '-'} mac ${vm.mac} tap ${vm.nics[0].tap}; rules ${sync}`);
          return sync === 'Synced' ? 0 : 1;
        }
        if (sub === 'del' || sub === 'remove' || sub === 'destroy') {
          if (!name) throw new UsageError(`vm ${sub} needs a NAME`);
          await labVmDel(s, name);
          out(`VM ${name} destroyed`);
          return 0;
        }
        throw new UsageError(`unknown: lab vm ${sub ?? ''}`);
      }
      case 'probe': {
        const s = requireStack(dir);
        const { from, to } = args.kv;
        const proto = (args.kv.proto ?? 'tcp').toLowerCase();
        if (!from || !to) throw new UsageError('probe needs from=VM and to=VM|outside');
        if (!['tcp', 'udp', 'icmp'].includes(proto)) throw new UsageError(`proto must be tcp, udp or icmp, not ${proto}`);
        const family = args.kv.family === '6' ? 6 : 4;
        const r = await labProbe(s, {
          from, to, proto: proto as 'tcp' | 'udp' | 'icmp', port: args.kv.port ? Number(args.kv.port) : undefined, family,
          timeoutMs: args.kv.timeout ? Number(args.kv.timeout) : undefined, waitSync: !args.flags['no-wait'],
        });
        out(`${r.passed ? 'PASS   ' : 'BLOCKED'} ${r.from} -> ${r.to} ${r.target}: ${r.explanation}`);
        return r.passed ? 0 : 1;
      }
      case 'wait': {
        const s = requireStack(dir);
        const pending = await labWaitSynced(s, { timeoutMs: args.kv.timeout ? Number(args.kv.timeout) : undefined });
        if (pending.length) { err(`not in place: ${pending.join(', ')}`); return 1; }
        out('all rules in place');
        return 0;
      }
      default:
        throw new UsageError(`unknown lab command ${cmd}`);
    }
  } catch (e) {
    if (e instanceof UsageError) { err(e.message); err(USAGE); return 2; }
    const ce = e as { describe?: () => string; message?: string };
    err(`palisade lab ${cmd}: ${typeof ce.describe === 'function' ? ce.describe() : ce.message ?? String(e)}`);
    return 1;
  }
}
