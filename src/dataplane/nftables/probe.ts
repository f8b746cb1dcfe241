// The transaction `auto` checks with `nft -c` (nothing is committed): one of each kind of object and
// statement the nftables backend uses — bridge-family base chains with interface verdict maps, mark
// arithmetic, ARP / ND payload matches, NOTRACK in the bridge family, the conntrack zone set from a
// map in `inet`, named counters, family verdict maps. A kernel or nft lacking any of them fails it.
export function probeScript(): string {
  const t = 'palisade_probe';
  return `add table bridge ${t}
add chain bridge ${t} c
add map bridge ${t} ports { type ifname : verdict; }
add set bridge ${t} macs { type ether_addr; }
add chain bridge ${t} pre { type filter hook prerouting priority -350; policy accept; }
add element bridge ${t} ports { "vnet0" : goto c }
add rule bridge ${t} pre iifname vmap @ports
add rule bridge ${t} c meta mark set meta mark and 0xf0000000 or 0x10000 comment "pal:x #0"
add rule bridge ${t} c ether type vmap { arp : goto c, ip : goto c, ip6 : goto c }
add rule bridge ${t} c arp operation request arp saddr ip 0.0.0.0 arp saddr ether 02:00:00:00:00:01 accept
add rule bridge ${t} c ether daddr @macs meta mark set meta mark or 0x801 accept
add rule bridge ${t} c ip6 hoplimit 255 ip6 nexthdr ipv6-icmp @th,64,128 0xfe800000000000000000000000000001 icmpv6 type 136 accept
add rule bridge ${t} c ip daddr 10.0.0.1 notrack accept
add rule bridge ${t} c meta pkttype host accept
add table inet ${t}
add chain inet ${t} d
add counter inet ${t} n { comment "x" ; }
add map inet ${t} zones { typeof meta mark : ct zone; }
add map inet ${t} from { type mark : verdict; }
add set inet ${t} g { type ipv4_addr; }
add chain inet ${t} raw { type filter hook prerouting priority -300; policy accept; }
add chain inet ${t} forw { type filter hook forward priority 0; policy accept; }
add rule inet ${t} raw ct zone set meta mark and 0xfff map @zones
add rule inet ${t} forw ct state established,related accept
add rule inet ${t} forw meta nfproto ipv4 meta mark and 0x7ff0000 vmap @from
add rule inet ${t} d ip saddr @g tcp dport 80-443 counter name n accept
`;
}
