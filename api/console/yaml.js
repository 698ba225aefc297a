// A YAML writer for the text view: JSON values as block YAML. Strings that could read as
// something else are double-quoted with JSON escapes (valid YAML). Reading YAML is the
// server's job: the text view sends it as application/yaml.

const PLAIN = /^[A-Za-z_][A-Za-z0-9_ .,/@+()-]*$/;
const RESERVED = /^(true|false|yes|no|on|off|null|y|n|~)$/i;

function scalar(v) {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  const s = String(v);
  if (s !== '' && PLAIN.test(s) && !RESERVED.test(s) && !s.endsWith(' ') && !/^[0-9]/.test(s) && !s.includes(': ') && !s.includes(' #')) return s;
  return JSON.stringify(s);
}

function key(k) {
  return PLAIN.test(k) && !RESERVED.test(k) && !k.includes(' ') ? k : JSON.stringify(k);
}

function isEmpty(v) {
  return (Array.isArray(v) && v.length === 0) || (v && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length === 0);
}

function block(v, indent) {
  const pad = ' '.repeat(indent);
  if (Array.isArray(v)) {
    return v
      .map((item) => {
        if (item && typeof item === 'object' && !isEmpty(item)) {
          const inner = block(item, indent + 2);
          return `${pad}- ${inner.slice(indent + 2)}`;
        }
        return `${pad}- ${inline(item)}`;
      })
      .join('\n');
  }
  return Object.entries(v)
    .map(([k, item]) => {
      if (item && typeof item === 'object' && !isEmpty(item)) {
        return `${pad}${key(k)}:\n${block(item, Array.isArray(item) ? indent + 2 : indent + 2)}`;
      }
      if (typeof item === 'string' && item.includes('\n') && !item.endsWith('\n') && !/^\s/.test(item) && !/[ \t]$/m.test(item) && !/[\u0000-\u0008\u000b-\u001f\u007f]/.test(item)) {
        const lines = item.split('\n').map((l) => (l ? `${pad}  ${l}` : ''));
        return `${pad}${key(k)}: |-\n${lines.join('\n')}`;
      }
      return `${pad}${key(k)}: ${inline(item)}`;
    })
    .join('\n');
}

function inline(v) {
  if (Array.isArray(v)) return '[]';
  if (v && typeof v === 'object') return '{}';
  return scalar(v);
}

/** A JSON value as YAML text. */
export function toYaml(value) {
  if (value && typeof value === 'object' && !isEmpty(value)) return block(value, 0) + '\n';
  return inline(value) + '\n';
}
