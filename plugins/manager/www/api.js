// The JSON API: one fetch wrapper so every call sends the CSRF token, speaks JSON,
// sends the browser to the login page on 401, and throws the server's own error text.

let csrfToken = '';

/** Set once at start-up from GET /manager/api/session. */
export function setCsrfToken(token) {
  csrfToken = token || '';
}

/** Path segment for an id: ids come from the server but may hold ':' or other characters. */
export function seg(id) {
  return encodeURIComponent(String(id));
}

export async function request(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (method !== 'GET') {
    // The server wants a JSON object on every state change (415 otherwise), so DELETE sends "{}" too.
    init.headers['Content-Type'] = 'application/json';
    init.headers['X-CSRF-Token'] = csrfToken;
    init.body = JSON.stringify(body || {});
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new Error('the cloudlet did not answer (' + e.message + ')');
  }
  if (response.status === 401) {
    location.assign('/manager/login');
    // Never resolves usefully: the page is going away; callers just see an error meanwhile.
    throw new Error('the session has ended');
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const message = data && typeof data.error === 'string' ? data.error : '';
    const error = new Error(message || ('request failed: ' + response.status + ' ' + response.statusText));
    error.status = response.status;
    throw error;
  }
  return data === null ? {} : data;
}

export const get = (path) => request('GET', path);
export const post = (path, body) => request('POST', path, body);
export const del = (path) => request('DELETE', path);
