// Pure argument handling for the CLI: splitting a shell line into words (straight AND typographic quotes,
// because people paste commands from web pages), and turning words into an API call description.

export class ArgError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ArgError';
  }
}

// Typographic quotes. Double ones always act as quotes (they practically never occur literally in a
// command). Single ones are also apostrophes (“Bob’s group”), so they only open a quote at the start of a
// word or right after `=`, and only close when followed by a blank or the end.
const DQ_OPEN = new Set(['\u201C', '\u201D', '\u201E', '\u00AB']);   // “ ” „ «
const DQ_CLOSE = new Set(['\u201C', '\u201D', '\u00BB']);            // “ ” »
const SQ_OPEN = new Set(['\u2018', '\u2019', '\u201A']);             // ‘ ’ ‚
const SQ_CLOSE = new Set(['\u2018', '\u2019']);                     // ‘ ’
const BLANK = /[\s\u00A0\u2007\u202F]/;                              // incl. no-break spaces from web pages

const isBlank = (c: string | undefined) => c === undefined || BLANK.test(c);

type QuoteState = null | '"' | "'" | 'dq' | 'sq';

/**
 * Split one command line into words like a POSIX shell (without expansions): blanks separate words,
 * "…" and '…' group (backslash escapes inside "…" and outside quotes), typographic quotes group too.
 */
export function splitLine(line: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let q: QuoteState = null;
  const chars = Array.from(line);
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i];
    const atWordStart = !inWord || cur.endsWith('=') && !q;
    if (q === null) {
      if (isBlank(c)) {
        if (inWord) { words.push(cur); cur = ''; inWord = false; }
        continue;
      }
      inWord = true;
      if (c === '\\' && i + 1 < chars.length) { cur += chars[++i]; continue; }
      if (c === '"' || c === "'") { q = c; continue; }
      if (DQ_OPEN.has(c)) { q = 'dq'; continue; }
      if (SQ_OPEN.has(c) && atWordStart) { q = 'sq'; continue; }
      cur += c;
    } else if (q === "'") {
      if (c === "'") q = null; else cur += c;
    } else if (q === '"') {
      if (c === '\\' && (chars[i + 1] === '"' || chars[i + 1] === '\\')) { cur += chars[++i]; continue; }
      if (c === '"') q = null; else cur += c;
    } else if (q === 'dq') {
      if (DQ_CLOSE.has(c)) q = null; else cur += c;
    } else { // 'sq'
      if (SQ_CLOSE.has(c) && isBlank(chars[i + 1])) q = null; else cur += c;
    }
  }
  if (q !== null) throw new ArgError('unterminated quote in command line');
  if (inWord) words.push(cur);
  return words;
}

/**
 * Words that already went through a real shell (process.argv): straight quotes are gone, but typographic
 * quotes survive and may span several argv entries (`description=“Standard web rules”` arrives as three
 * words). Join such spans back and drop the typographic quote marks; straight quotes stay literal.
 */
export function normalizeArgv(argv: string[]): string[] {
  const out: string[] = [];
  let pending: string | null = null;      // text of a word inside an open typographic quote
  let closeSet: Set<string> | null = null;
  for (const word of argv) {
    let cur: string = pending === null ? '' : pending + ' ';
    const chars = Array.from(word);
    for (let i = 0; i < chars.length; i++) {
      const c = chars[i];
      if (closeSet) {
        const closes = closeSet === DQ_CLOSE ? DQ_CLOSE.has(c) : SQ_CLOSE.has(c) && i === chars.length - 1;
        if (closes) { closeSet = null; continue; }
        cur += c;
        continue;
      }
      const atWordStart = i === 0 || chars[i - 1] === '=' && !cur.slice(0, -1).includes('=');
      if (DQ_OPEN.has(c)) { closeSet = DQ_CLOSE; continue; }
      if (SQ_OPEN.has(c) && atWordStart) { closeSet = SQ_CLOSE; continue; }
      cur += c;
    }
    if (closeSet) { pending = cur; } else { out.push(cur); pending = null; }
  }
  if (closeSet) throw new ArgError('unterminated quote in command line');
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
