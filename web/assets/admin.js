// The admin console. Its views are plain addresses, so that links, the back button and
// bookmarks just work: /admin (the user list; its filters and page are in the query),
// /admin?user=ID (one user), /admin?view=audit (the audit log and its filters).

import { call, get } from './api.js';
import { EVENT_TYPES, eventName, eventRow, pagedTable } from './events.js';
import { failed, ready, signedIn } from './page.js';
import { $, h, onSubmit, say, sayOnPage, showError, time, values } from './ui.js';

const params = new URLSearchParams(location.search);

/** The query of the current address, without the keys that are the console's own. */
function apiQuery(keys) {
  const query = new URLSearchParams();
  for (const key of keys) {
    const value = params.get(key);
    if (value) query.set(key, value);
  }
  return query;
}

/** Fills a form's fields from the address, so that it shows the filters in force. */
function fillFromAddress(form) {
  for (const input of form.elements) {
    if (input.name && params.has(input.name)) input.value = params.get(input.name);
  }
}

function isLocked(user) {
  return Boolean(user.locked_until) && new Date(user.locked_until) > new Date();
}

/** A user's state as a few tags: active or not, locked, email confirmed, two-factor. */
function status(user) {
  const tag = (text, kind = '') => h('span', { class: `tag ${kind}` }, text);
  return [
    user.active ? tag('Active') : tag('Deactivated', 'bad'),
    isLocked(user) ? tag('Locked', 'warn') : null,
    user.email_verified ? null : tag('Email not confirmed', 'warn'),
    user.mfa_enabled ? tag('Two-factor on') : null,
  ];
}

// --- the user list ---

/**
 * The cursors of the pages before this one, oldest first, carried in the address (`back`)
 * as links carry everything here: the API pages forward only, and "Previous page" takes
 * the last of them. At most this many ride along, to keep the address short; beyond them,
 * "First page".
 */
const BACK_KEPT = 10;
const LIST_KEYS = ['q', 'role', 'active', 'sort', 'per_page'];

/** Cursors hold no dot (base64url), so dots part them. */
function backCursors() {
  return (params.get('back') || '').split('.').filter(Boolean);
}

async function showUsers() {
  $('#users-view').hidden = false;
  $('#tab-users').setAttribute('aria-current', 'page');
  const form = $('#user-filters');
  fillFromAddress(form);
  const query = apiQuery([...LIST_KEYS, 'after']);
  const page = await get(`/api/users?${query}`);
  const rows = page.items.map((user) =>
    h(
      'tr',
      {},
      h('td', { 'data-label': 'Name' }, h('a', { href: `/admin?user=${user.id}` }, user.name)),
      h('td', { 'data-label': 'Email' }, user.email),
      h('td', { 'data-label': 'Username' }, user.username ?? '—'),
      h('td', { 'data-label': 'Role' }, user.role),
      h('td', { 'data-label': 'Status' }, status(user)),
      h('td', { 'data-label': 'Created' }, time(user.created_at)),
    ),
  );
  if (rows.length === 0) {
    rows.push(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'No user matches.')));
  }
  $('#users tbody').replaceChildren(...rows);

  const from = Number(params.get('from')) || 1;
  const to = from + page.items.length - 1;
  $('#users-summary').textContent =
    page.items.length === 0
      ? `No users on this page; ${page.total} in all.`
      : `Users ${from} to ${to} of ${page.total}.`;
  const back = backCursors();
  const listAt = (after, at, chain) => {
    const pageQuery = apiQuery(LIST_KEYS);
    if (after) pageQuery.set('after', after);
    if (chain.length > 0) pageQuery.set('back', chain.join('.'));
    if (at > 1) pageQuery.set('from', String(at));
    return `/admin?${pageQuery}`;
  };
  const next = $('#users-next');
  if (page.next_cursor) {
    // The first page needs no cursor to come back to: "First page" is the way there.
    const after = params.get('after');
    next.href = listAt(page.next_cursor, to + 1, after ? [...back, after].slice(-BACK_KEPT) : []);
    next.hidden = false;
  }
  if (params.has('after')) {
    const first = $('#users-first');
    first.href = listAt('', 1, []);
    first.hidden = false;
    if (back.length > 0) {
      const previous = $('#users-previous');
      previous.href = listAt(back.at(-1), Math.max(2, from - page.per_page), back.slice(0, -1));
      previous.hidden = false;
    }
  }
  if (params.has('deleted')) sayOnPage(`Deleted ${params.get('deleted')}.`);
}

