// What both backends read the same way from `nft -j` output: the nftables backend its own tables, the
// iptables backend the nf_tables tables iptables-nft and ebtables-nft keep its chains in.

/**
 * A table object of nft's JSON with flags set. Palisade sets none; `flags dormant` unhooks every base
 * chain of the table (nothing it holds runs). nft 1.0.6 prints a dormant table's flags as a stray
 * string, not a list, so any flags count.
 */
export function hasFlags(table: Record<string, any>): boolean {
  const flags = table.flags;
  return Array.isArray(flags) ? flags.length > 0 : !!flags;
}
