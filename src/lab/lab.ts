// The lab topology: a fabric namespace with one bridge per segment, an "outside" namespace playing the
// internet (gateway, DNS, DHCP), hypervisor hosts as namespaces with Linux bridges, VMs as namespaces
// attached through libvirt-style taps. Everything is named `<prefix>-…` and removed by destroy().
import { run, runIn, shIn, spawnIn, scriptPath, PYTHON, type Background, type RunOptions, type RunResult } from './exec.js';
import { forgetOwner, isStale, listOwners, recordOwner } from './owners.js';
import { checkName, checkPrefix, linkLocalFromMac, normMac, nsNames, randomPrefix, splitCidr, tapMac, v4Network, v6Network } from './names.js';

/** One L2 segment of the fabric; hosts' bridges of the same name share it. Gateway = the outside namespace. */
export interface Segment {
  index: number;
  /** The host bridge name that joins this segment (cloudbr0 is segment 0). */
  bridge: string;
  gw4: string; gw4Cidr: string;
  gw6: string; gw6Cidr: string;
  /** The outside namespace's MAC on this segment. */
  gwMac: string;
  /** Interface of the outside namespace on this segment. */
  gwIface: string;
}

// Documentation ranges only (RFC 5737 / RFC 3849): nothing in the lab can collide with a real network.
const SEGMENTS = [
  { gw4: '198.51.100.1', gw6: '2001:db8:ff::1' },
  { gw4: '192.0.2.1', gw6: '2001:db8:fe::1' },
  { gw4: '203.0.113.1', gw6: '2001:db8:fd::1' },
];

/** What the outside DNS responder answers to any A / AAAA query. */
export const DNS_ANSWER = { v4: '198.51.100.53', v6: '2001:db8:ff::53' };

/** Anything that has a namespace (Host, Vm, Outside, or just its name). */
export type NsLike = string | { netns: string };
export const nsOf = (x: NsLike): string => (typeof x === 'string' ? x : x.netns);

/** An interface in a namespace: where frames are sent from and captured on. */
export interface Endpoint { netns: string; iface: string; mac: string }

export interface NicSpec {
  /** Host bridge (default cloudbr0). */
  bridge?: string;
  /** Guest MAC; the tap gets the same with first octet fe. */
  mac: string;
  /** 'a.b.c.d/len' (len defaults to 24). */
  ipv4?: string;
  /** 'x::y/len' (len defaults to 64); added with nodad unless dad is set. */
  ipv6?: string;
  /** Extra addresses, IPv4 or IPv6, with or without /len (default /32, /128). */
  secondary?: string[];
  /** Run IPv6 duplicate address detection on this NIC (default off so tests are fast). */
  dad?: boolean;
  /** First NIC only: default routes via these (addresses the outside namespace owns, see
   *  Outside.addAddress) instead of the segment's 198.51.100.1 / 2001:db8:ff::1 on-link. */
  gateway4?: string;
  gateway6?: string;
}

export interface VmNic extends Endpoint {
  index: number;
  /** Host bridge this NIC is attached to. */
  bridge: string;
  /** Current host-side tap (vnetN in the host namespace); valid while plugged. */
  tap: string;
  plugged: boolean;
  tapMac: string;
  /** Primary IPv4 address (no length) or null; likewise IPv6. */
  ipv4: string | null;
  ipv6: string | null;
  ipv4Cidr: string | null;
  ipv6Cidr: string | null;
  /** Secondary addresses, plain. */
  secondary: string[];
  /** The guest's EUI-64 IPv6 link-local address. */
  linkLocal: string;
  segment: Segment;
  dad: boolean;
  gateway4: string | null;
  gateway6: string | null;
}

export interface VmSpec { host: Host | string; name: string; nics: NicSpec[] }

export interface LabOptions {
  prefix?: string;
  /** Called with each step (for debugging); default silent. */
  log?: (line: string) => void;
  /** For `palisade lab up`: the stack's state directory (the lab outlives the creating process). */
  stateDir?: string;
}

const hex2 = (n: number) => (n & 255).toString(16).padStart(2, '0');

function sysctlArgs(kv: Record<string, string | number>): string {
  return Object.entries(kv).map(([k, v]) => `'${k}=${v}'`).join(' ');
}

