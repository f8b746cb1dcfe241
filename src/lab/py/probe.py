#!/usr/bin/env python3
"""Palisade lab: socket probes and tiny services, standard library only (fast start).

Run inside a namespace by the lab (src/lab/probes.ts, src/lab/services.ts). Probes print one JSON
line and always exit 0 within their timeout; services print 'ready' once listening and then one line
per event, until killed.

  tcp-connect IP PORT TIMEOUT_MS [SRC_IP] [SRC_PORT]
  udp-request IP PORT TIMEOUT_MS PAYLOAD [SRC_IP] [SRC_PORT]
  dns-query SERVER NAME TYPE(A|AAAA) TIMEOUT_MS udp|tcp
  tcp-listen PORT           (dual stack; accepts, writes 'palisade\\n', closes)
  udp-echo PORT             (dual stack; echoes every datagram)
  dns-server ANSWER_V4 ANSWER_V6   (UDP and TCP 53)
  dhcp-server IFACE SERVER_IP OFFER_IP   (answers DISCOVER with OFFER, REQUEST with ACK)
"""
import errno
import json
import os
import select
import socket
import struct
import sys
import threading
import time


def out(obj):
    sys.stdout.write((json.dumps(obj) if not isinstance(obj, str) else obj) + "\n")
    sys.stdout.flush()


def family_of(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def reason_of(err):
    code = getattr(err, "errno", None)
    if isinstance(err, socket.timeout) or code == errno.ETIMEDOUT:
        return "timeout"
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if code == errno.EPERM or code == errno.EACCES:
        return "denied"
    return "error:" + str(err)


def bind_src(s, fam, src, sport):
    if src or sport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((src or ("::" if fam == socket.AF_INET6 else "0.0.0.0"), int(sport or 0)))


def tcp_connect(ip, port, timeout_ms, src=None, sport=None):
    fam = family_of(ip)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(int(timeout_ms) / 1000)
    t0 = time.monotonic()
    try:
        bind_src(s, fam, src, sport)
        s.connect((ip, int(port)))
        out({"ok": True, "reason": "connected", "ms": round((time.monotonic() - t0) * 1000, 1)})
    except Exception as e:  # noqa: BLE001 — every failure is a probe result
        out({"ok": False, "reason": reason_of(e), "ms": round((time.monotonic() - t0) * 1000, 1)})
    finally:
        s.close()


def udp_request(ip, port, timeout_ms, payload, src=None, sport=None):
    fam = family_of(ip)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    deadline = time.monotonic() + int(timeout_ms) / 1000
    t0 = time.monotonic()
    try:
        bind_src(s, fam, src, sport)
        s.connect((ip, int(port)))  # connected: ICMP port unreachable surfaces as ECONNREFUSED
        s.send(payload.encode())
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            s.settimeout(left)
            data = s.recv(65535)
            if data == payload.encode():
                out({"ok": True, "reason": "reply", "ms": round((time.monotonic() - t0) * 1000, 1)})
                return
    except Exception as e:  # noqa: BLE001
        out({"ok": False, "reason": reason_of(e), "ms": round((time.monotonic() - t0) * 1000, 1)})
    finally:
        s.close()


# --- DNS -----------------------------------------------------------------------------------------

def dns_name(name):
    b = b""
    for label in name.rstrip(".").split("."):
        if label:
            b += bytes([len(label)]) + label.encode()
    return b + b"\0"


def dns_query(server, name, qtype, timeout_ms, transport):
    qt = 28 if qtype.upper() == "AAAA" else 1
    qid = os.getpid() & 0xFFFF
    msg = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + dns_name(name) + struct.pack("!HH", qt, 1)
    fam = family_of(server)
    timeout = int(timeout_ms) / 1000
    t0 = time.monotonic()
    try:
        if transport == "tcp":
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect((server, 53))
            s.sendall(struct.pack("!H", len(msg)) + msg)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                chunk = s.recv(4096)
                if not chunk:
                    raise OSError("short reply")
                buf += chunk
            resp = buf[2:]
        else:
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            s.connect((server, 53))
            s.send(msg)
            resp = s.recv(4096)
        s.close()
        rid, flags, qd, an = struct.unpack("!HHHH", resp[:8])
        answers = parse_answers(resp, an) if rid == qid else []
        out({"ok": rid == qid and an > 0, "reason": "reply", "answers": answers,
             "ms": round((time.monotonic() - t0) * 1000, 1)})
    except Exception as e:  # noqa: BLE001
        out({"ok": False, "reason": reason_of(e), "answers": [], "ms": round((time.monotonic() - t0) * 1000, 1)})


def skip_name(buf, i):
    while True:
        n = buf[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += n + 1


def parse_answers(buf, count):
    i = skip_name(buf, 12) + 4
    res = []
    for _ in range(count):
        i = skip_name(buf, i)
        t, _c, _ttl, ln = struct.unpack("!HHIH", buf[i:i + 10])
        i += 10
        data = buf[i:i + ln]
        i += ln
        if t == 1 and ln == 4:
            res.append(socket.inet_ntop(socket.AF_INET, data))
        elif t == 28 and ln == 16:
            res.append(socket.inet_ntop(socket.AF_INET6, data))
    return res


def dns_answer(query, v4, v6):
    qid, flags, qd = struct.unpack("!HHH", query[:6])
    end = skip_name(query, 12)
    qtype, _qclass = struct.unpack("!HH", query[end:end + 4])
    question = query[12:end + 4]
    rr = b""
    if qtype == 1:
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_pton(socket.AF_INET, v4)
    elif qtype == 28:
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 28, 1, 60, 16) + socket.inet_pton(socket.AF_INET6, v6)
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 1 if rr else 0, 0, 0) + question + rr


