// CloudStack's XML responses (its default when a request has no `response=json`), from the same envelope
// the JSON responses are made of, so every command, error and async job result has both forms. The shape
// follows CloudStack's ApiResponseSerializer:
//   <?xml version="1.0" encoding="UTF-8"?><listsecuritygroupsresponse cloud-stack-version="…">
//     <count>2</count><securitygroup><id>…</id><ingressrule><ruleid>…</ruleid>…</ingressrule>…</securitygroup>…
//   </listsecuritygroupsresponse>
// - every field is an element named after it; an object is an element holding its fields; a list is the
//   same element repeated, once per item (an empty list writes nothing, as does a null field);
// - async submissions, success and error bodies are fields directly under the root (no wrapper);
//   queryAsyncJobResult's `jobresult` holds the command's own object, e.g. <jobresult><securitygroup>…;
// - text escapes & < > " ' as CloudStack does. Characters XML 1.0 cannot carry at all (C0 controls,
//   U+FFFE/U+FFFF, unpaired surrogates) become U+FFFD, so the document always parses.
export const XML_TYPE = 'text/xml; charset=UTF-8';

/** The CloudStack version announced in `cloud-stack-version` (the API release Palisade follows). */
export const CLOUDSTACK_VERSION = '4.19.0.0';

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };
// C0 controls except tab/LF/CR, unpaired surrogates, and the two non-characters
const NOT_XML = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

export function escapeXmlText(s: string): string {
  return s.replace(NOT_XML, '\uFFFD').replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

/** A field name as an element name: CloudStack's are already valid; anything else is made valid, never emitted raw. */
export function elementName(name: string): string {
  let n = name.replace(/[^A-Za-z0-9._-]/g, '_');
  if (!/^[A-Za-z_]/.test(n)) n = '_' + n;
  if (/^xml/i.test(n)) n = '_' + n;
  return n;
}

function scalar(v: unknown): string {
  return typeof v === 'string' ? escapeXmlText(v) : escapeXmlText(String(v));
}

function writeField(out: string[], name: string, value: unknown): void {
  if (value === undefined || value === null) return;
  if (Array.isArray(value)) {
    for (const item of value) writeField(out, name, item);
    return;
  }
  const tag = elementName(name);
  if (typeof value === 'object') {
    out.push(`<${tag}>`);
    writeFields(out, value as Record<string, unknown>);
    out.push(`</${tag}>`);
    return;
  }
  out.push(`<${tag}>${scalar(value)}</${tag}>`);
}

function writeFields(out: string[], obj: Record<string, unknown>): void {
  for (const [k, v] of Object.entries(obj)) writeField(out, k, v);
}

/** An envelope `{ "<name>": body }` (what the JSON response holds) as CloudStack's XML document. */
export function toXml(envelope: Record<string, unknown>): string {
  const [name, body] = Object.entries(envelope)[0] ?? ['errorresponse', {}];
  const root = elementName(name);
  const out: string[] = ['<?xml version="1.0" encoding="UTF-8"?>', `<${root} cloud-stack-version="${CLOUDSTACK_VERSION}">`];
  if (body !== null && typeof body === 'object' && !Array.isArray(body)) writeFields(out, body as Record<string, unknown>);
  out.push(`</${root}>`);
  return out.join('');
}
