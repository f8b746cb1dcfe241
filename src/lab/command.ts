// Placeholder entry; replaced by the layer's implementation.
export async function labCommand(_argv: string[]): Promise<number> {
  process.stderr.write('not implemented yet\n');
  return 2;
}
