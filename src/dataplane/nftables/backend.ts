// The nftables backend: Palisade's two `palisade` tables (bridge + inet), one `nft` transaction per
// apply. Coexists with iptables-nft, libvirt, Docker and anyone else's tables: it never lists, flushes
// or touches a table but its own.
//
// apply() renders the whole host, diffs it against what it knows of its tables and writes only the
// difference, as one transaction (nothing at all when they match). What it knows is the kernel as read
// at the first apply (`nft -j list table`, ours only), then kept up to date by its own writes; so a
// small change never lists anything. observe() re-reads the tables, reports drift (by rule ids, chain
// hashes, set elements, and each rule's body against the kernel's form of what Palisade wrote, learned
// in a scratch namespace: canon.ts) and refreshes that view; the next apply repairs. A failed
// transaction changes nothing and forgets the view (the next apply re-reads).
// Listing costs nft ~0.1 ms per rule, so on a big host (more than FULL_READ_CHAINS VM chains) observe
// reads the whole bridge table (all L2 checks and port dispatch) and the inet table's entry chains
// every time, and the whole inet table (every VM's rules) only every few passes: a flushed or deleted
// table is still seen at once, a rule changed inside one VM's chain within a few passes.
// A very large first write (a cold start of thousands of VMs) is split into several transactions so
// the kernel's nftables lock is never held for long: first everything with the new VMs' ports closed
// (dropped), then their chains and the opening of their ports, a batch of VMs at a time.
import type { ApplyResult, Dataplane, DataplaneInput, DriftItem, KernelDropCount, KernelRuleCount, Observation, VmChainRef } from '../backend.js';
import { DataplaneError } from '../backend.js';
import { type Runner, createRunner } from '../exec.js';
import { LOG_REASON, planHost, type DropReason as PlanDropReason } from '../plan/index.js';
import { hasFlags } from '../nft-json.js';
import { NftCanon } from './canon.js';
import { type KState, bodyDrift, diffScript, drift, emptyState, expectedState, judgeable, parseTable, setDrift, teardownScript } from './kernel.js';
import { FAMILIES, N, type NFamily, TABLE, vmChains } from './names.js';
import { type NftProgram, parseComment } from './program.js';
import { type Rendered, render, renderPlan } from './render.js';
import { NftSession } from './session.js';

export interface NftablesOptions {
  runner?: Runner;
  netns?: string | null;
  /** A first write larger than this many script lines is split into several transactions (default 8,000). */
  chunkLines?: number;
}

/** Hits of one user rule of one VM (summed over its nft rules: one per peer CIDR or set). */
export interface RuleCounter { instance: string; ruleId: string; direction: 'ingress' | 'egress'; family: 4 | 6; packets: number; bytes: number }

export class NftablesDataplane implements Dataplane {
  readonly name = 'nftables';
  readonly runner: Runner;
  private known: KState | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly session: NftSession;
  private readonly chunkLines: number;
  /** The last script written (for people and tests). */
  lastScript = '';
  private passes = 0;
  private readonly canon: NftCanon;

  constructor(opts: NftablesOptions = {}) {
    this.runner = opts.runner ?? createRunner({ netns: opts.netns ?? null });
    this.canon = new NftCanon(this.runner);
    this.session = new NftSession(this.runner);
    this.chunkLines = opts.chunkLines ?? 8_000;
  }

  private serial<T>(f: () => Promise<T>): Promise<T> {
    const run = this.queue.then(f, f);
    this.queue = run.catch(() => undefined);
    return run;
  }

  render(input: DataplaneInput): Rendered { return render(input); }

  /** Read Palisade's two tables (the slow path: first apply, observe). */
  async read(): Promise<KState> {
    const k = emptyState();
    const outs = await Promise.all(FAMILIES.map((f) => this.runner.run('nft', ['-j', 'list', 'table', f, TABLE])));
    FAMILIES.forEach((f, i) => {
      const r = outs[i];
      if (r.code !== 0) {
        if (/No such file or directory/.test(r.stderr)) return;
        throw new DataplaneError(`nft list table ${f} ${TABLE}`, r.stderr || `exit ${r.code}`);
      }
      parseTable(f, r.stdout, k);
    });
    return k;
  }