export class Host {
  readonly bridges = new Set<string>();
  /** Next N for vnetN (kept across restore so tap names never repeat). */
  tapCounter = 0;
  /** Uplink devices in this host namespace, per bridge (eth0 for cloudbr0, eth1 …). */
  readonly uplinks = new Map<string, string>();
  constructor(readonly lab: Lab, readonly name: string, readonly index: number, readonly netns: string) {}

  exec(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return runIn(this.netns, cmd, args, opts);
  }

  /** A new libvirt-style tap name, unique in this host namespace for the lab's lifetime. */
  nextTap(): string { return `vnet${this.tapCounter++}`; }

  /** Adds a bridge joined to the fabric segment of the same name (idempotent). */
  async addBridge(bridge: string): Promise<void> {
    if (this.bridges.has(bridge)) return;
    const seg = this.lab.segmentFor(bridge);
    const up = `eth${seg.index}`;
    const fab = this.lab.fabricNs;
    const fabPort = `u${this.index}s${seg.index}`;
    const mac = `02:00:${hex2(seg.index)}:${hex2(this.index)}:00:01`;
    const brMac = `02:00:${hex2(seg.index)}:${hex2(this.index)}:00:00`;
    await this.lab.sh(`
ip -n ${this.netns} link add ${bridge} address ${brMac} type bridge stp_state 0 forward_delay 0
ip -n ${fab} link add ${fabPort} type veth peer name ${up} address ${mac} netns ${this.netns}
ip -n ${fab} link set ${fabPort} master fab${seg.index} up
ip -n ${this.netns} link set ${up} master ${bridge} up
ip -n ${this.netns} link set ${bridge} up
`);
    this.bridges.add(bridge);
    this.uplinks.set(bridge, up);
  }

  /** Bridge ports in this host namespace: name, MAC and master, straight from the kernel. */
  async ports(): Promise<{ name: string; mac: string; bridge: string }[]> {
    const r = await this.exec('ip', ['-j', 'link', 'show']);
    const links = JSON.parse(r.stdout) as { ifname: string; address?: string; master?: string }[];
    return links.filter((l) => l.master).map((l) => ({ name: l.ifname, mac: l.address ?? '', bridge: l.master! }));
  }
}

export class Vm {
  readonly nics: VmNic[] = [];
  removed = false;
  constructor(readonly lab: Lab, readonly name: string, readonly host: Host, readonly netns: string) {}

  exec(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return runIn(this.netns, cmd, args, opts);
  }
  /** First NIC's interface and MAC, so a Vm can be passed wherever an Endpoint is expected. */
  get iface(): string { return this.nics[0].iface; }
  get mac(): string { return this.nics[0].mac; }
  get ipv4(): string | null { return this.nics[0].ipv4; }
  get ipv6(): string | null { return this.nics[0].ipv6; }
  nic(i: number): VmNic {
    const n = this.nics[i];
    if (!n) throw new Error(`VM ${this.name} has no NIC ${i}`);
    return n;
  }

  /** Deletes the VM namespace (and with it its taps), ending processes inside it. */
  async remove(): Promise<void> {
    if (this.removed) return;
    await this.lab.killNsProcesses(this.netns);
    await run('ip', ['netns', 'del', this.netns], { allowFail: true });
    this.removed = true;
    this.lab.vms.delete(this.name);
  }

  /**
   * Sets a NIC's addresses after the fact (e.g. once an API allocated them, for a VM plugged first).
   * Replaces the primary IPv4/IPv6 and default routes; secondaries are added.
   */
  async configure(index: number, c: { ipv4?: string; ipv6?: string; gateway4?: string; gateway6?: string; secondary?: string[] }): Promise<void> {
    const nic = this.nic(index);
    const lines: string[] = [];
    if (c.ipv4 && nic.ipv4Cidr) lines.push(`ip -n ${this.netns} addr del ${nic.ipv4Cidr} dev ${nic.iface}`);
    if (c.ipv6 && nic.ipv6Cidr) lines.push(`ip -n ${this.netns} addr del ${nic.ipv6Cidr} dev ${nic.iface}`);
    if (nic.plugged) await this.lab.sh(lines.join('\n'));
    if (c.ipv4) { const v = splitCidr(c.ipv4, 24); nic.ipv4 = v.addr; nic.ipv4Cidr = `${v.addr}/${v.len}`; }
    if (c.ipv6) { const v = splitCidr(c.ipv6, 64); nic.ipv6 = v.addr; nic.ipv6Cidr = `${v.addr}/${v.len}`; }
    if (c.gateway4) nic.gateway4 = c.gateway4;
    if (c.gateway6) nic.gateway6 = c.gateway6;
    const sec = c.secondary ?? [];
    nic.secondary.push(...sec.map((x) => x.split('/')[0]));
    if (nic.plugged) await this.lab.sh(this.lab.addressScript(this, nic, c.ipv4 ? true : false, c.ipv6 ? true : false, sec));
  }

