// A budget of server time (a token bucket in milliseconds): refilled at `perSecondMs` per second up to
// `burstMs`, charged with what work took. Who holds one waits (or is made to wait) while it is in debt:
// an agent connection's frame handling (sessions.ts), a host's telemetry ingestion (telemetry.ts).

export class TimeBudget {
  private leftMs: number;
  private at: number;

  /** `now`: a clock in ms (tests may pass their own). */
  constructor(private readonly perSecondMs: number, private readonly burstMs: number, private readonly now: () => number = () => performance.now()) {
    this.leftMs = burstMs;
    this.at = now();
  }

  /** Charge `spentMs` (0: only refill); returns how long until the debt is paid back (0: not in debt). */
  charge(spentMs = 0): number {
    const now = this.now();
    this.leftMs = Math.min(this.burstMs, this.leftMs + (now - this.at) / 1000 * this.perSecondMs) - spentMs;
    this.at = now;
    return this.leftMs >= 0 ? 0 : Math.ceil(-this.leftMs / this.perSecondMs * 1000);
  }

  /** Refilled to its burst (as a new budget would be). */
  full(): boolean {
    this.charge();
    return this.leftMs >= this.burstMs;
  }
}
