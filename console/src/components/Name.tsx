// Text someone else chose (names, descriptions, hostnames, an agent's or the API's messages), isolated
// from the sentence around it: a right-to-left override or isolate in a name (U+202E, U+2067, …) then
// reorders only the name, never the words after it. Two forms, one rule:
// - <Name>: in markup, a <bdi>;
// - isolate(): in strings that cannot hold elements (aria-label, title, a select's option labels),
//   the text between FIRST STRONG ISOLATE (U+2068) and POP DIRECTIONAL ISOLATE (U+2069); plain ASCII
//   is left bare (it has no right-to-left letter or direction control, so cannot reorder a sentence
//   written left to right), so accessible names and copied text of ordinary names stay exactly the name.
// Both balance the text's own isolate controls first (balanced()): the browser isolates a <bdi> (or
// any `unicode-bidi: isolate`) by putting FSI/PDI around its text, so a stray PDI in a name would
// close that isolate early and let a following override reorder the rest of the sentence (seen in
// Chromium). The text is otherwise kept as it is: React escapes it, no markup is made from it.

export function Name({ children }: { children?: string | number | null }) {
  return <bdi>{typeof children === 'string' ? balanced(children) : children}</bdi>;
}

const FSI = '\u2068';
const PDI = '\u2069';
const ASCII = /^[\x00-\x7f]*$/;
const ISOLATE_INITIATORS = new Set(['\u2066', '\u2067', '\u2068']); // LRI, RLI, FSI

/**
 * `text` with its isolates balanced: an isolate opened first for each PDI that would close one it did
 * not open, and a PDI added for each isolate it leaves open (a PDI also ends any override or
 * embedding opened inside). Inside an isolate, such text can no longer end it or outlive it.
 */
export function balanced(text: string): string {
  if (ASCII.test(text)) return text;
  let open = 0;
  let strayCloses = 0;
  for (const ch of text) {
    if (ISOLATE_INITIATORS.has(ch)) open++;
    else if (ch === PDI) { if (open > 0) open--; else strayCloses++; }
  }
  return FSI.repeat(strayCloses) + text + PDI.repeat(open);
}

/** `text` for a plain string: balanced and between FSI and PDI (ASCII left as it is). */
export function isolate(text: string | number | undefined | null): string {
  const s = text === undefined || text === null ? '' : String(text);
  return ASCII.test(s) ? s : FSI + balanced(s) + PDI;
}
