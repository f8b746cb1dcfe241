#!/usr/bin/env python3
"""Palisade lab: crafted frames with scapy, sent from inside a (VM) namespace.

  frames.py send IFACE JSON_SPEC          build the frame(s) described by the spec (or a list of specs), send them
  frames.py dhcp-discover IFACE MAC TIMEOUT_MS   send a DISCOVER from 0.0.0.0, print the OFFER as JSON

Spec fields (all optional except kind): srcMac (default: IFACE's MAC), dstMac (default: broadcast,
or the IPv6 multicast MAC for a multicast destination), src, dst, sport, dport, payload, count.
Kinds: udp, tcp (flags, seq, ack), icmp-echo (v4 or v6 by dst), arp (op=request|reply, psrc, pdst,
hwsrc, hwdst), dhcp-offer (yiaddr), ra (prefix), ns (target; src '::' for DAD), na (target),
raw (expr: a scapy expression, e.g. "Ether()/IP(dst='1.2.3.4')/UDP()").
Prints one JSON line {"sent": n}.
"""
import json
import sys

from scapy.all import (ARP, BOOTP, DHCP, ICMP, IP, TCP, UDP, Ether, ICMPv6EchoRequest,  # noqa: F401
                       ICMPv6MLQuery, ICMPv6MLReport, ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6ND_RA, ICMPv6NDOptPrefixInfo,
                       ICMPv6NDOptSrcLLAddr, ICMPv6NDOptDstLLAddr, IPv6, Raw, conf,
                       get_if_hwaddr, in6_getnsma, in6_getnsmac, inet_pton, sendp, srp1)
import socket

conf.verb = 0


def mcast_mac6(dst):
    b = inet_pton(socket.AF_INET6, dst)
    return "33:33:" + ":".join("%02x" % x for x in b[12:])


def l2(spec, iface, dst_ip=None):
    src_mac = spec.get("srcMac") or get_if_hwaddr(iface)
    dst_mac = spec.get("dstMac")
    if not dst_mac:
        if dst_ip and ":" in dst_ip and dst_ip.lower().startswith("ff"):
            dst_mac = mcast_mac6(dst_ip)
        elif dst_ip and "." in dst_ip and 224 <= int(dst_ip.split(".")[0]) <= 239:
            o = [int(x) for x in dst_ip.split(".")]
            dst_mac = "01:00:5e:%02x:%02x:%02x" % (o[1] & 0x7F, o[2], o[3])
        else:
            dst_mac = "ff:ff:ff:ff:ff:ff"
    return Ether(src=src_mac, dst=dst_mac)


def l3(spec):
    dst = spec["dst"]
    if ":" in dst:
        return IPv6(src=spec.get("src") or "::", dst=dst, hlim=spec.get("ttl", 64))
    return IP(src=spec.get("src") or "0.0.0.0", dst=dst, ttl=spec.get("ttl", 64))


def payload(spec):
    p = spec.get("payload")
    return Raw(load=p.encode()) if p else None


