#!/usr/bin/env node
// One executable, subcommands per layer. Anything that is not a known subcommand is an API call in
// cloudmonkey syntax (`palisade create securitygroup name=web`), handled by the CLI layer.
const argv = process.argv.slice(2);
const sub = argv[0];

async function main(): Promise<number> {
  switch (sub) {
    case 'server': return (await import('./api/serve.js')).serverCommand(argv.slice(1));
    case 'agent': return (await import('./agent/run.js')).agentCommand(argv.slice(1));
    case 'lab': return (await import('./lab/command.js')).labCommand(argv.slice(1));
    default: return (await import('./cli/run.js')).cliCommand(argv);
  }
}

main().then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`palisade: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