def dual_socket(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", int(port)))
    return s


def peer_str(addr):
    host = addr[0]
    if host.startswith("::ffff:"):
        host = host[7:]
    return "%s %d" % (host, addr[1])


def dns_server(v4, v6):
    u = dual_socket(socket.SOCK_DGRAM, 53)
    t = dual_socket(socket.SOCK_STREAM, 53)
    t.listen(16)
    out("ready")
    while True:
        r, _, _ = select.select([u, t], [], [])
        if u in r:
            q, addr = u.recvfrom(4096)
            try:
                u.sendto(dns_answer(q, v4, v6), addr)
                out("udp " + peer_str(addr))
            except Exception:  # noqa: BLE001 — malformed query: ignore
                pass
        if t in r:
            c, addr = t.accept()
            c.settimeout(2)
            try:
                ln = struct.unpack("!H", c.recv(2))[0]
                q = b""
                while len(q) < ln:
                    q += c.recv(ln - len(q))
                a = dns_answer(q, v4, v6)
                c.sendall(struct.pack("!H", len(a)) + a)
                out("tcp " + peer_str(addr))
            except Exception:  # noqa: BLE001
                pass
            finally:
                c.close()


# --- listeners -----------------------------------------------------------------------------------

def tcp_listen(port):
    s = dual_socket(socket.SOCK_STREAM, port)
    s.listen(64)
    out("ready")
    while True:
        c, addr = s.accept()
        out("conn " + peer_str(addr))
        try:
            c.sendall(b"palisade\n")
        except OSError:
            pass
        c.close()


def udp_echo(port):
    s = dual_socket(socket.SOCK_DGRAM, port)
    out("ready")
    while True:
        data, addr = s.recvfrom(65535)
        s.sendto(data, addr)
        out("pkt " + peer_str(addr))


# --- DHCP stub -----------------------------------------------------------------------------------

def dhcp_server(iface, server_ip, offer_ip):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, iface.encode())
    s.bind(("0.0.0.0", 67))
    out("ready")
    while True:
        data, _addr = s.recvfrom(4096)
        if len(data) < 240 or data[0] != 1 or data[236:240] != b"\x63\x82\x53\x63":
            continue
        mtype = None
        i = 240
        while i < len(data) and data[i] != 255:
            if data[i] == 0:
                i += 1
                continue
            code, ln = data[i], data[i + 1]
            if code == 53:
                mtype = data[i + 2]
            i += 2 + ln
        reply = {1: 2, 3: 5}.get(mtype)  # DISCOVER→OFFER, REQUEST→ACK
        if reply is None:
            continue
        xid, chaddr = data[4:8], data[28:44]
        pkt = bytes([2, 1, 6, 0]) + xid + b"\0\0" + b"\x80\x00" + b"\0" * 4
        pkt += socket.inet_aton(offer_ip) + socket.inet_aton(server_ip) + b"\0" * 4 + chaddr
        pkt += b"\0" * 192 + b"\x63\x82\x53\x63"
        pkt += bytes([53, 1, reply]) + bytes([54, 4]) + socket.inet_aton(server_ip)
        pkt += bytes([51, 4]) + struct.pack("!I", 3600) + bytes([1, 4]) + socket.inet_aton("255.255.255.0")
        pkt += bytes([3, 4]) + socket.inet_aton(server_ip) + bytes([6, 4]) + socket.inet_aton(server_ip) + b"\xff"
        s.sendto(pkt, ("255.255.255.255", 68))
        out("%s %s" % ("offer" if reply == 2 else "ack", chaddr[:6].hex(":")))


def main(argv):
    mode, args = argv[0], argv[1:]
    if mode == "tcp-connect":
        tcp_connect(*args)
    elif mode == "udp-request":
        udp_request(*args)
    elif mode == "dns-query":
        dns_query(*args)
    elif mode == "dns-server":
        dns_server(*args)
    elif mode == "tcp-listen":
        tcp_listen(*args)
    elif mode == "udp-echo":
        udp_echo(*args)
    elif mode == "dhcp-server":
        dhcp_server(*args)
    else:
        sys.stderr.write("unknown mode %s\n" % mode)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(0)
