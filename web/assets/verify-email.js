// The page a mailed verification link opens: it confirms the address at once and says so,
// or says what to do when the link no longer works.

import { call, resendVerification } from './api.js';
import { $, onSubmit, say, sayOnPage, takeToken } from './ui.js';

const token = takeToken();

function show(id, heading) {
  $('#verify-working').hidden = true;
  $(id).hidden = false;
  $(heading).focus();
}

async function verify() {
  if (!token) {
    // Not a link that failed: say why there is none, not why one fails.
    $('#verify-no-token').hidden = false;
    $('#verify-refused-why').hidden = true;
    return show('#verify-refused', '#not-verified-title');
  }
  try {
    const { data: user } = await call('POST', '/api/auth/verify-email', { body: { token } });
    $('#verified-email').textContent = user.email;
    show('#verify-done', '#verified-title');
  } catch (error) {
    if (error.status === 401) return show('#verify-refused', '#not-verified-title');
    $('#verify-working').hidden = true;
    sayOnPage(`The address could not be confirmed: ${error.message} Try the link again in a moment.`, 'error');
  }
}

onSubmit($('#resend-form'), async ({ email }, form) => {
  await resendVerification(email);
  say(form, 'If that address still needs confirming, a new link is on its way. Check your mail.');
});

verify();