  /** Deletes the NIC's tap and plugs a new one (next vnetN), as a VM restart does. Returns the new name. */
  async recreateTap(index = 0): Promise<string> {
    await this.unplug(index);
    return this.plug(index);
  }

  /** Deletes the NIC's tap (a stopped VM / a port that disappeared); the guest side goes with it. */
  async unplug(index = 0): Promise<void> {
    const nic = this.nic(index);
    if (!nic.plugged) return;
    await runIn(this.host.netns, 'ip', ['link', 'del', nic.tap]);
    nic.plugged = false;
  }

  /** Plugs an unplugged NIC again with a fresh tap name (addresses and routes restored). Returns the tap. */
  async plug(index = 0): Promise<string> {
    const nic = this.nic(index);
    if (nic.plugged) return nic.tap;
    nic.tap = this.host.nextTap();
    await this.lab.sh(this.lab.plugScript(this, nic));
    nic.plugged = true;
    return nic.tap;
  }
}

export class Outside {
  readonly ipv4 = SEGMENTS[0].gw4;
  readonly ipv6 = SEGMENTS[0].gw6;
  readonly iface = 'eth0';
  readonly mac: string;
  private dnsProc: Background | null = null;
  private dhcpProc: Background | null = null;
  constructor(readonly lab: Lab, readonly netns: string) { this.mac = lab.segment(0).gwMac; }

  exec(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return runIn(this.netns, cmd, args, opts);
  }

  /** Extra addresses of the outside namespace (e.g. a guest network's gateway), on a segment's interface. */
  readonly extraAddresses: { cidr: string; segment: number }[] = [];
  async addAddress(cidr: string, segment = 0): Promise<void> {
    const seg = this.lab.segment(segment);
    if (!seg) throw new Error(`no segment ${segment}`);
    await runIn(this.netns, 'ip', ['addr', 'add', cidr, 'dev', seg.gwIface, ...(cidr.includes(':') ? ['nodad'] : [])]);
    this.extraAddresses.push({ cidr, segment });
  }

  /** Starts the DNS responder on UDP and TCP 53 (answers every A/AAAA with DNS_ANSWER). Idempotent. */
  async startDns(): Promise<Background> {
    if (!this.dnsProc) {
      this.dnsProc = this.lab.background(this.netns, PYTHON, [scriptPath('probe.py'), 'dns-server', DNS_ANSWER.v4, DNS_ANSWER.v6]);
      await this.dnsProc.waitFor(/^ready$/);
    }
    return this.dnsProc;
  }

  /** Starts the DHCP stub on segment 0: any DISCOVER gets an OFFER of `offer`, REQUEST an ACK. Idempotent. */
  async startDhcp(offer = '198.51.100.200'): Promise<Background> {
    if (!this.dhcpProc) {
      this.dhcpProc = this.lab.background(this.netns, PYTHON, [scriptPath('probe.py'), 'dhcp-server', this.iface, this.ipv4, offer]);
      await this.dhcpProc.waitFor(/^ready$/);
    }
    return this.dhcpProc;
  }
}

export class Lab {
  readonly hosts = new Map<string, Host>();
  readonly vms = new Map<string, Vm>();
  readonly fabricNs: string;
  readonly outside: Outside;
  private readonly segments: Segment[] = [];
  private readonly procs = new Map<Background, string>();
  private hostCounter = 0;
  private destroyed = false;

  constructor(readonly prefix: string, private readonly log: (l: string) => void) {
    this.fabricNs = nsNames.fabric(prefix);
    this.segments.push(this.makeSegment(0, 'cloudbr0'));
    this.outside = new Outside(this, nsNames.outside(prefix));
  }