  /** Read the bridge table and the inet table's entry chains only (big hosts, between full reads). */
  private async readPartial(): Promise<{ kernel: KState; read: Set<string> }> {
    const k = emptyState();
    const read = new Set<string>();
    const jobs: [NFamily, string[], string[]][] = [
      ['bridge', ['list', 'table', 'bridge', TABLE], []],
      ...[N.bf, N.forward, N.toPort].map((c): [NFamily, string[], string[]] => ['inet', ['list', 'chain', 'inet', TABLE, c], [`inet/${c}`]]),
    ];
    // and every table's flags (a dormant inet table is not seen by listing its chains)
    const [outs, tables] = await Promise.all([Promise.all(jobs.map(([, args]) => this.runner.run('nft', ['-j', ...args]))), this.runner.run('nft', ['-j', 'list', 'tables'])]);
    if (tables.code === 0) {
      for (const item of (JSON.parse(tables.stdout) as { nftables: Record<string, any>[] }).nftables) {
        const t = item.table;
        if (t && t.name === TABLE && FAMILIES.includes(t.family) && hasFlags(t)) (k.flagged ??= new Set()).add(t.family as NFamily);
      }
    }
    jobs.forEach(([family, args, keys], i) => {
      const r = outs[i];
      for (const kk of keys) read.add(kk);
      if (family === 'bridge') read.add('bridge/*');
      if (r.code !== 0) {
        if (/No such file or directory/.test(r.stderr)) return;
        throw new DataplaneError(`nft ${args.join(' ')}`, r.stderr || `exit ${r.code}`);
      }
      parseTable(family, r.stdout, k);
      if (family === 'inet') k.tables.add('inet');
    });
    return { kernel: k, read };
  }

  /** Forget the cached view of the tables (the next apply reads them). */
  invalidate(): void { this.known = null; }

  apply(input: DataplaneInput): Promise<ApplyResult> { return this.serial(() => this.applyNow(input)); }

  private async applyNow(input: DataplaneInput): Promise<ApplyResult> {
    // the first read (cold agent) runs while the host is planned and rendered
    const reading = this.known ? null : this.read();
    reading?.catch(() => undefined);
    const plan = planHost(input);
    const rendered = renderPlan(plan);
    const vms: ApplyResult['vms'] = {};
    for (const vm of input.state.vms) {
      const err = rendered.vmErrors[vm.vmId];
      vms[vm.vmId] = err ? { ok: false, error: err } : { ok: true };
    }
    const steps: ApplyResult['steps'] = [];
    let kernel = this.known ?? (await reading!);
    const script = diffScript(rendered.program, kernel);
    if (!script) { this.known = kernel; return { changed: false, vms, steps }; }
    const lines = script.split('\n').length;
    if (lines > this.chunkLines && rendered.programmed.length > 1) {
      // Open the VMs whose ports the kernel already opens; the others a batch at a time.
      const open = new Set(rendered.programmed.filter((id) => isOpen(kernel, plan.vms.find((v) => v.vmId === id)!.ports.map((p) => p.device))));
      const rest = rendered.programmed.filter((id) => !open.has(id));
      const per = Math.max(1, Math.floor(rest.length * this.chunkLines / lines));
      for (let i = 0; ; i += per) {
        const partial = renderPlan(plan, { open });
        kernel = await this.write(partial.program, kernel, steps, `nft (${open.size}/${rendered.programmed.length} VMs)`);
        if (i >= rest.length) break;
        for (const id of rest.slice(i, i + per)) open.add(id);
      }
      if (open.size < rendered.programmed.length) kernel = await this.write(rendered.program, kernel, steps, 'nft');
    } else {
      kernel = await this.write(rendered.program, kernel, steps, 'nft', script);
    }
    return { changed: true, vms, steps };
  }

  private async write(program: NftProgram, kernel: KState, steps: ApplyResult['steps'], step: string, script = diffScript(program, kernel)): Promise<KState> {
    if (!script) return kernel;
    const t0 = performance.now();
    this.lastScript = script;
    try {
      await this.session.run(step, script);
    } catch (e) {
      this.known = null; // re-read before the next attempt
      if (e instanceof DataplaneError) throw new DataplaneError(e.step, `${e.stderr.trim()}`.slice(0, 4000));
      throw e;
    }
    steps.push({ tool: step, ms: +(performance.now() - t0).toFixed(2) });
    this.known = expectedState(program);
    return this.known;
  }

