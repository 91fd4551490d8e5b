// What the signed-in pages share: resuming the session, the signed-in user, the navigation.

import { get, resume, signOut, toSignIn } from './api.js';
import { $, h, sayOnPage } from './ui.js';

/**
 * Resumes the session from its cookie (or sends the browser to sign-in) and fills the
 * navigation. Resolves to the signed-in user, or never when the page is left.
 */
export async function signedIn() {
  if (!(await resume())) {
    toSignIn();
    return new Promise(() => {});
  }
  const me = await get('/api/users/me');
  const nav = $('#nav');
  const here = location.pathname;
  const link = (href, text) =>
    h('a', { href, 'aria-current': here === href ? 'page' : false }, text);
  const signOutButton = h('button', { type: 'button', class: 'link', id: 'sign-out' }, 'Sign out');
  signOutButton.addEventListener('click', async () => {
    signOutButton.disabled = true;
    try {
      await signOut();
    } finally {
      location.assign('/sign-in?reason=signed_out');
    }
  });
  nav.replaceChildren(
    ...[
      h('span', { class: 'who' }, me.name),
      link('/account', 'Account'),
      me.role === 'admin' ? link('/admin', 'Admin console') : null,
      signOutButton,
    ].filter(Boolean),
  );
  nav.hidden = false;
  return me;
}

/** Shows the page's content once it is ready (it starts hidden behind "Loading"). */
export function ready() {
  $('#loading').hidden = true;
  $('#content').hidden = false;
}

/** Shows an error that stops the whole page, with a way to start it afresh (an address
 * with a bad filter, or a user since deleted, fails again on a reload). */
export function failed(error) {
  $('#loading').hidden = true;
  sayOnPage(`Something went wrong: ${error.message}`, 'error');
  $('#page-status').after(h('p', {}, h('a', { href: location.pathname }, 'Open this page afresh')));
}