  private makeSegment(index: number, bridge: string): Segment {
    const s = SEGMENTS[index];
    return {
      index, bridge,
      gw4: s.gw4, gw4Cidr: `${s.gw4}/24`, gw6: s.gw6, gw6Cidr: `${s.gw6}/64`,
      gwMac: `02:00:${hex2(index)}:ff:00:01`, gwIface: `eth${index}`,
    };
  }

  segment(i: number): Segment { return this.segments[i]; }

  /** Builds the fabric and the outside namespace (segment 0). Called by createLab. */
  async init(): Promise<void> {
    const f = this.fabricNs;
    const o = this.outside.netns;
    await run('modprobe', ['br_netfilter'], { allowFail: true }); // built in on some kernels
    await this.sh(`
ip netns add ${f}
ip netns add ${o}
ip netns exec ${f} sysctl -qw ${sysctlArgs({ 'net.ipv6.conf.default.addr_gen_mode': 1, 'net.ipv6.conf.all.addr_gen_mode': 1, 'net.bridge.bridge-nf-call-iptables': 0, 'net.bridge.bridge-nf-call-ip6tables': 0, 'net.bridge.bridge-nf-call-arptables': 0 })}
ip netns exec ${o} sysctl -qw ${sysctlArgs({ 'net.ipv4.ip_forward': 1, 'net.ipv6.conf.all.forwarding': 1, 'net.ipv4.conf.all.send_redirects': 0, 'net.ipv4.conf.default.send_redirects': 0, 'net.ipv6.conf.default.accept_dad': 0, 'net.ipv6.conf.all.accept_dad': 0, 'net.ipv4.ping_group_range': '0 2147483647' })}
ip -n ${f} link set lo up
ip -n ${o} link set lo up
`);
    await this.sh(this.segmentScript(this.segments[0]));
  }

  private segmentScript(seg: Segment): string {
    const f = this.fabricNs;
    const o = this.outside.netns;
    return `
ip -n ${f} link add fab${seg.index} type bridge stp_state 0 forward_delay 0
ip -n ${f} link set fab${seg.index} up
ip -n ${f} link add out${seg.index} type veth peer name ${seg.gwIface} address ${seg.gwMac} netns ${o}
ip -n ${f} link set out${seg.index} master fab${seg.index} up
ip -n ${o} addr add ${seg.gw4Cidr} dev ${seg.gwIface}
ip -n ${o} addr add ${seg.gw6Cidr} dev ${seg.gwIface} nodad
ip -n ${o} link set ${seg.gwIface} up
`;
  }

  /** The segment a host bridge name joins; a new bridge name gets the next segment (max 3). */
  segmentFor(bridge: string): Segment {
    const s = this.segments.find((x) => x.bridge === bridge);
    if (s) return s;
    throw new Error(`bridge ${bridge} has no segment yet`);
  }

  private async ensureSegment(bridge: string): Promise<Segment> {
    const s = this.segments.find((x) => x.bridge === bridge);
    if (s) return s;
    const i = this.segments.length;
    if (i >= SEGMENTS.length) throw new Error(`at most ${SEGMENTS.length} bridges per lab`);
    const seg = this.makeSegment(i, bridge);
    await this.sh(this.segmentScript(seg));
    this.segments.push(seg);
    return seg;
  }

  /** Adds a hypervisor host: namespace, bridges (default cloudbr0) with uplinks, br_netfilter sysctls at 1. */
  async addHost(name: string, opts: { bridges?: string[] } = {}): Promise<Host> {
    checkName('host', name);
    if (this.hosts.has(name)) throw new Error(`host ${name} exists`);
    const ns = nsNames.host(this.prefix, name);
    const host = new Host(this, name, ++this.hostCounter, ns);
    this.hosts.set(name, host);
    // bridge-nf-call-* are per network namespace (kernel ≥ 5.3): set inside the host namespace, as the agent does.
    await this.sh(`
ip netns add ${ns}
ip netns exec ${ns} sysctl -qw ${sysctlArgs({
      'net.ipv6.conf.default.addr_gen_mode': 1, 'net.ipv6.conf.all.addr_gen_mode': 1,
      'net.bridge.bridge-nf-call-iptables': 1, 'net.bridge.bridge-nf-call-ip6tables': 1, 'net.bridge.bridge-nf-call-arptables': 1,
    })}
ip -n ${ns} link set lo up
`);
    for (const br of opts.bridges ?? ['cloudbr0']) {
      await this.ensureSegment(br);
      await host.addBridge(br);
    }
    return host;
  }