  observe(input: DataplaneInput, opts: { full?: boolean } = {}): Promise<Observation> {
    return this.serial(async () => {
      const program = render(input).program;
      const vmChains = program.chains.filter((c) => c.family === 'inet').length;
      const every = Math.ceil(vmChains / FULL_READ_CHAINS);
      if (!opts.full && every > 1 && this.known && this.passes++ % every !== 0) {
        const { kernel, read } = await this.readPartial();
        const found = drift(program, kernel, read); // before forged() marks chains for rewrite
        const bodies = await this.forged(program, kernel);
        const items = [...found, ...bodies.drift];
        // what was read replaces what we knew of it; the rest stays as known
        if (items.length) this.known = mergeRead(this.known, kernel, read);
        return { drift: items, warnings: bodies.warnings };
      }
      const kernel = await this.read();
      this.known = kernel; // the next apply repairs from what is really there
      const found = drift(program, kernel); // before forged() marks chains for rewrite
      const bodies = await this.forged(program, kernel);
      return { drift: [...found, ...bodies.drift], warnings: bodies.warnings };
    });
  }

  /**
   * Rules whose body is not what Palisade wrote (their chains marked for rewrite in `kernel`). When the
   * written form cannot be learned, the other drift is still judged and repaired; this is a warning.
   */
  private async forged(program: NftProgram, kernel: KState): Promise<{ drift: DriftItem[]; warnings: string[] }> {
    let warnings: string[];
    try {
      warnings = await this.canon.learn(program, judgeable(program, kernel));
    } catch (e) {
      return { drift: [], warnings: [`rule bodies not checked: ${e instanceof Error ? e.message : String(e)}`] };
    }
    return { drift: [...bodyDrift(program, kernel, this.canon.written, this.canon.forget), ...setDrift(program, kernel, this.canon.setHeader)], warnings };
  }

  teardown(): Promise<void> {
    return this.serial(async () => {
      this.known = null;
      await this.session.run('nft (teardown)', teardownScript());
      this.known = emptyState();
    });
  }

  /**
   * Counters of every user rule (per VM and rule id). The inet table holds the VMs' rule chains and
   * little else, so this reads that one table (never the bridge table, never anyone else's).
   */
  ruleCounters(): Promise<RuleCounter[]> {
    return this.serial(async () => {
      const r = await this.runner.run('nft', ['-j', 'list', 'table', 'inet', TABLE]);
      if (r.code !== 0) {
        if (/No such file or directory/.test(r.stderr)) return [];
        throw new DataplaneError('nft list table inet', r.stderr);
      }
      return parseRuleCounters(r.stdout);
    });
  }

  /**
   * Per-rule hits: the counter of every user rule of these VMs, one entry per nft rule, its slot the
   * rule's handle (a rule re-created by a write gets a new handle). One `nft -j -t list table inet`
   * (the VM chains' table, never anyone else's; -t: without set contents, which can be large); not queued behind applies — a listing is a consistent
   * dump even while another process commits.
   */
  async ruleCounts(vms: readonly VmChainRef[]): Promise<KernelRuleCount[]> {
    if (!vms.length) return [];
    const r = await this.runner.run('nft', ['-j', '-t', 'list', 'table', 'inet', TABLE]);
    if (r.code !== 0) {
      if (/No such file or directory/.test(r.stderr)) return [];
      throw new DataplaneError('nft list table inet', r.stderr);
    }
    return parseRuleCounts(r.stdout, vms);
  }

  /**
   * Drops per reason: the counter of every rule whose comment names a drop reason (`!<reason>`) with
   * an API reason, in both of Palisade's tables (L2 drops are in `bridge`, default denies in `inet`).
   * Read-only, without set contents.
   */
  async dropCounts(): Promise<KernelDropCount[]> {
    const out: KernelDropCount[] = [];
    for (const family of ['bridge', 'inet'] as const) {
      const r = await this.runner.run('nft', ['-j', '-t', 'list', 'table', family, TABLE]);
      if (r.code !== 0) {
        if (/No such file or directory/.test(r.stderr)) continue;
        throw new DataplaneError(`nft list table ${family}`, r.stderr);
      }
      out.push(...parseDropCounts(r.stdout));
    }
    return out;
  }

  /** Ends the long-lived `nft` process (also ends by itself when idle). */
  async close(): Promise<void> { this.session.stop(); }
}

/** Does the kernel already open every one of these ports (send their frames to a bridge's VM chain)? */
function isOpen(k: KState, devices: string[]): boolean {
  const m = k.sets.get(`bridge/${N.inPorts}`);
  return !!m && devices.every((d) => [...m.elements].some((e) => e.startsWith(`${d} : goto vmin-`)));
}

