// Text an agent sent, as it goes into the server's log lines. pino writes JSON, whose strings escape the
// C0 controls but not DEL, the C1 controls (U+0080–U+009F; U+009B is an 8-bit CSI that terminals act on)
// or U+2028/U+2029 (line breaks to some log readers): an agent's ack error, drift text or conntrack error
// reached the log raw. Those characters are written as `\uXXXX` text instead. Only log lines change: what
// the server stores stays as the agent sent it (the console and the API escape it on output), and a
// hostname with a control character is refused outright (protocol/messages.ts HOSTNAME_RE).

const UNSAFE_IN_LOG = /[\u007f-\u009f\u2028\u2029]/g;

/** `text` with DEL, C1 controls and U+2028/U+2029 written as `\uXXXX` (for log lines only). */
export function logText(text: string): string {
  return text.replace(UNSAFE_IN_LOG, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