  /** Adds a VM namespace with one veth per NIC: host side vnetN (MAC fe:…) on the bridge, guest side ethI. */
  async addVm(spec: VmSpec): Promise<Vm> {
    checkName('vm', spec.name);
    if (this.vms.has(spec.name)) throw new Error(`vm ${spec.name} exists`);
    const host = typeof spec.host === 'string' ? this.hosts.get(spec.host) : spec.host;
    if (!host) throw new Error(`unknown host ${String(spec.host)}`);
    if (spec.nics.length === 0) throw new Error('a VM needs at least one NIC');
    const ns = nsNames.vm(this.prefix, spec.name);
    const vm = new Vm(this, spec.name, host, ns);
    for (const [i, n] of spec.nics.entries()) {
      const bridge = n.bridge ?? 'cloudbr0';
      await this.ensureSegment(bridge);
      await host.addBridge(bridge);
      const mac = normMac(n.mac);
      const v4 = n.ipv4 ? splitCidr(n.ipv4, 24) : null;
      const v6 = n.ipv6 ? splitCidr(n.ipv6, 64) : null;
      vm.nics.push({
        index: i, netns: ns, iface: `eth${i}`, mac, bridge, tap: host.nextTap(), tapMac: tapMac(mac),
        plugged: true, ipv4: v4?.addr ?? null, ipv6: v6?.addr ?? null,
        ipv4Cidr: v4 ? `${v4.addr}/${v4.len}` : null, ipv6Cidr: v6 ? `${v6.addr}/${v6.len}` : null,
        secondary: (n.secondary ?? []).map((s) => s.split('/')[0]),
        linkLocal: linkLocalFromMac(mac), segment: this.segmentFor(bridge), dad: n.dad ?? false,
        gateway4: n.gateway4 ?? null, gateway6: n.gateway6 ?? null,
      });
    }
    this.vms.set(spec.name, vm);
    const secondaryCidrs = new Map(spec.nics.map((n, i) => [i, n.secondary ?? []]));
    await this.sh(`
ip netns add ${ns}
ip netns exec ${ns} sysctl -qw ${sysctlArgs({
      'net.ipv6.conf.default.accept_dad': 0, 'net.ipv6.conf.all.accept_dad': 0,
      'net.ipv6.conf.default.accept_ra': 0, 'net.ipv6.conf.all.accept_ra': 0,
      'net.ipv6.conf.default.router_solicitations': 0, 'net.ipv6.conf.all.router_solicitations': 0,
      'net.ipv4.ping_group_range': '0 2147483647',
    })}
ip -n ${ns} link set lo up
${vm.nics.map((nic) => this.plugScript(vm, nic, secondaryCidrs.get(nic.index))).join('\n')}
`);
    return vm;
  }

  /** Shell lines creating a NIC's veth pair and configuring both ends (used on add and recreateTap). */
  plugScript(vm: Vm, nic: VmNic, secondaryCidrs: string[] = nic.secondary): string {
    const h = vm.host.netns;
    const lines = [
      `ip -n ${h} link add ${nic.tap} address ${nic.tapMac} type veth peer name ${nic.iface} address ${nic.mac} netns ${vm.netns}`,
      `ip -n ${h} link set ${nic.tap} master ${nic.bridge} up`,
    ];
    if (nic.dad) lines.push(`ip netns exec ${vm.netns} sysctl -qw net.ipv6.conf.${nic.iface}.accept_dad=1`);
    lines.push(`ip -n ${vm.netns} link set ${nic.iface} up`);
    return [...lines, this.addressScript(vm, nic, true, true, secondaryCidrs)].join('\n');
  }

