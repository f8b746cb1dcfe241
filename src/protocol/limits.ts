// Size bounds of the agent channel (DESIGN.md §4), shared by server and agent. Each bound is what the
// largest legitimate message needs, so an authenticated but hostile peer can make the other side hold
// at most this much per connection, and an unauthenticated one next to nothing.
//
// Why these numbers:
// - Before the server has accepted a hello, a connection may send PRE_HELLO_MAX_BYTES in total (raw
//   bytes on the socket, frame headers included). A hello is ~200 bytes (token 43, hostname ≤ 255).
//   The server counts bytes on the socket itself: `ws` buffers a whole frame before delivering it, so a
//   check on the delivered message would come after the memory was spent.
// - After the hello, an agent→server frame is at most AGENT_FRAME_MAX_BYTES. The largest legitimate
//   one is an ack of a host at MAX_VMS_PER_HOST VMs that all failed with an error of MAX_ERROR_CHARS:
//   16,384 × (36-char uuid + ~30 bytes of JSON + 512) ≈ 9.5 MB, under 16 MiB. Reports are far smaller
//   (MAX_FINDINGS findings, MAX_REPAIRS_PER_REPORT repairs).
// - Server→agent frames are at most SERVER_FRAME_MAX_BYTES: a snapshot of a host at MAX_VMS_PER_HOST
//   VMs whose policies are ~16 KB each (hundreds of rules, merged CIDR lists).
export const PRE_HELLO_MAX_BYTES = 8 * 1024;
export const AGENT_FRAME_MAX_BYTES = 16 * 1024 * 1024;
export const SERVER_FRAME_MAX_BYTES = 256 * 1024 * 1024;

/** VMs one host can hold (snapshot, acks). A host with more is refused by the schemas on both sides. */
export const MAX_VMS_PER_HOST = 16_384;
/** NICs of one VM in a desired state (the API refuses more before writing). */
export const MAX_NICS_PER_VM = 256;
/** Secondary addresses of one NIC (the API's bound: each is a set element and an anti-spoofing fact on its host). */
export const MAX_SECONDARY_IPS_PER_NIC = 256;
/** Characters of a per-VM apply error the agent reports (it truncates longer ones). */
export const MAX_ERROR_CHARS = 512;
/** Preflight findings per report, and the length of their texts. */
export const MAX_FINDINGS = 64;
export const MAX_FINDING_CHARS = 2000;
/** Drift repairs per report (the agent keeps the newest while disconnected), and their text length. */
export const MAX_REPAIRS_PER_REPORT = 100;
export const MAX_REPAIR_CHARS = 2000;
/** Host name an agent reports, agent token, backend name. */
export const MAX_HOSTNAME_CHARS = 255;
export const MAX_TOKEN_CHARS = 512;
export const MAX_DATAPLANE_CHARS = 32;
