// The account page: profile, password, two-factor sign-in, sessions, security events.

import { call, get, qrSvg, resendVerification, signOut } from './api.js';
import { eventRow, pagedTable } from './events.js';
import { failed, ready, signedIn } from './page.js';
import { $, h, onSubmit, passwordsMatch, say, showError, time } from './ui.js';

let me;

// --- profile ---

const profileForm = $('#profile-form');

function showProfile() {
  // The header names the user too.
  const who = $('#nav .who');
  if (who) who.textContent = me.name;
  profileForm.elements.name.value = me.name;
  profileForm.elements.username.value = me.username ?? '';
  profileForm.elements.email.value = me.email;
  profileForm.elements.current_password.value = '';
  $('#email-state').textContent = me.email_verified
    ? 'Confirmed.'
    : 'Not confirmed yet: open the link we mailed to this address.';
  $('#resend-verification').hidden = me.email_verified;
}

onSubmit(profileForm, async (form) => {
  const changes = {};
  if (form.name.trim() !== me.name) changes.name = form.name.trim();
  const username = form.username.trim() || null;
  if (username !== me.username) changes.username = username;
  const email = form.email.trim();
  if (email.toLowerCase() !== me.email) {
    changes.email = email;
    changes.current_password = form.current_password;
  }
  if (Object.keys(changes).length === 0) return say(profileForm, 'Nothing has changed.');
  me = (await call('PATCH', '/api/users/me', { body: changes })).data;
  showProfile();
  say(
    profileForm,
    changes.email ? `Saved. A confirmation link is on its way to ${me.email}.` : 'Saved.',
  );
});

$('#resend-verification').addEventListener('click', async () => {
  try {
    await resendVerification(me.email);
    say(profileForm, `A new confirmation link is on its way to ${me.email}.`);
  } catch (error) {
    showError(profileForm, error);
  }
});

// --- password ---

const passwordForm = $('#password-form');

onSubmit(passwordForm, async ({ current_password: current, password }) => {
  if (!passwordsMatch(passwordForm, 'password', 'confirm_password')) return;
  await call('PATCH', '/api/users/me', { body: { password, current_password: current } });
  // The change ended every session, this one too.
  location.assign('/sign-in?reason=password_changed');
});

// --- two-factor sign-in ---

const startForm = $('#mfa-start-form');
const confirmForm = $('#mfa-confirm-form');

function showMfa() {
  $('#mfa-state').textContent = me.mfa_enabled
    ? 'Two-factor sign-in is on.'
    : 'Two-factor sign-in is off.';
  $('#mfa-on').hidden = !me.mfa_enabled;
  startForm.hidden = me.mfa_enabled;
  confirmForm.hidden = true;
}

function showRecoveryCodes(codes) {
  $('#recovery-list').replaceChildren(...codes.map((code) => h('li', {}, h('code', {}, code))));
  const panel = $('#recovery-codes');
  panel.hidden = false;
  panel.focus();
}

$('#recovery-done').addEventListener('click', () => {
  $('#recovery-list').replaceChildren();
  $('#recovery-codes').hidden = true;
  // The button is gone with its panel: the focus goes back to the section.
  $('#mfa-title').focus();
});

onSubmit(startForm, async ({ current_password: current }) => {
  const { data } = await call('POST', '/api/users/me/mfa/totp', {
    body: { current_password: current },
  });
  const svg = await qrSvg(data.otpauth_url);
  $('#mfa-qr').src = `data:image/svg+xml;base64,${btoa(svg)}`;
  $('#mfa-secret').textContent = data.secret;
  startForm.reset();
  startForm.hidden = true;
  confirmForm.hidden = false;
  $('#mfa-code').focus();
});

onSubmit(confirmForm, async ({ code }) => {
  const { data } = await call('POST', '/api/users/me/mfa/totp/confirm', {
    body: { code: code.trim() },
  });
  confirmForm.reset();
  me.mfa_enabled = true;
  showMfa();
  showRecoveryCodes(data.recovery_codes);
  await refreshActivity();
});

$('#mfa-cancel').addEventListener('click', () => {
  confirmForm.reset();
  showMfa();
  $('#mfa-start-password').focus();
});

onSubmit($('#recovery-form'), async ({ current_password: current }, form) => {
  const { data } = await call('POST', '/api/users/me/mfa/recovery-codes', {
    body: { current_password: current },
  });
  form.reset();
  showRecoveryCodes(data.recovery_codes);
  await refreshActivity();
});