  /** Shell lines adding a NIC's addresses (primary v4/v6 when asked, the given secondaries) and routes. */
  addressScript(vm: Vm, nic: VmNic, v4: boolean, v6: boolean, secondaryCidrs: string[]): string {
    const ns = vm.netns;
    const o = this.outside.netns;
    const seg = nic.segment;
    const nodad = nic.dad ? '' : ' nodad';
    const lines: string[] = [];
    if (v4 && nic.ipv4Cidr) lines.push(`ip -n ${ns} addr add ${nic.ipv4Cidr} dev ${nic.iface}`);
    if (v6 && nic.ipv6Cidr) lines.push(`ip -n ${ns} addr add ${nic.ipv6Cidr} dev ${nic.iface}${nodad}`);
    for (const s of secondaryCidrs) {
      const six = s.includes(':');
      const c = s.includes('/') ? s : `${s}/${six ? 128 : 32}`;
      lines.push(`ip -n ${ns} addr add ${c} dev ${nic.iface}${six ? nodad : ''}`);
      lines.push(`ip -n ${o} ${six ? '-6 ' : ''}route replace ${six ? v6Network(c) : v4Network(c)} dev ${seg.gwIface}`);
    }
    // The outside namespace is every segment's gateway: on-link routes both ways, so VMs in any
    // subnet reach it (and, through it, each other) without DHCP or router advertisements.
    if (v4 && nic.ipv4Cidr) {
      lines.push(`ip -n ${o} route replace ${v4Network(nic.ipv4Cidr)} dev ${seg.gwIface}`);
      lines.push(nic.index === 0
        ? `ip -n ${ns} route replace default via ${nic.gateway4 ?? seg.gw4} dev ${nic.iface} onlink`
        : `ip -n ${ns} route replace ${seg.gw4}/32 dev ${nic.iface}`);
    }
    if (v6 && nic.ipv6Cidr) {
      lines.push(`ip -n ${o} -6 route replace ${v6Network(nic.ipv6Cidr)} dev ${seg.gwIface}`);
      lines.push(nic.index === 0
        ? `ip -n ${ns} -6 route replace default via ${nic.gateway6 ?? seg.gw6} dev ${nic.iface} onlink`
        : `ip -n ${ns} -6 route replace ${seg.gw6}/128 dev ${nic.iface}`);
    }
    return lines.join('\n');
  }

  /** A process in a namespace that destroy() ends. */
  background(netns: string, cmd: string, args: string[]): Background {
    const b = spawnIn(netns, cmd, args);
    this.procs.set(b, netns);
    void b.exited.then(() => this.procs.delete(b));
    return b;
  }

  async sh(script: string): Promise<void> {
    this.log(script.trim());
    await shIn(null, script, { timeoutMs: 30_000 });
  }

  async killNsProcesses(netns: string): Promise<void> {
    for (const [p, ns] of [...this.procs]) if (ns === netns) await p.stop(500);
    await killNsPids(netns);
  }

  /** Removes every namespace and link carrying this lab's prefix and ends its processes. Safe to call twice. */
  async destroy(): Promise<void> {
    this.destroyed = true;
    await Promise.all([...this.procs.keys()].map((p) => p.stop(500)));
    this.procs.clear();
    await destroyByPrefix(this.prefix);
    this.hosts.clear();
    this.vms.clear();
  }

  get isDestroyed(): boolean { return this.destroyed; }

  /** Plain JSON describing the topology, so another process can drive the same lab (`palisade lab`). */
  toState(): LabState {
    return {
      prefix: this.prefix,
      hostCounter: this.hostCounter,
      segments: this.segments.map((s) => s.bridge),
      outsideAddresses: [...this.outside.extraAddresses],
      hosts: [...this.hosts.values()].map((h) => ({
        name: h.name, index: h.index, netns: h.netns, bridges: [...h.bridges], tapCounter: h.tapCounter, uplinks: Object.fromEntries(h.uplinks),
      })),
      vms: [...this.vms.values()].map((v) => ({
        name: v.name, host: v.host.name, netns: v.netns,
        nics: v.nics.map(({ segment, ...n }) => ({ ...n, segment: segment.index })),
      })),
    };
  }

  /** Rebuilds the Lab object for namespaces that already exist (no kernel changes). */
  static restore(state: LabState, opts: Omit<LabOptions, 'prefix'> = {}): Lab {
    const lab = new Lab(checkPrefix(state.prefix), opts.log ?? (() => {}));
    for (const [i, br] of state.segments.entries()) if (i > 0) lab.segments.push(lab.makeSegment(i, br));
    lab.hostCounter = state.hostCounter;
    lab.outside.extraAddresses.push(...state.outsideAddresses);
    for (const h of state.hosts) {
      const host = new Host(lab, h.name, h.index, h.netns);
      host.tapCounter = h.tapCounter;
      for (const b of h.bridges) host.bridges.add(b);
      for (const [b, u] of Object.entries(h.uplinks)) host.uplinks.set(b, u);
      lab.hosts.set(h.name, host);
    }
    for (const v of state.vms) {
      const host = lab.hosts.get(v.host);
      if (!host) throw new Error(`lab state: VM ${v.name} on unknown host ${v.host}`);
      const vm = new Vm(lab, v.name, host, v.netns);
      for (const n of v.nics) vm.nics.push({ ...n, segment: lab.segment(n.segment) });
      lab.vms.set(v.name, vm);
    }
    return lab;
  }
}

