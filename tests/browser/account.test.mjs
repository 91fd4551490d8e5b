// The account page, as one user goes through it: sign-in, profile, two-factor enrolment
// with a code computed from the secret, recovery codes, sessions, security events, the
// sign-in's code step, a password change, and signing out everywhere.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import {
  ADMIN,
  api,
  BASE_URL,
  assertClean,
  check,
  createUser,
  launch,
  login,
  newPage,
  RUN,
  signIn,
  totp,
} from './lib.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('a user manages their own account', async () => {
  const adminToken = await login(ADMIN.email, ADMIN.password);
  const password = 'correct horse battery';
  const user = await createUser(adminToken, { name: 'Ada Byron', email: `ada.${RUN}@example.com` });
  // A second session, elsewhere, to sign out from the page.
  const elsewhere = await login(user.email, password);

  const page = await newPage(browser);
  // Not signed in: the page sends the browser to sign-in, and back after it.
  await page.goto('/account');
  await page.waitForURL('**/sign-in?next=%2Faccount');
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await check(page, 'sign-in');

  // A wrong password: the service's answer, in the live region.
  await page.getByLabel('Email or username').fill(user.email);
  await page.getByLabel('Password', { exact: true }).fill('not the password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('alert').filter({ hasText: 'username or password is wrong' }).waitFor();
  await check(page, 'sign-in-refused');

  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL('**/account');
  await page.getByRole('heading', { name: 'Profile' }).waitFor();
  assert.equal(await page.locator('#profile-name').inputValue(), 'Ada Byron');
  // The whole page, keyboard first: the skip link is the first stop.
  await page.keyboard.press('Tab');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Skip to content');
  await check(page, 'account');

  // A page load keeps the session (the cookie), without a new sign-in.
  await page.reload();
  await page.getByRole('heading', { name: 'Profile' }).waitFor();
  assert.equal(await page.locator('#profile-name').inputValue(), 'Ada Byron');

  // --- profile ---
  await page.locator('#profile-name').fill('Ada Lovelace');
  await page.locator('#profile-username').fill(`ada_${RUN}`);
  await page.getByRole('button', { name: 'Save profile' }).click();
  await page.locator('#profile-form [data-status]').filter({ hasText: 'Saved.' }).waitFor();
  // The header names the user by the new name too.
  assert.equal(await page.locator('#nav .who').innerText(), 'Ada Lovelace');

  // A new address needs the current password: refused without it, next to the field.
  // Longer than its field at 375 px: the field scrolls it, and nothing sticks out.
  const newEmail = `ada.augusta.king.lovelace.${RUN}@example.com`;
  await page.locator('#profile-email').fill(newEmail);
  await page.getByRole('button', { name: 'Save profile' }).click();
  await page.locator('#profile-form .status.error').waitFor();
  // The field is marked, says why, and has the focus.
  const current = page.locator('#profile-current-password');
  assert.equal(await current.getAttribute('aria-invalid'), 'true');
  await page.locator('#profile-current-password-error').filter({ hasText: 'Current password is missing or wrong.' }).waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.id), 'profile-current-password');
  await page.locator('#profile-current-password').fill(password);
  await page.getByRole('button', { name: 'Save profile' }).click();
  await page.getByText(`A confirmation link is on its way to ${newEmail}`).waitFor();
  await page.getByText('Not confirmed yet').waitFor();
  const me = await api('GET', `/api/users/${user.id}`, { token: adminToken });
  assert.equal(me.data.name, 'Ada Lovelace');
  assert.equal(me.data.username, `ada_${RUN}`);
  assert.equal(me.data.email, newEmail);

  // --- two-factor sign-in ---
  await page.locator('#mfa-start-password').fill(password);
  await page.getByRole('button', { name: 'Set up two-factor sign-in' }).click();
  const qr = page.getByRole('img', { name: /QR code/ });
  await qr.waitFor();
  assert.ok(await qr.evaluate((img) => img.complete && img.naturalWidth > 0), 'the QR code shows');
  const secret = (await page.locator('#mfa-secret').innerText()).trim();
  assert.match(secret, /^[A-Z2-7]+=*$/);
  await check(page, 'account-mfa-enrolment');
  // A wrong code first: refused on the field.
  await page.getByLabel('Code from the app').fill(totp(secret) === '000000' ? '111111' : '000000');
  await page.getByRole('button', { name: 'Turn on two-factor sign-in' }).click();
  await page.locator('#mfa-code-error').waitFor();
  await page.getByLabel('Code from the app').fill(totp(secret));
  await page.getByRole('button', { name: 'Turn on two-factor sign-in' }).click();
  const codes = page.locator('#recovery-list li');
  await page.getByRole('heading', { name: 'Your recovery codes' }).waitFor();
  assert.equal(await codes.count(), 10);
  const recoveryCodes = await codes.allInnerTexts();
  await check(page, 'account-recovery-codes');
  await page.getByRole('button', { name: 'I have kept them' }).click();
  assert.equal(await codes.count(), 0, 'the codes are shown once');
  await page.getByText('Two-factor sign-in is on.').waitFor();

  // --- sessions ---
  const rows = page.locator('#sessions tbody tr');
  assert.equal(await rows.count(), 2);
  const other = rows.filter({ hasNotText: 'this browser' });
  await other.getByRole('button', { name: /^Sign out/ }).click();
  await page.getByText('That session is signed out.').waitFor();
  // Its button is gone with its row; the focus stays in the section, not lost to the page.
  assert.equal(await page.evaluate(() => document.activeElement.id), 'sessions-title');
  assert.equal(await rows.count(), 1);
  await rows.filter({ hasText: 'this browser' }).waitFor();
  assert.equal((await api('GET', '/api/users/me', { token: elsewhere })).status, 401);

  // --- security events: shown as they happen, without a reload ---
  const events = page.locator('#events tbody');
  await events.getByText('Two-factor sign-in turned on').waitFor();
  await events.getByText('Signed in').first().waitFor();
  await events.getByText('Signed out').first().waitFor();
  await check(page, 'account-after-changes');

  // --- sign out, and in again through the code step ---
  await page.getByRole('button', { name: 'Sign out', exact: true }).click();
  await page.waitForURL('**/sign-in?reason=signed_out');
  await page.getByText('You have signed out.').waitFor();
  await page.goto('/account');
  await page.waitForURL('**/sign-in?next=%2Faccount');

  await signIn(page, `ada_${RUN}`, password);
  await page.getByRole('heading', { name: 'Two-factor sign-in' }).waitFor();
  await check(page, 'sign-in-code');
  await page.getByLabel('Code').fill(totp(secret, 1));
  await page.getByRole('button', { name: 'Verify' }).click();
  await page.waitForURL('**/account');
  await page.getByRole('heading', { name: 'Profile' }).waitFor();

  // --- password ---
  const newPassword = 'a newer longer passphrase';
  await page.locator('#password-current').fill(password);
  await page.locator('#password-new').fill('ada lovelace');
  await page.locator('#password-confirm').fill('ada lovelace');
  await page.getByRole('button', { name: 'Change password' }).click();
  await page.locator('#password-new-error').waitFor();
  await page.locator('#password-new').fill(newPassword);
  await page.locator('#password-confirm').fill(newPassword);
  await page.getByRole('button', { name: 'Change password' }).click();
  await page.waitForURL('**/sign-in?reason=password_changed');
  await page.getByText('Your password has been changed').waitFor();

  // The new password, and a recovery code for the second step.
  await signIn(page, newEmail, newPassword);
  await page.getByLabel('Code').fill(recoveryCodes[0]);
  await page.getByRole('button', { name: 'Verify' }).click();
  await page.waitForURL('**/account');
  await page.getByRole('heading', { name: 'Profile' }).waitFor();

  // --- two-factor sign-in off again ---
  await page.locator('#mfa-disable-password').fill(newPassword);
  await page.getByRole('button', { name: 'Turn off two-factor sign-in' }).click();
  await page.getByText('Two-factor sign-in is off.').first().waitFor();
  assert.equal((await api('GET', `/api/users/${user.id}`, { token: adminToken })).data.mfa_enabled, false);
  await page.locator('#events tbody').getByText('Two-factor sign-in turned off').waitFor();

  // --- everywhere ---
  await page.getByRole('button', { name: 'Sign out everywhere' }).click();
  await page.waitForURL('**/sign-in?reason=signed_out_everywhere');
  await page.goto('/account');
  await page.waitForURL('**/sign-in?next=%2Faccount');
  assertClean(page);
});

