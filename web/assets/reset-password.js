// The page a mailed reset link opens: the new password twice, then a clear result.

import { call } from './api.js';
import { $, onSubmit, passwordsMatch, takeToken } from './ui.js';

const token = takeToken();
const form = $('#reset-form');

function refused() {
  form.hidden = true;
  $('#reset-refused').hidden = false;
  $('#refused-title').focus();
}

if (!token) {
  // Not a link that failed: say why there is none, not why one fails.
  $('#reset-no-token').hidden = false;
  $('#reset-refused-why').hidden = true;
  refused();
} else {
  form.hidden = false;
  $('#new-password').focus();
}

onSubmit(form, async ({ new_password: newPassword }) => {
  if (!passwordsMatch(form, 'new_password', 'confirm_password')) return;
  try {
    await call('POST', '/api/auth/reset-password', { body: { token, new_password: newPassword } });
  } catch (error) {
    // 401: the token is unknown, used or expired; anything else (a refused password) is
    // shown on the form, and the token stays usable.
    if (error.status === 401) return refused();
    throw error;
  }
  form.hidden = true;
  $('#reset-done').hidden = false;
  $('#done-title').focus();
});