export interface LabState {
  prefix: string;
  hostCounter: number;
  segments: string[];
  outsideAddresses: { cidr: string; segment: number }[];
  hosts: { name: string; index: number; netns: string; bridges: string[]; tapCounter: number; uplinks: Record<string, string> }[];
  vms: { name: string; host: string; netns: string; nics: (Omit<VmNic, 'segment'> & { segment: number })[] }[];
}

async function killNsPids(netns: string): Promise<void> {
  const r = await run('ip', ['netns', 'pids', netns], { allowFail: true });
  const pids = r.stdout.split(/\s+/).filter(Boolean).map(Number).filter((p) => p > 1 && p !== process.pid);
  for (const p of pids) { try { process.kill(p, 'SIGKILL'); } catch { /* already gone */ } }
}

/** Namespaces and root-namespace links whose name starts with `<prefix>-`. */
export async function listByPrefix(prefix: string): Promise<{ namespaces: string[]; links: string[] }> {
  checkPrefix(prefix);
  const ns = await run('ip', ['netns', 'list'], { allowFail: true });
  const namespaces = ns.stdout.split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(`${prefix}-`));
  const ln = await run('ip', ['-o', 'link', 'show'], { allowFail: true });
  const links = ln.stdout.split('\n').map((l) => l.split(': ')[1]?.split('@')[0] ?? '').filter((n) => n.startsWith(`${prefix}-`));
  return { namespaces, links };
}

/** Crash cleanup: ends processes inside, then deletes every namespace and root link named `<prefix>-…`. */
export async function destroyByPrefix(prefix: string): Promise<void> {
  const { namespaces, links } = await listByPrefix(prefix);
  // VMs first, then hosts, then the rest: each deletion also removes veth peers elsewhere.
  const order = (n: string) => (n.includes('-v-') ? 0 : n.includes('-h-') ? 1 : 2);
  namespaces.sort((a, b) => order(a) - order(b));
  for (const n of namespaces) await killNsPids(n);
  for (const n of namespaces) await run('ip', ['netns', 'del', n], { allowFail: true });
  for (const l of links) await run('ip', ['link', 'del', l], { allowFail: true });
  forgetOwner(prefix);
}

/** Removes every lab whose owner is gone (a killed test run, a stack whose state was deleted). */
export async function destroyStaleLabs(opts: { only?: string[] } = {}): Promise<string[]> {
  const gone: string[] = [];
  for (const o of listOwners()) {
    if (opts.only && !opts.only.includes(o.prefix)) continue;
    if (!isStale(o)) continue;
    await destroyByPrefix(o.prefix);
    gone.push(o.prefix);
  }
  return gone;
}

/** Creates a lab (fabric + outside). Call destroy() when done — in a finally / t.after. */
export async function createLab(opts: LabOptions = {}): Promise<Lab> {
  if (process.getuid && process.getuid() !== 0) throw new Error('the lab needs root (network namespaces)');
  let prefix = opts.prefix ? checkPrefix(opts.prefix) : randomPrefix();
  if (opts.prefix) {
    if ((await listByPrefix(prefix)).namespaces.length > 0) throw new Error(`namespaces named ${prefix}-… exist already (another lab?)`);
  } else {
    // Another lab (another test run) may be alive: never share a prefix with it.
    for (let i = 0; i < 10 && (await listByPrefix(prefix)).namespaces.length > 0; i++) prefix = randomPrefix();
  }
  recordOwner(prefix, opts.stateDir ? { stateDir: opts.stateDir } : {});
  const lab = new Lab(prefix, opts.log ?? (() => {}));
  try {
    await lab.init();
  } catch (e) {
    await lab.destroy();
    throw e;
  }
  return lab;
}
