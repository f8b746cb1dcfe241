// Pure argument handling for the CLI: splitting a shell line into words (straight AND typographic quotes,
// because people paste commands from web pages, where ”value″ or „value“ stand for "value"), and turning
// words into an API call description.

export class ArgError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ArgError';
  }
}

// Quote-like characters that web pages and word processors print in place of ASCII quotes, in whatever
// pairing a page used: “…”, ”…″ (a closing quote opening, a double prime closing), „…“, «…», »…«.
// Double-like ones always act as quotes (they practically never occur literally in a command). Single-like
// ones are also apostrophes (“Bob’s group”), so they only open a quote at the start of a word or right
// after `=`, and only close one when no letter or digit follows.
const DOUBLE_LIKE = new Set([
  '\u201C', '\u201D', '\u201E', '\u201F', //  “ ” „ ‟
  '\u2033', '\u2036',                     //  ″ ‶  (double prime, reversed double prime)
  '\u00AB', '\u00BB',                     //  « »
  '\u301D', '\u301E', '\u301F', '\uFF02', //  〝 〞 〟 ＂
]);
const SINGLE_LIKE = new Set([
  '\u2018', '\u2019', '\u201A', '\u201B', //  ‘ ’ ‚ ‛
  '\u2032', '\u2035',                     //  ′ ‵  (prime, reversed prime)
  '\u2039', '\u203A', '\uFF07',           //  ‹ › ＇
]);
const BLANK = /[\s\u00A0\u2007\u202F]/;                              // incl. no-break spaces from web pages
const WORD_CHAR = /[\p{L}\p{N}]/u;

const isBlank = (c: string | undefined) => c === undefined || BLANK.test(c);
/** A single-like quote closes unless a letter or digit follows it (then it is an apostrophe: Bob’s). */
const singleCloses = (next: string | undefined) => next === undefined || !WORD_CHAR.test(next);
export const isDoubleLike = (c: string) => c === '"' || DOUBLE_LIKE.has(c);
export const isSingleLike = (c: string) => c === "'" || SINGLE_LIKE.has(c);

type Quote = { kind: 'double' | 'single'; ascii: boolean; nested: boolean };

/**
 * Split one command line into words like a POSIX shell (without expansions): blanks separate words,
 * "…" and '…' group (backslash escapes inside "…" and outside quotes), and so do the typographic quotes
 * people paste, in any opening/closing pairing:
 * - a typographic double quote (“ ” „ ‟ ″ ‶ « » …) opens anywhere and any double-like quote closes it;
 * - a typographic single quote (‘ ’ ‚ ‛ ′ ‵ …) opens at the start of a word or after `=`, and a
 *   single-like quote closes it when no letter or digit follows (else it is an apostrophe: Bob’s);
 * - "…" may also end at a typographic double quote followed by a blank or a comma ("value″), unless
 *   that quote closes a typographic pair inside ("say “hi” now"); '…' may end at a typographic single one;
 * - an unmatched ASCII ' inside a word is an apostrophe (Bob's).
 * Should that reading leave a quote open, the line is read once more the strict POSIX way (ASCII quotes
 * close only with themselves) before it is refused.
 */
export function splitLine(line: string): string[] {
  try {
    return split(line, false);
  } catch (e) {
    if (!(e instanceof ArgError)) throw e;
    return split(line, true);
  }
}

function split(line: string, posix: boolean): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let q: Quote | null = null;
  const chars = Array.from(line);
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    const next = chars[i + 1];
    if (q === null) {
      if (isBlank(c)) {
        if (inWord) { words.push(cur); cur = ''; inWord = false; }
        continue;
      }
      const atWordStart = !inWord || cur.endsWith('=');
      inWord = true;
      if (c === '\\' && next !== undefined) { cur += chars[++i]; continue; }
      if (c === "'" && !posix && !atWordStart && !chars.slice(i + 1).includes("'")) { cur += c; continue; } // Bob's
      if (c === '"' || c === "'") { q = { kind: c === '"' ? 'double' : 'single', ascii: true, nested: false }; continue; }
      if (DOUBLE_LIKE.has(c)) { q = { kind: 'double', ascii: false, nested: false }; continue; }
      if (SINGLE_LIKE.has(c) && atWordStart) { q = { kind: 'single', ascii: false, nested: false }; continue; }
      cur += c;
      continue;
    }
    if (q.kind === 'double') {
      if (q.ascii && c === '\\' && (next === '"' || next === '\\')) { cur += chars[++i]; continue; }
      if (q.ascii && c === '"') { q = null; continue; }
      if (!isDoubleLike(c) || (q.ascii && posix)) { cur += c; continue; }
      if (!q.ascii) { q = null; continue; }
      // a typographic quote inside "…": part of a pair inside, or the end of a pasted "value″
      if (q.nested) { q.nested = false; cur += c; continue; }
      if (isBlank(next) || next === ',') { q = null; continue; }
      q.nested = true;
      cur += c;
    } else {
      if (q.ascii && c === "'") { q = null; continue; }
      if (isSingleLike(c) && !(q.ascii && posix) && singleCloses(next)) { q = null; continue; }
      cur += c;
    }
  }
  if (q !== null) throw new ArgError('unterminated quote in command line');
  if (inWord) words.push(cur);
  return words;
}