test('sign-in goes on only to a path of this site', async () => {
  const adminToken = await login(ADMIN.email, ADMIN.password);
  const user = await createUser(adminToken, { name: 'Nemo', email: `nemo.${RUN}@example.com` });
  const page = await newPage(browser);
  const landed = (pathname, search = '') => (url) =>
    url.origin === new URL(BASE_URL).origin && url.pathname === pathname && url.search === search;

  // Browsers drop tabs and line breaks from an address: "/\t/x" is "//x", another site.
  await signIn(page, user.email, 'correct horse battery', '/\t/example.invalid/');
  await page.waitForURL(landed('/account'));
  // Signed in, the page goes on at once: the same judgement on that path.
  for (const elsewhere of ['/\n/example.invalid/', '//example.invalid/', '/\\example.invalid/',
    'https://example.invalid/', 'javascript:alert(1)', '//[']) {
    await page.goto(`/sign-in?next=${encodeURIComponent(elsewhere)}`);
    await page.waitForURL(landed('/account'));
  }
  // Paths that resolve to "//example.invalid/": followed whole, they stay on this site (and
  // find no page there), never leave it.
  for (const dotted of ['/.//example.invalid/', '/a/..//example.invalid/', '/%2e//example.invalid/']) {
    await page.goto(`/sign-in?next=${encodeURIComponent(dotted)}`);
    await page.waitForURL(landed('//example.invalid/'));
  }
  await page.goto(`/sign-in?next=${encodeURIComponent('/account?tab=sessions')}`);
  await page.waitForURL(landed('/account', '?tab=sessions'));
  assertClean(page);
});

