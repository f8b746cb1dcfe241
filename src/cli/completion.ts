// Completion of verbs, nouns, parameter names (and a few values) from the cached API catalogue.
// Shared by the interactive shell (readline completer) and bash (`palisade __complete LINE`).
import type { Catalogue } from './apis.js';
import { resolveApi } from './apis.js';
import { OUTPUT_FORMATS, splitLine } from './args.js';
import { SETTABLE } from './config.js';

export const BUILTINS = ['api', 'completion', 'help', 'set', 'sync', 'version'];
export const SHELL_ONLY = ['exit', 'quit'];
/** The programs beside the API client: offered on the command line (bash), not in the shell. */
export const PROGRAMS = ['server', 'agent', 'lab'];
const LAB_COMMANDS = ['up', 'vm', 'probe', 'status', 'wait', 'down', 'clean'];

export interface CompleteContext {
  cat: Catalogue;
  profiles: string[];
  interactive: boolean;
}

/** Words of the line so far and the (possibly empty) word under the cursor. */
function wordsOf(line: string): { done: string[]; partial: string } {
  let words: string[];
  try { words = splitLine(line); } catch { words = line.trim().split(/\s+/).filter(Boolean); }
  const endsBlank = line === '' || /\s$/.test(line);
  if (endsBlank) return { done: words, partial: '' };
  return { done: words.slice(0, -1), partial: words[words.length - 1] ?? '' };
}

const FLAGS = ['--async', '--output', '--profile', '-h'];
const PROTOCOLS = ['tcp', 'udp', 'icmp', 'all'];

/** Candidates for the word under the cursor (each a full replacement of that word). Pure. */
export function complete(ctx: CompleteContext, line: string): { candidates: string[]; partial: string } {
  const { done, partial } = wordsOf(line);
  const pick = (xs: Iterable<string>) =>
    [...new Set(xs)].filter((x) => x.toLowerCase().startsWith(partial.toLowerCase())).sort();
  const positional = done.filter((w) => !w.includes('=') && !w.startsWith('-'));
  const prev = done[done.length - 1];

  if (prev === '--output' || prev === '-o') return { candidates: pick(OUTPUT_FORMATS), partial };
  if (prev === '--profile' || prev === '-p') return { candidates: pick(ctx.profiles), partial };
  if (partial.startsWith('-')) return { candidates: pick(FLAGS), partial };

  if (positional.length === 0) {
    const verbs = [...ctx.cat.byVerb.keys(), ...BUILTINS, ...(ctx.interactive ? SHELL_ONLY : PROGRAMS)];
    return { candidates: pick(verbs), partial };
  }
  const verb = positional[0].toLowerCase();
  if (!ctx.interactive && PROGRAMS.includes(verb)) {
    if (verb === 'lab' && positional.length === 1) return { candidates: pick(LAB_COMMANDS), partial };
    if (verb === 'lab' && positional[1] === 'vm' && positional.length === 2) return { candidates: pick(['add', 'del']), partial };
    return { candidates: [], partial };
  }
  if (verb === 'set') {
    if (positional.length === 1) return { candidates: pick(SETTABLE), partial };
    if (positional.length === 2 && positional[1] === 'profile') return { candidates: pick(ctx.profiles), partial };
    if (positional.length === 2 && positional[1] === 'output') return { candidates: pick(OUTPUT_FORMATS), partial };
    return { candidates: [], partial };
  }
  if (verb === 'completion') return { candidates: positional.length === 1 ? pick(['bash']) : [], partial };
  if (verb === 'help' && positional.length === 1) return { candidates: pick(ctx.cat.byVerb.keys()), partial };

  const apiWords = verb === 'api' || verb === 'help' ? positional.slice(1) : positional;
  if (verb === 'api' && apiWords.length === 0) {
    return { candidates: pick([...ctx.cat.byName.values()].map((a) => a.name)), partial };
  }
  if (verb !== 'api' && apiWords.length === 1) {
    const nouns = (ctx.cat.byVerb.get(verb) ?? []).map((a) => a.noun);
    return { candidates: pick(nouns), partial };
  }
  const hit = resolveApi(ctx.cat, apiWords);
  if (!hit) return { candidates: [], partial };

  const eq = partial.indexOf('=');
  if (eq >= 0) {
    // a value: only where the choices are known
    const key = partial.slice(0, eq).toLowerCase();
    const p = hit.api.params.find((x) => x.name.toLowerCase() === key);
    let values: string[] = [];
    if (p?.type === 'boolean') values = ['true', 'false'];
    else if (key === 'protocol') values = PROTOCOLS;
    return { candidates: pick(values.map((v) => `${partial.slice(0, eq)}=${v}`)), partial };
  }
  const given = new Set(done.filter((w) => w.includes('=')).map((w) => w.slice(0, w.indexOf('=')).toLowerCase()));
  const names = hit.api.params
    .filter((p) => !given.has(p.name.toLowerCase()))
    .map((p) => (p.type === 'map' ? `${p.name}[0].` : `${p.name}=`));
  if (!given.has('filter')) names.push('filter=');
  return { candidates: pick(names), partial };
}

/** The bash completion script printed by `palisade completion bash`. */
export function bashScript(): string {
  return `# palisade bash completion. Install: palisade completion bash > /etc/bash_completion.d/palisade
# (or: source <(palisade completion bash)). Completes from the API cache; run \`palisade sync\` to refresh.
_palisade_complete() {
  local line="\${COMP_LINE:0:COMP_POINT}"
  local word="\${line##*[[:space:]]}"
  local IFS=$'\\n'
  local cands
  cands=( $(palisade __complete "$line" 2>/dev/null) )
  # bash splits words at '=' (COMP_WORDBREAKS): hand back only the part after the last '='
  if [[ "$COMP_WORDBREAKS" == *"="* && "$word" == *"="* ]]; then
    local pre="\${word%=*}="
    cands=( "\${cands[@]#"$pre"}" )
  fi
  COMPREPLY=( "\${cands[@]}" )
  if [[ \${#COMPREPLY[@]} -eq 1 && ( "\${COMPREPLY[0]}" == *"=" || "\${COMPREPLY[0]}" == *"." ) ]]; then
    compopt -o nospace 2>/dev/null
  fi
  return 0
}
complete -F _palisade_complete palisade
`;
}
