// Lines of one kind logged one by one up to `max` per window, then only counted; the count is reported
// (onSkipped) when the next window starts. What anyone can cause many times a second (refused agent
// hellos, telemetry store failures in a database outage, API calls over a tenant's rate limit) cannot
// fill the log. Here, beside the model, because the API and the control plane both use it.

export class LogWindow {
  private since = -Infinity;
  private logged = 0;
  private unlogged = 0;

  constructor(private readonly max: number, private readonly windowMs: number, private readonly onSkipped: (count: number) => void) {}

  /** May this line be logged now? (False: it is counted instead.) */
  admit(): boolean {
    const now = Date.now();
    if (now - this.since >= this.windowMs) {
      if (this.unlogged) this.onSkipped(this.unlogged);
      this.since = now;
      this.logged = 0;
      this.unlogged = 0;
    }
    if (this.logged < this.max) { this.logged++; return true; }
    this.unlogged++;
    return false;
  }

  /** Report what the ended window did not log (if anything); true when nothing happened in the current window (may be forgotten). */
  settle(): boolean {
    if (Date.now() - this.since < this.windowMs) return false;
    if (this.unlogged) this.onSkipped(this.unlogged);
    this.unlogged = 0;
    return true;
  }
}