test('sign-in leaves no page to come back to, marks its one field, and starts again when its code step has ended', async () => {
  const adminToken = await login(ADMIN.email, ADMIN.password);
  const password = 'correct horse battery';
  const user = await createUser(adminToken, { name: 'Grace', email: `grace.${RUN}@example.com` });
  let page = await newPage(browser);

  // Sent to sign-in and back: each takes the place of the page before, so Back leaves.
  await page.goto('/sign-in?reason=signed_out');
  await page.goto('/account');
  await page.waitForURL('**/sign-in?next=%2Faccount');
  // Too short for a username: the one field for both is marked, and has the focus.
  await page.getByLabel('Email or username').fill('ab');
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#login-error').waitFor();
  assert.equal(await page.locator('#login').getAttribute('aria-invalid'), 'true');
  assert.equal(await page.evaluate(() => document.activeElement.id), 'login');
  await page.getByLabel('Email or username').fill(user.email);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL('**/account');
  await page.getByRole('heading', { name: 'Profile' }).waitFor();
  await page.goBack();
  await page.waitForURL('**/sign-in?reason=signed_out');
  // A locked account: the page says when to try again (LOCKOUT_SECS is 900).
  const locked = await createUser(adminToken, { name: 'Lockie', email: `lockie.${RUN}@example.com` });
  for (let i = 0; i < 3; i += 1) {
    await api('POST', '/api/auth/login', { body: { email: locked.email, password: 'not the password' } });
  }
  await page.getByLabel('Email or username').fill(locked.email);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByText(/locked for a while\. Try again in 1[45] minutes/).waitFor();

  // Two-factor on, by the API.
  const token = await login(user.email, password);
  const started = await api('POST', '/api/users/me/mfa/totp', { token, body: { current_password: password } });
  assert.equal(started.status, 200, JSON.stringify(started.data));
  const { secret } = started.data;
  const confirmed = await api('POST', '/api/users/me/mfa/totp/confirm', { token, body: { code: totp(secret) } });
  assert.equal(confirmed.status, 200, JSON.stringify(confirmed.data));
  // In a browser of its own: this one is signed in, and sign-in would go straight on.
  await page.context().close();
  page = await newPage(browser);
  const firstStep = page.waitForResponse((response) => response.url().endsWith('/web/session'));
  await signIn(page, user.email, password);
  const { mfa_token: mfaToken } = await (await firstStep).json();
  await page.getByRole('heading', { name: 'Two-factor sign-in' }).waitFor();
  // A wrong code: said so on the code step, whose button keeps the focus.
  // A code of no step the service accepts (the one before, now, or the one after).
  const accepted = [-1, 0, 1, 2].map((offset) => totp(secret, offset));
  await page.getByLabel('Code').fill(['000000', '111111', '222222', '333333', '444444'].find((code) => !accepted.includes(code)));
  await page.getByRole('button', { name: 'Verify' }).click();
  await page.getByText('That code is wrong or was used already.').waitFor();
  assert.equal(await page.evaluate(() => document.activeElement.textContent.trim()), 'Verify');
  // The same second step finished elsewhere (as by a second click): no code can help the
  // page's now, so it says so and goes back to the first step.
  const elsewhere = await api('POST', '/api/auth/login/mfa', { body: { mfa_token: mfaToken, code: totp(secret, 1) } });
  assert.equal(elsewhere.status, 200, JSON.stringify(elsewhere.data));
  await page.getByLabel('Code').fill(totp(secret, 1));
  await page.getByRole('button', { name: 'Verify' }).click();
  await page.getByText('This sign-in has ended').waitFor();
  assert.equal(await page.locator('#code-step').isHidden(), true);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'login');
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByLabel('Code').fill(confirmed.data.recovery_codes[0]);
  await page.getByRole('button', { name: 'Verify' }).click();
  await page.waitForURL('**/account');
  assertClean(page);
});

