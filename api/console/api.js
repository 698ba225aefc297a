// The API client: every request carries the pasted key; errors become ApiError with the
// server's code, message and details (the `{error: {code, message, details}}` envelope).

const KEY = 'switchboard.apiKey';

/** The key of this browser session, or null. */
export function getKey() {
  return sessionStorage.getItem(KEY);
}

/** Keeps the key for this browser tab's session only. */
export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

/** Forgets the key. */
export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

/** An error answer of the API, or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, code, message, details = [], extra = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = Array.isArray(details) ? details : [];
    this.extra = extra;
  }
}

async function failure(res) {
  let body = null;
  try {
    body = await res.json();
  } catch (_) {
    // not JSON: described by the status alone
  }
  const e = body && body.error;
  if (e) return new ApiError(res.status, e.code || 'error', e.message || res.statusText, e.details, e);
  return new ApiError(res.status, 'http_' + res.status, `The server answered ${res.status} ${res.statusText}`);
}

function headers(extra = {}) {
  const out = { Accept: 'application/json', ...extra };
  const key = getKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

/**
 * Calls the API. `body` is sent as JSON, unless it is a string (sent as is with `contentType`).
 */
export async function api(method, path, body, { contentType = 'application/json', signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = contentType;
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', `Could not reach the server (${e && e.message ? e.message : e}).`);
  }
  if (!res.ok) throw await failure(res);
  if (res.status === 204) return null;
  const type = res.headers.get('Content-Type') || '';
  return type.includes('json') ? res.json() : res.text();
}

/** Downloads an API file (e.g. a CSV) with the key, as a blob the browser saves. */
export async function download(path, filename) {
  let res;
  try {
    res = await fetch(path, { headers: headers({ Accept: 'text/csv' }) });
  } catch (e) {
    throw new ApiError(0, 'network', `Could not reach the server (${e.message}).`);
  }
  if (!res.ok) throw await failure(res);
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/**
 * Reads a Server-Sent Events stream with fetch(): EventSource cannot send the Authorization
 * header the API takes. Calls onEvent(type, data) per message (data parsed as JSON when it is);
 * resolves when the stream ends; abort with `signal`.
 */
export async function streamEvents(path, onEvent, signal) {
  let res;
  try {
    res = await fetch(path, { headers: headers({ Accept: 'text/event-stream' }), signal });
  } catch (e) {
    if (e && e.name === 'AbortError') return;
    throw new ApiError(0, 'network', `Could not reach the server (${e.message}).`);
  }
  if (!res.ok) throw await failure(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      if (e && e.name === 'AbortError') return;
      throw e;
    }
    if (chunk.done) break;
    buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n?/g, '\n');
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const message = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let type = 'message';
      const data = [];
      for (const line of message.split('\n')) {
        if (line.startsWith(':')) continue; // keep-alive comment
        const colon = line.indexOf(':');
        const name = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (name === 'event') type = value;
        else if (name === 'data') data.push(value);
      }
      if (!data.length) continue;
      const text = data.join('\n');
      let parsed = text;
      try {
        parsed = JSON.parse(text);
      } catch (_) {
        // not JSON: passed as text
      }
      onEvent(type, parsed);
    }
  }
}

/** An error in words, for people. */
export function describe(err) {
  if (err instanceof ApiError) {
    if (err.status === 0) return err.message;
    if (err.status === 401) return `The API refused the key: ${err.message}. Paste a valid API key.`;
    return `${err.message} (${err.code}, HTTP ${err.status})`;
  }
  return `Something went wrong: ${err && err.message ? err.message : err}`;
}
