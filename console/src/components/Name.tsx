// Text someone else chose (names, descriptions, hostnames, an agent's or the API's messages), isolated
// from the sentence around it: a right-to-left override or isolate in a name (U+202E, U+2067, …) then
// reorders only the name, never the words after it. Two forms, one rule:
// - <Name>: in markup, a <bdi>;
// - isolate(): in strings that cannot hold elements (aria-label, title, a select's option labels),
//   the text between FIRST STRONG ISOLATE (U+2068) and POP DIRECTIONAL ISOLATE (U+2069); plain ASCII
//   is left bare (it has no right-to-left letter or direction control, so cannot reorder a sentence
//   written left to right), so accessible names and copied text of ordinary names stay exactly the name.
// - <Sentence>: a sentence the server wrote around such text (an API error, an event description):
//   the console cannot tell where the name in it begins and ends, so it cannot isolate it; instead
//   every direction control in it is shown as a visible mark (U+202E) and acts on nothing, and the
//   sentence as a whole is isolated. Right-to-left letters still read right to left, as they should.
// - <DomainPath> / isolatePath(): a domain path (ROOT/parent/child) is names joined by '/', which a
//   domain name cannot hold: each name is isolated on its own, so an override in one cannot reorder
//   the names after it.
// Both <Name> and isolate() balance the text's own isolate controls first (balanced()): the browser isolates a <bdi> (or
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

/** Embeddings, overrides, isolates, their ends, and the direction marks (LRM, RLM, ALM). */
const DIRECTION_CONTROL = /([\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069])/;

const codePoint = (ch: string) => `U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;

/** A sentence the server wrote, with others' text inside: its direction controls shown, not obeyed. */
export function Sentence({ children }: { children?: string | null }) {
  const text = children ?? '';
  if (!DIRECTION_CONTROL.test(text)) return <bdi>{text}</bdi>;
  // split() with a capturing group: the controls at the odd places
  const parts = text.split(DIRECTION_CONTROL);
  return (
    <bdi>
      {parts.map((part, i) => (i % 2 === 1
        ? <abbr key={i} className="direction-control" title={`direction control ${codePoint(part)}, not applied`}>{codePoint(part)}</abbr>
        : part))}
    </bdi>
  );
}

/** A domain path with each of its names isolated (names cannot contain '/'). */
export function DomainPath({ children }: { children?: string | null }) {
  const path = children ?? '';
  if (ASCII.test(path)) return <bdi>{path}</bdi>;
  return <bdi>{path.split('/').map((name, i) => <span key={i}>{i ? '/' : ''}<Name>{name}</Name></span>)}</bdi>;
}

/** isolate() for a domain path: each name in it isolated, then the whole. */
export function isolatePath(path: string | undefined | null): string {
  const s = path ?? '';
  return ASCII.test(s) ? s : FSI + s.split('/').map(isolate).join('/') + PDI;
}