onSubmit($('#mfa-disable-form'), async ({ current_password: current }, form) => {
  await call('POST', '/api/users/me/mfa/disable', { body: { current_password: current } });
  form.reset();
  me.mfa_enabled = false;
  showMfa();
  // The section's state line says it is off; this says what can be done now.
  say(startForm, 'Turned off. To set it up again, start here.');
  $('#mfa-title').focus();
  await refreshActivity();
});

// --- sessions ---

const sessionsForm = $('#sessions-form');

/** A short description of a user agent: enough to tell one's browsers apart. */
function browser(userAgent) {
  if (!userAgent) return 'Unknown';
  const names = ['Edg', 'Firefox', 'Chrome', 'Safari', 'curl'];
  const name = names.find((n) => userAgent.includes(n));
  const system = ['Android', 'iPhone', 'Windows', 'Mac OS', 'Linux'].find((s) =>
    userAgent.includes(s),
  );
  if (!name) return userAgent.slice(0, 60);
  return `${name === 'Edg' ? 'Edge' : name}${system ? ` on ${system}` : ''}`;
}

/** Sessions being signed out: their rows, drawn again meanwhile, keep the button off. */
const ending = new Set();
let sessionReads = 0;

async function showSessions() {
  const asked = ++sessionReads;
  const { items } = await get('/api/users/me/sessions');
  // A later read is on its way or drawn already: this older list would undo it.
  if (asked !== sessionReads) return;
  const rows = items.map((session) => {
    const end = h(
      'button',
      {
        type: 'button',
        class: 'small',
        disabled: ending.has(session.id),
        'aria-label': `Sign out ${session.current ? 'this browser' : browser(session.user_agent)}, signed in ${new Date(session.created_at).toLocaleString()}`,
      },
      'Sign out',
    );
    end.addEventListener('click', () => endSession(session, end));
    return h(
      'tr',
      {},
      h('td', { 'data-label': 'Signed in' }, time(session.created_at)),
      h('td', { 'data-label': 'Last active' }, time(session.last_used_at)),
      h('td', { 'data-label': 'IP address' }, session.ip ?? '—'),
      h(
        'td',
        { 'data-label': 'Browser', title: session.user_agent ?? '' },
        // One child, so that the narrow layout keeps the badge beside the name.
        h('span', {}, browser(session.user_agent), session.current ? h('span', { class: 'badge' }, 'this browser') : null),
      ),
      h('td', { class: 'row-action' }, end),
    );
  });
  $('#sessions tbody').replaceChildren(...rows);
}

async function endSession(session, button) {
  button.disabled = true;
  ending.add(session.id);
  try {
    await call('DELETE', `/api/users/me/sessions/${session.id}`);
    ending.delete(session.id);
    if (session.current) {
      await signOut();
      location.assign('/sign-in?reason=signed_out');
      return;
    }
    await refreshActivity();
    say(sessionsForm, 'That session is signed out.');
    // Its row, and the button that had the focus, are gone: keep the focus in the section.
    $('#sessions-title').focus();
  } catch (error) {
    ending.delete(session.id);
    button.disabled = false;
    // Drawn again meanwhile, the row's button is another one, still off.
    if (!button.isConnected) await refreshActivity();
    showError(sessionsForm, error);
  }
}

onSubmit(sessionsForm, async () => {
  await call('DELETE', '/api/users/me/sessions');
  await signOut();
  location.assign('/sign-in?reason=signed_out_everywhere');
});

// --- security events ---

const events = pagedTable({
  tbody: $('#events tbody'),
  button: $('#events-more'),
  form: $('#events-footer'),
  row: (event) => eventRow(event),
  empty: 'No events yet.',
});

/** The sessions and the latest events, as they are now. */
function showActivity() {
  return Promise.all([showSessions(), events('/api/users/me/audit-events?per_page=10')]);
}

/**
 * The same after a change that adds to them. Failing then, it leaves the tables as they
 * were rather than call the change, which succeeded, a failure; a reload shows them.
 */
function refreshActivity() {
  return showActivity().catch(() => {});
}

// --- start ---

try {
  me = await signedIn();
  showProfile();
  showMfa();
  await showActivity();
  ready();
} catch (error) {
  failed(error);
}
