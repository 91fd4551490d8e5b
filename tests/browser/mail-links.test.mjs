// The pages behind the mailed links: confirming an address, and setting a new password,
// each opened from the link read out of the mail the service sent.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { api, assertClean, check, launch, linkInMail, newPage, RUN, signIn, STRICT_BASE_URL } from './lib.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('a verification link confirms the address, and says what to do once used', async () => {
  const email = `vera.${RUN}@example.com`;
  const registered = await api('POST', '/api/auth/register', {
    body: { name: 'Vera Verdi', email, password: 'a fine long password' },
  });
  assert.equal(registered.status, 201);
  const link = await linkInMail(email, 'Confirm your email address');
  assert.ok(link.includes('/verify-email?token='), link);

  const page = await newPage(browser);
  await page.goto(link);
  await page.getByRole('heading', { name: 'Your address is confirmed' }).waitFor();
  await assert.doesNotReject(page.getByText(email).waitFor());
  // The token is gone from the address bar (and so from the history).
  assert.equal(new URL(page.url()).search, '');
  await check(page, 'verify-email-done');

  const again = await newPage(browser);
  await again.goto(link);
  await again.getByRole('heading', { name: 'This link does not work' }).waitFor();
  await check(again, 'verify-email-used');
  // Asking for a new link from there answers alike for any address.
  await again.getByLabel('Email').fill(email);
  await again.getByRole('button', { name: 'Mail me a new link' }).click();
  await again.getByText('If that address still needs confirming').waitFor();
  assertClean(again);

  const login = await api('POST', '/api/auth/login', { body: { email, password: 'a fine long password' } });
  const me = await api('GET', '/api/users/me', { token: login.data.access_token });
  assert.equal(me.data.email_verified, true);
});

test('where sign-in needs a confirmed address, the sign-in page mails a new link', async () => {
  const email = `nora.${RUN}@example.com`;
  const password = 'a fine long password';
  const registered = await api('POST', '/api/auth/register', {
    base: STRICT_BASE_URL,
    body: { name: 'Nora Nuovo', email, password },
  });
  assert.equal(registered.status, 201);
  await linkInMail(email, 'Confirm your email address');

  // That first mail is lost: signing in says what is missing and offers a new link.
  const page = await newPage(browser, STRICT_BASE_URL);
  await signIn(page, email, password);
  await page.getByText('Confirm your email address first').waitFor();
  const resend = page.getByRole('form', { name: 'Confirm your email address' });
  assert.equal(await resend.getByLabel('Email').inputValue(), email);
  await check(page, 'sign-in-unverified');
  await resend.getByRole('button', { name: 'Mail me a new link' }).click();
  await resend.getByText('If that address still needs confirming').waitFor();

  const link = await linkInMail(email, 'Confirm your email address', 2);
  assert.ok(link.startsWith(`${STRICT_BASE_URL}/verify-email?token=`), link);
  await page.goto(link);
  await page.getByRole('heading', { name: 'Your address is confirmed' }).waitFor();
  await signIn(page, email, password);
  await page.waitForURL('**/account');
  assertClean(page);
});

test('a reset link sets a new password, showing the rules and the refusals', async () => {
  const email = `rosa.${RUN}@example.com`;
  await api('POST', '/api/auth/register', {
    body: { name: 'Rosa Rossi', email, password: 'the old password' },
  });

  // Asked for on the sign-in page, as a user would.
  const page = await newPage(browser);
  await page.goto('/sign-in');
  await page.getByRole('button', { name: 'Forgot your password?' }).click();
  await page.getByRole('form', { name: 'Reset your password' }).getByLabel('Email').fill(email);
  await page.getByRole('button', { name: 'Mail me a link' }).click();
  await page.getByText('a link to reset its password is on its way').waitFor();
  await check(page, 'sign-in-forgot');

  const link = await linkInMail(email, 'Reset your password');
  assert.ok(link.includes('/reset-password?token='), link);
  await page.goto(link);
  const form = page.getByRole('heading', { name: 'Set a new password' });
  await form.waitFor();
  assert.equal(new URL(page.url()).search, '');
  // The rules are there before anything is sent.
  await page.getByText('is 8 to 72 bytes long').waitFor();
  await page.getByText('is not one of the 10,000 most common passwords').waitFor();
  await check(page, 'reset-password');

  // Two different passwords: refused here, nothing sent.
  await page.getByLabel('New password', { exact: true }).fill('one new password');
  await page.getByLabel('New password again').fill('another password');
  await page.getByRole('button', { name: 'Set the new password' }).click();
  await page.getByText('must be the same as the new password').waitFor();

  // A common password: the service's own message, next to the field.
  await page.getByLabel('New password', { exact: true }).fill('password123');
  await page.getByLabel('New password again').fill('password123');
  await page.getByRole('button', { name: 'Set the new password' }).click();
  const newPassword = page.getByLabel('New password', { exact: true });
  await page.locator('#new-password-error').waitFor();
  assert.equal(await newPassword.getAttribute('aria-invalid'), 'true');
  assert.match(await page.locator('#new-password-error').innerText(), /common/);
  await check(page, 'reset-password-refused-password');

  // The name of the account: refused too.
  await newPassword.fill('rosa rossi');
  await page.getByLabel('New password again').fill('rosa rossi');
  await page.getByRole('button', { name: 'Set the new password' }).click();
  await page.locator('#new-password-error').waitFor();

  await newPassword.fill('a brand new passphrase');
  await page.getByLabel('New password again').fill('a brand new passphrase');
  await page.getByRole('button', { name: 'Set the new password' }).click();
  await page.getByRole('heading', { name: 'Your password has been changed' }).waitFor();
  await check(page, 'reset-password-done');

  // The link worked once: the page can only learn that by trying it.
  const again = await newPage(browser);
  await again.goto(link);
  await again.getByLabel('New password', { exact: true }).fill('yet another passphrase');
  await again.getByLabel('New password again').fill('yet another passphrase');
  await again.getByRole('button', { name: 'Set the new password' }).click();
  await again.getByRole('heading', { name: 'This link does not work' }).waitFor();
  await check(again, 'reset-password-used');

  // The new password signs in.
  await signIn(again, email, 'a brand new passphrase');
  await again.waitForURL('**/account');
  await again.getByRole('heading', { name: 'Profile' }).waitFor();
  assertClean(again);
});

test('a link page opened without a token says why, not that the link has failed', async () => {
  const page = await newPage(browser);
  for (const [path, why] of [['/reset-password', '#reset-refused-why'], ['/verify-email', '#verify-refused-why']]) {
    await page.goto(path);
    await page.getByRole('heading', { name: 'This link does not work' }).waitFor();
    await page.getByText('without the token the link carries').waitFor();
    assert.equal(await page.locator(why).isHidden(), true, path);
  }
  assertClean(page);
});
