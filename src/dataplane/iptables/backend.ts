// The iptables backend: iptables + ip6tables + ipset + ebtables, one restore transaction per tool.
//
// apply() renders the whole host, diffs it against what it knows of the kernel and writes only the
// difference (nothing at all when they match). What it knows is the kernel as read at the first apply
// (so a restarted agent does not rewrite a correct host), then kept up to date by its own writes;
// observe() re-reads the kernel, reports drift and refreshes that view, so the apply after an observe
// repairs whatever someone else changed, a rule replaced in place under its own `pal:` comment
// included (its saved line against the saved form of what Palisade writes: canon.ts). The agent
// should therefore observe periodically (DESIGN §4) and apply when drift is reported. A failed step
// forgets the view (the next apply re-reads).
import type { ApplyResult, Dataplane, DataplaneInput, KernelDropCount, KernelRuleCount, Observation, VmChainRef } from '../backend.js';
import { DataplaneError } from '../backend.js';
import { type Runner, createRunner, must } from '../exec.js';
import { parseDropCounts, parseRuleCounts } from './counters.js';
import { IptCanon } from './canon.js';
import { type KState, bodyDrift, drift, expectedState, judgeable, gcPlan, hasGarbage, liveCounters, parseEbSave, parseIpsetSave, parseIptSave, plan, planIsEmpty, withoutGarbage } from './kernel.js';
import { type Rendered, render } from './render.js';
import type { Program } from './program.js';

export interface IptablesOptions {
  runner?: Runner; netns?: string | null;
  /** Quiet time after the last write before shadowed old rules are deleted (ms; default 1000). */
  gcDelayMs?: number;
}

/** At most this long between the first shadowed rules and their removal, however busy. */
const GC_MAX_DELAY_MS = 10_000;

const EMPTY_PROGRAM: Program = { v4: { chains: [], hooks: [] }, v6: { chains: [], hooks: [] }, sets: [], eb: { chains: [], hooks: [] } };

export class IptablesDataplane implements Dataplane {
  readonly name = 'iptables';
  readonly runner: Runner;
  /** What the kernel holds as far as we know (after our last write or read); null = read it first. */
  private known: KState | null = null;
  /** apply/observe/teardown run one at a time (they share `known` and the kernel). */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly gcDelayMs: number;
  private gcTimer: NodeJS.Timeout | null = null;
  private gcDue = 0;
  /** The program last written (or found in place): what garbage collection rewrites chains from. */
  private lastProgram: Program | null = null;