test('a page that finds no session logs nothing to the console, and a session that is over is asked for once', async () => {
  const adminToken = await login(ADMIN.email, ADMIN.password);
  const email = `quiet.${RUN}@example.com`;
  await createUser(adminToken, { name: 'Quiet', email });
  const page = await newPage(browser);
  const logged = [];
  page.on('console', (message) => {
    if (message.type() === 'error') logged.push(message.text());
  });
  const settled = async (path) => {
    await page.goto(path);
    await page.getByLabel('Email or username').waitFor();
    await page.waitForLoadState('networkidle');
  };

  // No cookie: the page's look for a session is not a failed request.
  await settled('/sign-in');
  assert.deepEqual(logged, []);

  // Signed in, then signed out everywhere from elsewhere: the next page load is refused
  // once (the one error), and the cookie goes with that answer.
  await signIn(page, email, 'correct horse battery');
  // The page loaded, its reads all answered: none of them meets the ended session.
  await page.getByRole('heading', { name: 'Profile' }).waitFor();
  await page.waitForLoadState('networkidle');
  const token = await login(email, 'correct horse battery');
  await api('DELETE', '/api/users/me/sessions', { token });
  await page.goto('/account');
  await page.waitForURL((url) => url.pathname === '/sign-in');
  await page.getByLabel('Email or username').waitFor();
  await page.waitForLoadState('networkidle');
  assert.equal(logged.length, 1, logged.join('\n'));
  assert.match(logged[0], /401/);
  const cookies = await page.context().cookies();
  assert.deepEqual(cookies.filter((c) => c.name === 'user_service_session'), []);
  await settled('/sign-in');
  assert.equal(logged.length, 1, logged.join('\n'));
  assertClean(page);
});
