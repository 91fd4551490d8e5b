// The pages' one way to the service. The access token lives in this module only (never in
// localStorage or a readable cookie); what keeps a page signed in across loads is the
// refresh token in an HttpOnly cookie that only /web/session/* reads.

let accessToken = null;

/** An answer that was not 2xx, with the problem document the service sent. */
export class ApiError extends Error {
  constructor(status, problem, headers) {
    super(problem.detail || problem.title || `the service answered ${status}`);
    this.status = status;
    this.problem = problem;
    this.headers = headers;
  }

  /** The field errors of a 422 (or 409 naming a field), as [{field, message}]. */
  get fieldErrors() {
    return Array.isArray(this.problem.errors) ? this.problem.errors : [];
  }

  /** The last word of the problem type, e.g. "login-locked". */
  get kind() {
    return String(this.problem.type || '').split('/').pop();
  }
}

async function send(method, path, { body, token, headers = {} } = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (token) init.headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, { detail: 'The service could not be reached. Check your connection and try again.' });
  }
  const type = response.headers.get('Content-Type') || '';
  const data = type.includes('json') ? await response.json() : await response.text();
  if (!response.ok) {
    throw new ApiError(response.status, typeof data === 'object' ? data : {}, response.headers);
  }
  return { data, headers: response.headers, status: response.status };
}

/**
 * Asks for a fresh access token for the cookie's session; false when there is none (no
 * cookie: 204; a session that is over: 401, and the cookie is gone with it; 403 when the
 * account may not go on, an unconfirmed address say).
 */
export async function resume() {
  try {
    const { data, status } = await send('POST', '/web/session/token', { body: {} });
    accessToken = status === 204 ? null : data.access_token;
    return accessToken !== null;
  } catch (error) {
    if (error.status === 401 || error.status === 403) {
      accessToken = null;
      return false;
    }
    throw error;
  }
}

/**
 * Signs in with {email|username, password}. Returns {mfaToken} when the second step is
 * needed, else {} with the session started.
 */
export async function signIn(credentials) {
  const { data } = await send('POST', '/web/session', { body: credentials });
  if (data.mfa_required) return { mfaToken: data.mfa_token };
  accessToken = data.access_token;
  return {};
}

export async function signInWithCode(mfaToken, code) {
  const { data } = await send('POST', '/web/session/mfa', { body: { mfa_token: mfaToken, code } });
  accessToken = data.access_token;
}

/** Ends this session (the cookie's) and forgets the token. */
export async function signOut() {
  accessToken = null;
  await send('POST', '/web/session/logout', { body: {} });
}

/**
 * A call to the JSON API with the access token. An expired token is renewed once from the
 * cookie and the call made again; a session that has ended sends the page to sign-in.
 */
export async function call(method, path, { body, headers } = {}) {
  try {
    return await send(method, path, { body, headers, token: accessToken });
  } catch (error) {
    if (error.status !== 401 || path.startsWith('/api/auth/')) throw error;
  }
  if (!(await resume())) {
    toSignIn();
    throw new ApiError(401, { detail: 'Your session has ended. Please sign in again.' });
  }
  return send(method, path, { body, headers, token: accessToken });
}

/** Mails a new confirmation link to `email`, if it belongs to an account that needs one
 * (answered alike for any address). */
export async function resendVerification(email) {
  await call('POST', '/api/auth/resend-verification', { body: { email: email.trim() } });
}

/** The API's JSON body of a call, for the common case. */
export async function get(path) {
  return (await call('GET', path)).data;
}

/** The QR code of a text, as an SVG document. */
export async function qrSvg(text) {
  return (await call('POST', '/web/qr', { body: { text } })).data;
}

/**
 * Sends the page to sign-in, to come back here afterwards. In place of this page in the
 * history, as sign-in then puts this page back in its own place: Back leaves the site
 * rather than landing here again.
 */
export function toSignIn() {
  const next = location.pathname + location.search;
  location.replace(`/sign-in?next=${encodeURIComponent(next)}`);
}
