// Sign-in, with the MFA step when the account has it on, and "forgot password".

import { call, resendVerification, resume, signIn, signInWithCode } from './api.js';
import { $, clear, onSubmit, say, sayOnPage } from './ui.js';

const params = new URLSearchParams(location.search);

/**
 * Where to go after signing in: a path of this site only, never another origin. Judged on
 * the address as the browser resolves it, not on the text: the browser drops tabs and line
 * breaks first, so "/\t/evil.example" would be "//evil.example", another site. The whole
 * resolved address is followed, never its path alone: "/.//evil.example" resolves to the
 * path "//evil.example", which on its own would name another site too.
 */
function next() {
  const target = params.get('next') || '';
  try {
    const url = new URL(target, location.origin);
    if (target.startsWith('/') && url.origin === location.origin) return url.href;
  } catch {
    // Not an address at all ("//[").
  }
  return '/account';
}

/** On to where the visitor was going, in place of sign-in in the history. */
function done() {
  location.replace(next());
}

const passwordStep = $('#password-step');
const codeStep = $('#code-step');
let mfaToken = null;

/**
 * The service's terse refusals, said the way a sign-in page says them; `canResend` when the
 * page offers a new confirmation link below.
 */
function plainly(error, wrong, { canResend = false } = {}) {
  if (error.status === 401) error.message = wrong;
  if (error.kind === 'login-locked') {
    const minutes = Math.ceil(Number(error.headers?.get('Retry-After')) / 60);
    const when = minutes > 0 ? `in ${minutes} minute${minutes === 1 ? '' : 's'}` : 'later';
    error.message = `Too many failed attempts: this account is locked for a while. Try again ${when}, or reset your password.`;
  }
  if (error.kind === 'email-not-verified') {
    error.message = `Confirm your email address first: open the link we mailed to you${canResend ? ', or ask for a new one below' : ''}.`;
  }
  return error;
}

const signInForm = $('#sign-in-form');
const resendForm = $('#resend-form');

onSubmit(signInForm, async ({ email, password }) => {
  const login = email.trim();
  const credentials = login.includes('@') ? { email: login, password } : { username: login, password };
  resendForm.hidden = true;
  const outcome = await signIn(credentials).catch((error) => {
    // One field takes both: an error about the username is about it too.
    for (const fieldError of error.fieldErrors ?? []) {
      if (fieldError.field === 'username') fieldError.field = 'email';
    }
    const canResend = error.kind === 'email-not-verified';
    if (canResend) offerNewLink(login);
    throw plainly(error, 'The email address, username or password is wrong.', { canResend });
  });
  if (!outcome.mfaToken) return done();
  mfaToken = outcome.mfaToken;
  passwordStep.hidden = true;
  codeStep.hidden = false;
  $('#code').focus();
});

/** The second step has ended (too many wrong codes, or too long): back to the first. */
function startAgain() {
  mfaToken = null;
  $('#code-form').reset();
  codeStep.hidden = true;
  passwordStep.hidden = false;
  signInForm.elements.password.value = '';
  say(
    signInForm,
    'This sign-in has ended: too many wrong codes, or it took longer than five minutes. Sign in again.',
    'error',
  );
  $('#login').focus();
}

onSubmit($('#code-form'), async ({ code }) => {
  try {
    await signInWithCode(mfaToken, code.replace(/\s+/g, ''));
  } catch (error) {
    if (error.kind === 'mfa-token-invalid') return startAgain();
    throw plainly(error, 'That code is wrong or was used already. Codes change every 30 seconds.');
  }
  done();
});

/** A way to a new confirmation link, for the address signed in with (a username is no address). */
function offerNewLink(login) {
  resendForm.reset();
  clear(resendForm);
  if (login.includes('@')) resendForm.elements.email.value = login;
  resendForm.hidden = false;
}

onSubmit(resendForm, async ({ email }, form) => {
  await resendVerification(email);
  say(form, 'If that address still needs confirming, a new link is on its way. Check your mail.');
});

const forgotToggle = $('#forgot-toggle');
const forgotForm = $('#forgot-form');
forgotToggle.addEventListener('click', () => {
  const open = forgotForm.hidden;
  forgotForm.hidden = !open;
  forgotToggle.setAttribute('aria-expanded', String(open));
  if (open) $('#forgot-email').focus();
});

onSubmit(forgotForm, async ({ email }, form) => {
  await call('POST', '/api/auth/forgot-password', { body: { email: email.trim() } });
  say(form, 'If that address belongs to an account, a link to reset its password is on its way. Check your mail.');
});

/** Why the page was sent here, said at the top. */
const REASONS = {
  signed_out: 'You have signed out.',
  signed_out_everywhere: 'You have signed out everywhere. Sign in again to carry on here.',
  password_changed: 'Your password has been changed, and every session signed out. Sign in with the new password.',
};

const reason = REASONS[params.get('reason')];
if (reason) {
  sayOnPage(reason);
} else if (await resume().catch(() => false)) {
  // Already signed in (another tab, or the back button): carry on.
  done();
}