/** Per (VM, rule id, direction, family): the sum of the inline counters of its rules. */
export function parseRuleCounters(json: string): RuleCounter[] {
  const sums = new Map<string, RuleCounter>();
  for (const item of (JSON.parse(json) as { nftables: Record<string, any>[] }).nftables) {
    const rule = item.rule;
    if (!rule || rule.table !== TABLE) continue;
    const vm = /^(?:from|to)-(.+)$/.exec(rule.chain);
    const id = /^(.+)\.([ie])([46])\.[cs]\d+$/.exec(parseComment(rule.comment)?.id ?? '');
    const counter = (rule.expr as Record<string, any>[]).find((e) => e.counter && typeof e.counter === 'object');
    if (!vm || !id || !counter) continue;
    const key = `${vm[1]} ${id[1]} ${id[2]}${id[3]}`;
    const c = sums.get(key) ?? { instance: vm[1], ruleId: id[1], direction: id[2] === 'i' ? 'ingress' : 'egress', family: Number(id[3]) as 4 | 6, packets: 0, bytes: 0 };
    c.packets += Number(counter.counter.packets);
    c.bytes += Number(counter.counter.bytes);
    sums.set(key, c);
  }
  return [...sums.values()];
}

/** Every user rule's counter in `nft -j list table inet palisade` output, for the chains of `vms`. */
export function parseRuleCounts(json: string, vms: readonly VmChainRef[]): KernelRuleCount[] {
  const vmOfChain = new Map<string, string>();
  for (const vm of vms) { const c = vmChains(vm.instanceName); vmOfChain.set(c.from, vm.vmId); vmOfChain.set(c.to, vm.vmId); }
  const out: KernelRuleCount[] = [];
  for (const item of (JSON.parse(json) as { nftables: Record<string, any>[] }).nftables) {
    const rule = item.rule;
    if (!rule || rule.table !== TABLE || rule.family !== 'inet') continue;
    const vmId = vmOfChain.get(rule.chain);
    const id = /^(.+)\.[ie][46]\.[cs]\d+$/.exec(parseComment(rule.comment)?.id ?? '');
    const counter = (rule.expr as Record<string, any>[] | undefined)?.find((e) => e.counter && typeof e.counter === 'object');
    const packets = Number(counter?.counter.packets);
    if (!vmId || !id || !Number.isSafeInteger(packets) || packets < 0) continue;
    out.push({ vmId, ruleId: id[1], slot: `${rule.chain}/${String(rule.handle)}`, packets });
  }
  return out;
}

/** The counter of every drop rule with an API reason in `nft -j list table … palisade` output. */
export function parseDropCounts(json: string): KernelDropCount[] {
  const out: KernelDropCount[] = [];
  for (const item of (JSON.parse(json) as { nftables: Record<string, any>[] }).nftables) {
    const rule = item.rule;
    if (!rule || rule.table !== TABLE) continue;
    const planReason = parseComment(rule.comment)?.reason;
    const reason = planReason && Object.hasOwn(LOG_REASON, planReason) ? LOG_REASON[planReason as PlanDropReason] : null;
    const counter = (rule.expr as Record<string, any>[] | undefined)?.find((e) => e.counter && typeof e.counter === 'object');
    const packets = Number(counter?.counter.packets);
    if (!reason || !Number.isSafeInteger(packets) || packets < 0) continue;
    out.push({ reason, slot: `${rule.family}/${rule.chain}/${String(rule.handle)}`, packets });
  }
  return out;
}

/** Above this many inet chains, observe reads every VM's rules only every few passes. */
const FULL_READ_CHAINS = 600;

/** `known` with the parts in `read` replaced by what the kernel holds. */
function mergeRead(known: KState, kernel: KState, read: Set<string>): KState {
  const out: KState = { tables: new Set(known.tables), chains: new Map(known.chains), sets: new Map(known.sets), counters: new Set(known.counters) };
  const covered = (key: string) => read.has(key) || (read.has('bridge/*') && key.startsWith('bridge/'));
  for (const key of [...out.chains.keys()]) if (covered(key)) out.chains.delete(key);
  for (const key of [...out.sets.keys()]) if (covered(key)) out.sets.delete(key);
  for (const [key, c] of kernel.chains) out.chains.set(key, c);
  for (const [key, s] of kernel.sets) out.sets.set(key, s);
  out.flagged = new Set(kernel.flagged ?? []); // read for both tables (`nft list tables`)
  if (!kernel.tables.has('bridge')) out.tables.delete('bridge');
  if (!kernel.tables.has('inet')) out.tables.delete('inet');
  return out;
}

export function createNftablesDataplane(opts: NftablesOptions = {}): NftablesDataplane {
  return new NftablesDataplane(opts);
}