// --- one user ---

let user;
let etag;
/** The signed-in admin's own id. */
let myId;

async function loadUser(id) {
  const { data, headers } = await call('GET', `/api/users/${id}`);
  user = data;
  etag = headers.get('ETag');
}

function showUserFacts() {
  document.title = `${user.name} · Admin console · user-service`;
  $('#user-title').textContent = user.name;
  const facts = [
    ['Id', h('span', { class: 'mono' }, user.id)],
    ['Email', user.email],
    ['Status', status(user)],
    ['Role', user.role],
    ['Signed in last', time(user.last_login_at)],
    ['Locked until', user.locked_until ? time(user.locked_until) : 'not locked'],
    ['Created', time(user.created_at)],
    ['Changed', time(user.updated_at)],
  ];
  $('#user-facts').replaceChildren(...facts.flatMap(([term, value]) => [h('dt', {}, term), h('dd', {}, value)]));

  const form = $('#user-form');
  form.elements.name.value = user.name;
  form.elements.username.value = user.username ?? '';
  form.elements.email.value = user.email;
  form.elements.role.value = user.role;
  form.elements.active.checked = user.active;
  form.elements.email_verified.checked = user.email_verified;

  $('#action-activate').hidden = user.active;
  $('#action-deactivate').hidden = !user.active;
  $('#action-unlock').hidden = !isLocked(user);
  $('#action-reset-mfa').hidden = !user.mfa_enabled;
  $('#action-events').href = `/admin?view=audit&user_id=${user.id}`;
  $('#delete-who').textContent = `${user.name} (${user.email})`;
  $('#delete-self').hidden = user.id !== myId;
}

async function showUserSessions() {
  const { items } = await get(`/api/users/${user.id}/sessions`);
  const rows = items.map((session) =>
    h(
      'tr',
      {},
      h('td', { 'data-label': 'Signed in' }, time(session.created_at)),
      h('td', { 'data-label': 'Last active' }, time(session.last_used_at)),
      h('td', { 'data-label': 'IP address' }, session.ip ?? '—'),
      h('td', { 'data-label': 'Browser' }, session.user_agent ?? '—'),
    ),
  );
  if (rows.length === 0) {
    rows.push(h('tr', {}, h('td', { colspan: 4, class: 'empty' }, 'Not signed in anywhere.')));
  }
  $('#user-sessions tbody').replaceChildren(...rows);
}

/** What the edit form changes, as a PATCH body with only the fields that differ. */
function changes(form) {
  const body = {};
  const username = form.username.trim() || null;
  if (form.name.trim() !== user.name) body.name = form.name.trim();
  if (username !== user.username) body.username = username;
  if (form.email.trim().toLowerCase() !== user.email) body.email = form.email.trim();
  if (form.role !== user.role) body.role = form.role;
  if (form.active !== user.active) body.active = form.active;
  // With a new address, as the box says: the form unticks it when the address is edited.
  if (body.email !== undefined || form.email_verified !== user.email_verified) {
    body.email_verified = form.email_verified;
  }
  return body;
}

/** Puts `body` (from [`changes`]) back into the form, over the user it now shows. */
function retype(form, body) {
  for (const [field, value] of Object.entries(body)) {
    const input = form.elements[field];
    if (input.type === 'checkbox') input.checked = value;
    else input.value = value ?? '';
  }
}

const actions = $('#user-actions');

/** Runs an action of the actions panel, then shows the user as it now is. */
function action(button, work, done) {
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await work();
      await loadUser(user.id);
      showUserFacts();
      await showUserSessions();
      say(actions, done);
      // The button may be hidden now (activate ↔ deactivate): keep the focus in the panel.
      if (button.hidden) $('#actions-title').focus();
    } catch (error) {
      showError(actions, error);
    } finally {
      button.disabled = false;
    }
  });
}

