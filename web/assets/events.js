// Tables that page through the API with `after` = the previous page's `next_cursor`, and the
// rows of the audit log, which the account page and the admin console both show.

import { get } from './api.js';
import { h, showError, time, when } from './ui.js';

/** What each event type means, in words. */
const EVENT_NAMES = {
  'user.registered': 'Registered',
  'user.created': 'Account created by an admin',
  'user.updated': 'Account changed',
  'user.deleted': 'Account deleted',
  'user.activated': 'Account activated',
  'user.deactivated': 'Account deactivated',
  'user.unlocked': 'Sign-in lock lifted',
  'login.succeeded': 'Signed in',
  'login.failed': 'Sign-in failed',
  'login.locked': 'Sign-in locked after failures',
  'mfa.enabled': 'Two-factor sign-in turned on',
  'mfa.disabled': 'Two-factor sign-in turned off',
  'mfa.failed': 'Wrong two-factor code',
  'password.changed': 'Password changed',
  'password.reset_requested': 'Password reset asked for',
  'password.reset': 'Password reset',
  'email.verified': 'Email address confirmed',
  'session.ended': 'Signed out',
  'refresh.reused': 'Session ended: a used token came back',
};

export const EVENT_TYPES = Object.keys(EVENT_NAMES);

export function eventName(type) {
  return EVENT_NAMES[type] ?? type;
}

/** A detail's value; a timestamp (such as the end of a lock) in local time. */
function readable(value) {
  const text = String(value);
  return /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(text) ? when(text) : text;
}

function details(event) {
  const entries = Object.entries(event.details ?? {});
  if (entries.length === 0) return '—';
  return h(
    'dl',
    { class: 'details' },
    entries.map(([key, value]) => [
      h('dt', {}, key.replaceAll('_', ' ')),
      h('dd', {}, Array.isArray(value) ? value.join(', ') : readable(value)),
    ]),
  );
}

/** The names of users by id, each asked for once per page. */
const names = new Map();

function nameOf(id) {
  if (!names.has(id)) {
    names.set(
      id,
      get(`/api/users/${id}`).then(
        (user) => user.name,
        () => null,
      ),
    );
  }
  return names.get(id);
}

/**
 * A link to a user's page in the admin console, or a dash. It shows the user's name once
 * known; a user since deleted keeps the id.
 */
function userLink(id) {
  if (!id) return '—';
  const link = h('a', { href: `/admin?user=${id}`, class: 'mono' }, id);
  nameOf(id).then((name) => {
    if (name === null) return;
    link.textContent = name;
    link.className = '';
  });
  return link;
}

/** A row of the audit log; the admin console adds who did it and to whom. */
export function eventRow(event, { people = false } = {}) {
  return h(
    'tr',
    {},
    h('td', { 'data-label': 'When' }, time(event.at)),
    h('td', { 'data-label': 'What' }, eventName(event.type), h('span', { class: 'mono hint' }, ` ${event.type}`)),
    people ? h('td', { 'data-label': 'By' }, userLink(event.actor_id)) : null,
    people ? h('td', { 'data-label': 'User' }, userLink(event.subject_id)) : null,
    h('td', { 'data-label': 'IP address' }, event.ip ?? '—'),
    h('td', { 'data-label': 'Details' }, details(event)),
  );
}

/**
 * A table filled page by page: `load(path)` shows the first page of `path` (a list endpoint
 * with its query), and `button` appends the next one while there is one. Errors go to
 * `form`'s live region (any element with a `[data-status]`). A table loaded again drops any
 * page still on its way, and hides the button until its first page is in: the table never
 * shows a page twice, nor an older page after a newer first one.
 */
export function pagedTable({ tbody, button, form, row, empty }) {
  let path = null;
  let cursor = null;
  let loads = 0;

  /** The next page, or null when a load began after it was asked for. */
  async function page() {
    const asked = loads;
    const separator = path.includes('?') ? '&' : '?';
    const data = await get(cursor ? `${path}${separator}after=${encodeURIComponent(cursor)}` : path);
    if (asked !== loads) return null;
    cursor = data.next_cursor;
    button.hidden = !cursor;
    return data;
  }

  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const data = await page();
      if (data) tbody.append(...data.items.map(row));
    } catch (error) {
      showError(form, error);
    } finally {
      button.disabled = false;
    }
    // Disabled, it lost the focus; the last page hides it: then the table keeps the focus.
    if (!button.hidden) button.focus();
    else tbody.closest('table').focus();
  });

  return async function load(newPath) {
    loads += 1;
    path = newPath;
    cursor = null;
    button.hidden = true;
    const data = await page();
    if (!data) return null;
    const columns = tbody.closest('table').querySelectorAll('thead th').length;
    tbody.replaceChildren(
      ...(data.items.length
        ? data.items.map(row)
        : [h('tr', {}, h('td', { colspan: columns, class: 'empty' }, empty))]),
    );
    return data;
  };
}
