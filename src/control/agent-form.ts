// What an agent is given of a compiled policy: the same VmPolicy with every rule's `sources` emptied.
// The dataplane keys on rule ids and never reads sources (explain runs on the server, from the
// compiler); after a thousand authorizations on one group the uuids are most of a policy's bytes.
// The form's `hash` is the IR content hash of the form itself (sha256 of JSON.stringify of everything
// but the hash, as compileVm computes it), so what the server compares, what it sends and what the
// agent holds agree; a change that only touches sources leaves the form, and so the host, unchanged.
// Pure; caches per object (compiled objects are never mutated).
import type { FamilyPolicy, NicPolicy, PolicyRule, VmPolicy } from '../policy/ir.js';
import { sha256Hex } from '../policy/hash.js';

interface FamilyForm { family: FamilyPolicy; json: string }

const families = new WeakMap<FamilyPolicy, FamilyForm>();
const forms = new WeakMap<VmPolicy, VmPolicy>();
/** Agent forms built here (and their family JSON), so an already stripped policy is returned as is. */
const isForm = new WeakSet<VmPolicy>();
const familyJson = new WeakMap<FamilyPolicy, string>();

const strip = (r: PolicyRule): PolicyRule => (r.sources.length ? { ...r, sources: [] } : r);

function familyForm(f: FamilyPolicy): FamilyForm {
  let ff = families.get(f);
  if (!ff) {
    // Same key order as the compiler's objects, so JSON.stringify stays canonical.
    const family: FamilyPolicy = { ingress: f.ingress.map(strip), egress: f.egress.map(strip), egressRestricted: f.egressRestricted, notrack: f.notrack };
    ff = { family, json: JSON.stringify(family) };
    families.set(f, ff);
    familyJson.set(family, ff.json);
  }
  return ff;
}

/** The policy as agents get it (cached: VMs sharing rule lists share the stripped lists and their JSON). */
export function agentForm(p: VmPolicy): VmPolicy {
  if (isForm.has(p)) return p;
  let a = forms.get(p);
  if (!a) {
    const v4 = familyForm(p.v4);
    const v6 = familyForm(p.v6);
    const body = `{"vmId":${JSON.stringify(p.vmId)},"instanceName":${JSON.stringify(p.instanceName)},"nics":${JSON.stringify(p.nics)},"v4":${v4.json},"v6":${v6.json}}`;
    a = { vmId: p.vmId, instanceName: p.instanceName, nics: p.nics, v4: v4.family, v6: v6.family, hash: sha256Hex(body) };
    forms.set(p, a);
    isForm.add(a);
  }
  return a;
}

/** JSON text of a family of an agent form built here (cached), else plain JSON.stringify. */
export function formFamilyJson(f: FamilyPolicy): string {
  return familyJson.get(f) ?? JSON.stringify(f);
}

const nicsText = new WeakMap<NicPolicy[], string>();
/** JSON text of a VM's NIC list (cached per list: the fleet shares lists between recompilations, wire.ts sends them). */
export function nicsJson(nics: NicPolicy[]): string {
  let t = nicsText.get(nics);
  if (t === undefined) { t = JSON.stringify(nics); nicsText.set(nics, t); }
  return t;
}