function wireUserPage() {
  const form = $('#user-form');
  // A new address starts unconfirmed; back to the stored one, its state is back too.
  form.elements.email.addEventListener('input', () => {
    const same = form.elements.email.value.trim().toLowerCase() === user.email;
    form.elements.email_verified.checked = same && user.email_verified;
  });
  onSubmit(form, async () => {
    const body = changes(values(form));
    if (Object.keys(body).length === 0) return say(form, 'Nothing has changed.');
    try {
      const response = await call('PATCH', `/api/users/${user.id}`, {
        body,
        headers: etag ? { 'If-Match': etag } : {},
      });
      user = response.data;
      etag = response.headers.get('ETag');
    } catch (error) {
      if (error.status !== 412) throw error;
      await loadUser(user.id);
      showUserFacts();
      retype(form, body);
      throw Object.assign(error, {
        message:
          'Someone changed this user while you were editing (a sign-in counts). The page now shows their version, with your changes still in the form: check them and save again.',
      });
    }
    showUserFacts();
    say(form, 'Saved.');
  });

  const put = (what) => () => call('PUT', `/api/users/${user.id}/${what}`);
  action($('#action-activate'), put('activate'), 'Activated: the user may sign in again.');
  action($('#action-deactivate'), put('deactivate'), 'Deactivated: the user is signed out and cannot sign in.');
  action($('#action-unlock'), put('unlock'), 'The sign-in lock is lifted.');
  action(
    $('#action-reset-mfa'),
    () => call('DELETE', `/api/users/${user.id}/mfa`),
    'Two-factor sign-in is off; the user can set it up again.',
  );
  action(
    $('#action-end-sessions'),
    () => call('DELETE', `/api/users/${user.id}/sessions`),
    'Every session of the user is signed out.',
  );

  const dialog = $('#delete-dialog');
  $('#action-delete').addEventListener('click', () => dialog.showModal());
  dialog.addEventListener('close', async () => {
    if (dialog.returnValue !== 'delete') return $('#action-delete').focus();
    try {
      await call('DELETE', `/api/users/${user.id}`);
      location.assign(`/admin?deleted=${encodeURIComponent(user.email)}`);
    } catch (error) {
      showError(actions, error);
      $('#action-delete').focus();
    }
  });
}

async function showUser(id) {
  wireUserPage();
  await loadUser(id);
  $('#user-view').hidden = false;
  showUserFacts();
  await showUserSessions();
}

// --- the audit log ---

/** A datetime-local value (the browser's time zone) as RFC 3339 in UTC. */
function utc(local) {
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? local : date.toISOString();
}

async function showAudit() {
  $('#audit-view').hidden = false;
  $('#tab-audit').setAttribute('aria-current', 'page');
  const form = $('#audit-filters');
  $('#audit-type').append(...EVENT_TYPES.map((type) => h('option', { value: type }, eventName(type))));
  fillFromAddress(form);
  const query = apiQuery(['user_id', 'type']);
  for (const key of ['since', 'until']) {
    if (params.get(key)) query.set(key, utc(params.get(key)));
  }
  query.set('per_page', '25');
  const audit = pagedTable({
    tbody: $('#audit tbody'),
    button: $('#audit-more'),
    form: $('#audit-footer'),
    row: (event) => eventRow(event, { people: true }),
    empty: 'No event matches.',
  });
  await audit(`/api/audit-events?${query}`);
}

// --- start ---

try {
  const me = await signedIn();
  myId = me.id;
  if (me.role !== 'admin') {
    $('#not-admin-email').textContent = me.email;
    $('#loading').hidden = true;
    $('#not-admin').hidden = false;
  } else {
    if (params.has('user')) await showUser(params.get('user'));
    else if (params.get('view') === 'audit') await showAudit();
    else await showUsers();
    ready();
  }
} catch (error) {
  failed(error);
}