/**
 * Words that already went through a real shell (process.argv): ASCII quotes are gone, but typographic
 * quotes survive and may span several argv entries (`description=”Standard web rules”` arrives as three
 * words). Join such spans back (with one space: the shell kept no more) and drop the typographic quote
 * marks, in any opening/closing pairing; ASCII quotes still in argv were escaped on purpose and stay.
 */
export function normalizeArgv(argv: string[]): string[] {
  const out: string[] = [];
  let pending: string | null = null;      // text of a word inside an open typographic quote
  let open: 'double' | 'single' | null = null;
  for (const word of argv) {
    let cur: string = pending === null ? '' : pending + ' ';
    const chars = Array.from(word);
    for (let i = 0; i < chars.length; i++) {
      const c = chars[i]!;
      if (open === 'double') {
        if (DOUBLE_LIKE.has(c)) open = null; else cur += c;
        continue;
      }
      if (open === 'single') {
        if (SINGLE_LIKE.has(c) && singleCloses(chars[i + 1])) open = null; else cur += c;
        continue;
      }
      const atWordStart = i === 0 || chars[i - 1] === '=' && !cur.slice(0, -1).includes('=');
      if (DOUBLE_LIKE.has(c)) { open = 'double'; continue; }
      if (SINGLE_LIKE.has(c) && atWordStart) { open = 'single'; continue; }
      cur += c;
    }
    if (open) { pending = cur; } else { out.push(cur); pending = null; }
  }
  if (open) throw new ArgError('unterminated quote in command line');
  return out;
}

export type OutputFormat = 'json' | 'table' | 'text' | 'csv';
export const OUTPUT_FORMATS: OutputFormat[] = ['json', 'table', 'text', 'csv'];

export function parseOutputFormat(v: string | undefined): OutputFormat {
  const f = (v ?? '').toLowerCase();
  if ((OUTPUT_FORMATS as string[]).includes(f)) return f as OutputFormat;
  throw new ArgError(`unknown output format "${v ?? ''}" (use one of: ${OUTPUT_FORMATS.join(', ')})`);
}

export interface ParsedWords {
  /** words that are not key=value nor flags: verb, noun, builtin arguments */
  positional: string[];
  /** API parameters in the order given (later duplicates win) */
  params: Record<string, string>;
  /** `filter=a,b`: fields to keep in the output; not sent to the server */
  filter?: string[];
  async: boolean;
  output?: OutputFormat;
  profile?: string;
  help: boolean;
}

// A parameter name as CloudStack accepts it, including map entries `x[0].key`.
const PARAM_NAME = /^[A-Za-z_][A-Za-z0-9_]*(\[\d+\](\.[A-Za-z0-9_]+)?)?$/;

/** Split words into positional words, key=value parameters and CLI flags. */
export function parseWords(words: string[]): ParsedWords {
  const r: ParsedWords = { positional: [], params: {}, async: false, help: false };
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    const flagValue = (name: string): string => {
      const eq = w.indexOf('=');
      if (eq >= 0) return w.slice(eq + 1);
      const v = words[++i];
      if (v === undefined) throw new ArgError(`${name} needs a value`);
      return v;
    };
    // `--` pasted from web pages often became an en/em dash
    const flag = w.replace(/^[\u2013\u2014]/, '--');
    if (flag === '--async' || flag === '-a') { r.async = true; continue; }
    if (flag === '-h' || flag === '--help') { r.help = true; continue; }
    if (flag === '-o' || flag.startsWith('--output') && /^--output(=|$)/.test(flag)) {
      r.output = parseOutputFormat(flagValue('--output')); continue;
    }
    if (flag === '-p' || /^--profile(=|$)/.test(flag)) { r.profile = flagValue('--profile'); continue; }
    if (flag.startsWith('-') && flag.length > 1 && !flag.includes('=') && !/^-\d/.test(flag)) {
      throw new ArgError(`unknown option ${w}`);
    }
    const eq = w.indexOf('=');
    if (eq > 0 && PARAM_NAME.test(w.slice(0, eq))) {
      const key = w.slice(0, eq);
      const value = w.slice(eq + 1);
      if (key.toLowerCase() === 'filter') {
        r.filter = value.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean);
        continue;
      }
      delete r.params[key];      // keep the last occurrence, in its position
      r.params[key] = value;
      continue;
    }
    r.positional.push(w);
  }
  return r;
}

/** Normalise a list parameter value: `a, b ,c` → `a,b,c` (the wire form is comma-separated). */
export function normalizeList(value: string): string {
  let v = value.trim();
  if (v.startsWith('[') && v.endsWith(']')) v = v.slice(1, -1);
  return v.split(',').map((s) => s.trim()).filter((s) => s !== '').join(',');
}