def build(spec, iface):
    kind = spec["kind"]
    if kind == "raw":
        return eval(spec["expr"])  # noqa: S307 — test helper: the spec comes from the test code
    if kind == "udp":
        f = l2(spec, iface, spec["dst"]) / l3(spec) / UDP(sport=spec.get("sport", 40000), dport=spec.get("dport", 9))
    elif kind == "tcp":
        f = l2(spec, iface, spec["dst"]) / l3(spec) / TCP(sport=spec.get("sport", 40000), dport=spec.get("dport", 80),
                                                        flags=spec.get("flags", "S"), seq=spec.get("seq", 1000),
                                                        ack=spec.get("ack", 0))
    elif kind == "icmp-echo":
        dst = spec["dst"]
        body = ICMPv6EchoRequest(id=spec.get("id", 4242), seq=spec.get("seq", 1)) if ":" in dst \
            else ICMP(type=8, id=spec.get("id", 4242), seq=spec.get("seq", 1))
        f = l2(spec, iface, dst) / l3(spec) / body
    elif kind == "arp":
        op = 2 if spec.get("op", "reply") == "reply" else 1
        hwsrc = spec.get("hwsrc") or spec.get("srcMac") or get_if_hwaddr(iface)
        f = l2(spec, iface) / ARP(op=op, hwsrc=hwsrc, psrc=spec["psrc"],
                                  hwdst=spec.get("hwdst", "00:00:00:00:00:00" if op == 1 else "ff:ff:ff:ff:ff:ff"),
                                  pdst=spec["pdst"])
    elif kind == "dhcp-offer":
        mac = spec.get("chaddr", "02:00:00:00:00:99")
        f = l2(spec, iface) / IP(src=spec.get("src", "0.0.0.0"), dst=spec.get("dst", "255.255.255.255")) / \
            UDP(sport=67, dport=68) / BOOTP(op=2, yiaddr=spec.get("yiaddr", "10.99.0.99"), xid=spec.get("xid", 4242),
                                            chaddr=bytes.fromhex(mac.replace(":", "")) + b"\0" * 10) / \
            DHCP(options=[("message-type", "offer"), ("server_id", spec.get("src", "0.0.0.0")), "end"])
    elif kind == "ra":
        src = spec.get("src") or "fe80::1"
        f = l2(spec, iface, "ff02::1") / IPv6(src=src, dst=spec.get("dst", "ff02::1"), hlim=255) / \
            ICMPv6ND_RA(routerlifetime=1800) / ICMPv6NDOptSrcLLAddr(lladdr=spec.get("srcMac") or get_if_hwaddr(iface)) / \
            ICMPv6NDOptPrefixInfo(prefix=spec.get("prefix", "2001:db8:bad::"), prefixlen=64)
    elif kind == "ns":
        target = spec["target"]
        src = spec.get("src") or "::"
        dst = spec.get("dst") or in6_getnsma(inet_pton(socket.AF_INET6, target))
        if isinstance(dst, bytes):
            dst = socket.inet_ntop(socket.AF_INET6, dst)
        f = l2(spec, iface, dst) / IPv6(src=src, dst=dst, hlim=255) / ICMPv6ND_NS(tgt=target)
        if src != "::":
            f = f / ICMPv6NDOptSrcLLAddr(lladdr=spec.get("srcMac") or get_if_hwaddr(iface))
    elif kind == "na":
        target = spec["target"]
        dst = spec.get("dst", "ff02::1")
        f = l2(spec, iface, dst) / IPv6(src=spec.get("src") or target, dst=dst, hlim=255) / \
            ICMPv6ND_NA(tgt=target, R=0, S=0, O=1) / ICMPv6NDOptDstLLAddr(lladdr=spec.get("srcMac") or get_if_hwaddr(iface))
    else:
        raise SystemExit("unknown frame kind %s" % kind)
    p = payload(spec)
    return f / p if p is not None else f


def main(argv):
    mode = argv[0]
    if mode == "send":
        iface, specs = argv[1], json.loads(argv[2])
        n = 0
        for spec in specs if isinstance(specs, list) else [specs]:
            c = int(spec.get("count", 1))
            sendp(build(spec, iface), iface=iface, count=c, verbose=False)
            n += c
        print(json.dumps({"sent": n}), flush=True)
    elif mode == "send-batch":
        # many frames (specs as JSON on stdin), built first, then sent through one socket
        iface = argv[1]
        frames = [build(spec, iface) for spec in json.loads(sys.stdin.read())]
        sendp(frames, iface=iface, verbose=False)
        print(json.dumps({"sent": len(frames)}), flush=True)
    elif mode == "dhcp-discover":
        iface, mac, timeout_ms = argv[1], argv[2], int(argv[3])
        conf.checkIPaddr = False
        xid = 0x5A1E
        disc = Ether(src=mac, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255") / \
            UDP(sport=68, dport=67) / BOOTP(chaddr=bytes.fromhex(mac.replace(":", "")) + b"\0" * 10, xid=xid, flags=0x8000) / \
            DHCP(options=[("message-type", "discover"), "end"])
        ans = srp1(disc, iface=iface, timeout=timeout_ms / 1000, verbose=False)
        if ans is not None and BOOTP in ans and ans[BOOTP].xid == xid:
            print(json.dumps({"ok": True, "yiaddr": ans[BOOTP].yiaddr, "server": ans[IP].src}), flush=True)
        else:
            print(json.dumps({"ok": False}), flush=True)
    else:
        raise SystemExit("unknown mode %s" % mode)


if __name__ == "__main__":
    main(sys.argv[1:])
