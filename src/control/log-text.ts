// Text an agent sent, as it goes into the server's log lines. pino writes JSON, whose strings escape the
// C0 controls but not DEL, the C1 controls (U+0080–U+009F; U+009B is an 8-bit CSI that terminals act on),
// U+2028/U+2029 (line breaks to some log readers) or the bidi controls (U+200E/F, U+202A–E, U+2066–9: an
// override reorders the rest of the line in a viewer): an agent's ack error, drift text or conntrack error
// reached the log raw. Those characters are written as `\uXXXX` text instead. Only log lines change: what
// the server stores stays as the agent sent it (the console and the API escape it on output), and a
// hostname with a control character is refused outright (protocol/messages.ts HOSTNAME_RE).

const UNSAFE_IN_LOG = /[\u007f-\u009f\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

/** `text` with DEL, C1 controls, U+2028/U+2029 and bidi controls written as `\uXXXX` (for log lines only). */
export function logText(text: string): string {
  return text.replace(UNSAFE_IN_LOG, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