  private serial<T>(f: () => Promise<T>): Promise<T> {
    const run = this.queue.then(f, f);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private readonly canon: IptCanon;

  constructor(opts: IptablesOptions = {}) {
    this.runner = opts.runner ?? createRunner({ netns: opts.netns ?? null });
    this.canon = new IptCanon(this.runner);
    this.gcDelayMs = opts.gcDelayMs ?? 1000;
  }

  render(input: DataplaneInput): Rendered { return render(input); }

  /** Read Palisade's part of the kernel (four tools; the slow path, used on start, by observe and teardown). */
  async read(): Promise<KState> {
    const [v4, v6, sets, eb] = await Promise.all([
      must(this.runner, 'iptables-save', 'iptables-save', []),
      must(this.runner, 'ip6tables-save', 'ip6tables-save', []),
      must(this.runner, 'ipset save', 'ipset', ['save']),
      must(this.runner, 'ebtables-save', 'ebtables-save', []),
    ]);
    return { ipt: { 4: parseIptSave(v4), 6: parseIptSave(v6) }, sets: parseIpsetSave(sets), eb: parseEbSave(eb) };
  }

  /** Forget the cached kernel view (the next apply reads the kernel). */
  invalidate(): void { this.known = null; }

  apply(input: DataplaneInput): Promise<ApplyResult> { return this.serial(() => this.applyNow(input)); }

  private async applyNow(input: DataplaneInput): Promise<ApplyResult> {
    const rendered = render(input);
    const vms: ApplyResult['vms'] = {};
    for (const vm of input.state.vms) {
      const err = rendered.vmErrors[vm.vmId];
      vms[vm.vmId] = err ? { ok: false, error: err } : { ok: true };
    }
    const { changed, steps } = await this.write(rendered.program);
    return { changed, vms, steps };
  }

  private async write(program: Program): Promise<{ changed: boolean; steps: ApplyResult['steps'] }> {
    const steps: ApplyResult['steps'] = [];
    const kernel = this.known ?? (await this.read());
    const pl = plan(program, kernel);
    if (planIsEmpty(pl)) { this.known = kernel; this.lastProgram = program; this.scheduleGc(); return { changed: false, steps }; }
    const step = async (name: string, tool: string, args: string[], text: string) => {
      if (!text) return;
      const t0 = performance.now();
      try {
        await must(this.runner, name, tool, args, text);
      } catch (e) {
        this.known = null; // partially written: re-read before the next attempt
        if (e instanceof DataplaneError) throw new DataplaneError(e.step, `${e.stderr.trim()}\n--- input ---\n${excerpt(text, e.stderr)}`);
        throw e;
      }
      steps.push({ tool: name, ms: +(performance.now() - t0).toFixed(2) });
    };
    // Sets first (rules reference them), ebtables (MAC/ARP pins) before the IP chains that open traffic,
    // and set destruction last (after the rules that referenced them are gone).
    await step('ipset restore', 'ipset', ['restore'], pl.ipsetPre);
    await step('ebtables-restore', 'ebtables-restore', ['--noflush'], pl.ebtables);
    await step('iptables-restore', 'iptables-restore', ['--noflush'], pl.iptables[4]);
    await step('ip6tables-restore', 'ip6tables-restore', ['--noflush'], pl.iptables[6]);
    await step('ipset destroy', 'ipset', ['restore'], pl.ipsetPost);
    this.known = expectedState(program, pl.shadowed);
    this.lastProgram = program;
    this.scheduleGc();
    return { changed: true, steps };
  }

  /** Debounced removal of rules shadowed by a rewrite (off the change's critical path). */
  private scheduleGc(): void {
    if (!this.known || !hasGarbage(this.known)) return;
    const now = Date.now();
    if (!this.gcTimer) this.gcDue = now + GC_MAX_DELAY_MS;
    else clearTimeout(this.gcTimer);
    this.gcTimer = setTimeout(() => {
      this.gcTimer = null;
      void this.collectGarbage().catch(() => { /* the next apply or observe re-reads the kernel */ });
    }, Math.max(0, Math.min(this.gcDelayMs, this.gcDue - now)));
    this.gcTimer.unref();
  }

  /** Delete shadowed rules now (normally run by a timer after writes). */
  collectGarbage(): Promise<void> {
    return this.serial(async () => {
      if (!this.known || !this.lastProgram || !hasGarbage(this.known)) return;
      const planned = gcPlan(this.known, this.lastProgram);
      try {
        // The live rules' counters go into the rewritten chains (per-rule hits): read just before, so
        // only what they count in the few ms until the restore is lost.
        const [s4, s6] = await Promise.all([
          planned.texts[4] ? must(this.runner, 'iptables-save -c', 'iptables-save', ['-c']) : '',
          planned.texts[6] ? must(this.runner, 'ip6tables-save -c', 'ip6tables-save', ['-c']) : '',
        ]);
        const gc = gcPlan(this.known, this.lastProgram, { 4: liveCounters(s4), 6: liveCounters(s6) });
        if (gc.texts[4]) await must(this.runner, 'iptables-restore (garbage)', 'iptables-restore', ['--noflush', '--counters'], gc.texts[4]);
        if (gc.texts[6]) await must(this.runner, 'ip6tables-restore (garbage)', 'ip6tables-restore', ['--noflush', '--counters'], gc.texts[6]);
        this.known = withoutGarbage(this.known, gc.done);
      } catch (e) {
        this.known = null;
        throw e;
      }
    });
  }

  observe(input: DataplaneInput): Promise<Observation> {
    return this.serial(async () => {
      const kernel = await this.read();
      this.known = kernel; // the next apply repairs from what is really there
      this.scheduleGc();
      const program = render(input).program;
      const items = drift(program, kernel);
      let warnings: string[];
      try {
        warnings = await this.canon.learn(program, judgeable(program, kernel));
      } catch (e) {
        // the other drift is still judged and repaired
        return { drift: items, warnings: [`rule bodies not checked: ${e instanceof Error ? e.message : String(e)}`] };
      }
      return { drift: [...items, ...bodyDrift(program, kernel, this.canon)], ...(warnings.length ? { warnings } : {}) };
    });
  }

  /**
   * Per-rule hits: the counter of every user rule of these VMs (`iptables-save -c -t filter`, both
   * families; see counters.ts for how a re-created rule is told apart). Not queued behind applies:
   * a save is a consistent snapshot of the table.
   */
  async ruleCounts(vms: readonly VmChainRef[]): Promise<KernelRuleCount[]> {
    if (!vms.length) return [];
    const [v4, v6] = await Promise.all([
      must(this.runner, 'iptables-save -c', 'iptables-save', ['-c', '-t', 'filter']),
      must(this.runner, 'ip6tables-save -c', 'ip6tables-save', ['-c', '-t', 'filter']),
    ]);
    return [...parseRuleCounts(4, v4, vms), ...parseRuleCounts(6, v6, vms)];
  }

  /** Drops per reason: the final DROP of each drop-log chain (counters.ts parseDropCounts), all three tools. */
  async dropCounts(): Promise<KernelDropCount[]> {
    const tools = [['iptables-save', ['-c', '-t', 'filter']], ['ip6tables-save', ['-c', '-t', 'filter']], ['ebtables-save', ['-c']]] as const;
    const saves = await Promise.all(tools.map(([tool, args]) => must(this.runner, `${tool} -c`, tool, [...args])));
    return saves.flatMap((save, i) => parseDropCounts(tools[i][0], save));
  }

  /** Stops the garbage-collection timer (the rules stay). */
  async close(): Promise<void> {
    if (this.gcTimer) { clearTimeout(this.gcTimer); this.gcTimer = null; }
  }

  teardown(): Promise<void> {
    if (this.gcTimer) { clearTimeout(this.gcTimer); this.gcTimer = null; }
    return this.serial(async () => {
      this.known = null;
      this.lastProgram = null;
      // Not render(empty input): that still holds the host-wide fail-closed baseline.
      await this.write(EMPTY_PROGRAM);
    });
  }
}

/** The restore input around the line a tool complained about (restore tools name the line number). */
function excerpt(text: string, stderr: string): string {
  const lines = text.split('\n');
  const m = /line:? (\d+)/i.exec(stderr);
  if (!m) return lines.slice(0, 20).join('\n');
  const n = Number(m[1]);
  return lines.slice(Math.max(0, n - 3), n + 2).map((l, i) => `${Math.max(1, n - 2) + i}: ${l}`).join('\n');
}

export function createIptablesDataplane(opts: IptablesOptions = {}): IptablesDataplane {
  return new IptablesDataplane(opts);
}
