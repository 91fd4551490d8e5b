// The admin console: the user list (search, filters, each sort, paging by cursor), a
// user's page (edit, deactivate and activate, unlock, reset two-factor sign-in, end
// sessions, delete behind a confirmation), the audit log and its filters; and a user who
// is not an admin, told so plainly.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { ADMIN, api, assertClean, check, createUser, launch, login, newPage, RUN, signIn, totp } from './lib.mjs';

const PASSWORD = 'correct horse battery';
let browser;
let adminToken;
// Names that sort in a known order: "Seed 01" … "Seed 22", plus the special users below.
const seeds = [];
let locked;
let twoFactor;

before(async () => {
  browser = await launch();
  adminToken = await login(ADMIN.email, ADMIN.password);
  for (let i = 1; i <= 22; i++) {
    const n = String(i).padStart(2, '0');
    seeds.push(
      await createUser(adminToken, {
        name: `Seed ${n} ${RUN}`,
        email: `seed.${n}.${RUN}@example.com`,
        // Every fourth one deactivated, the fifth an admin.
        active: i % 4 !== 0,
        role: i === 5 ? 'admin' : 'user',
      }),
    );
  }
  // Locked by failed logins (the tests run with LOCKOUT_THRESHOLD=3).
  locked = await createUser(adminToken, { name: `Locked ${RUN}`, email: `locked.${RUN}@example.com` });
  for (let i = 0; i < 3; i++) {
    await api('POST', '/api/auth/login', { body: { email: locked.email, password: 'wrong password' } });
  }
  // Two-factor sign-in on, and signed in somewhere.
  twoFactor = await createUser(adminToken, { name: `Mfa ${RUN}`, email: `mfa.${RUN}@example.com` });
  const token = await login(twoFactor.email, PASSWORD);
  const started = await api('POST', '/api/users/me/mfa/totp', { token, body: { current_password: PASSWORD } });
  const confirmed = await api('POST', '/api/users/me/mfa/totp/confirm', {
    token,
    body: { code: totp(started.data.secret) },
  });
  assert.equal(confirmed.status, 200);
});

after(async () => {
  await browser?.close();
});

/** The names in the user table, top to bottom. */
async function names(page) {
  return page.locator('#users tbody tr td:first-child').allInnerTexts();
}

async function search(page, { q = RUN, role = '', active = '', sort = '-created_at', perPage = '20' } = {}) {
  const filters = page.locator('#user-filters');
  await filters.getByLabel('Search').fill(q);
  await filters.getByLabel('Role').selectOption(role);
  await filters.getByLabel('Status').selectOption(active);
  await filters.getByLabel('Sort by').selectOption(sort);
  await filters.getByLabel('Per page').selectOption(perPage);
  await filters.getByRole('button', { name: 'Search' }).click();
  await page.waitForURL((url) => url.searchParams.get('q') === q);
  await page.locator('#users-summary').filter({ hasText: /Users|No users/ }).waitFor();
}

test('the user list searches, filters, sorts and pages', async () => {
  const page = await newPage(browser);
  await signIn(page, ADMIN.email, ADMIN.password, '/admin');
  await page.waitForURL('**/admin');
  await page.getByRole('heading', { name: 'Users' }).waitFor();
  await check(page, 'admin-users');

  // Everyone of this run: 22 seeds, the locked user, the two-factor user.
  await search(page);
  assert.match(await page.locator('#users-summary').innerText(), /Users 1 to 20 of 24\./);
  // Newest first by default.
  assert.equal((await names(page))[0], `Mfa ${RUN}`);
  await check(page, 'admin-users-search');

  // Each sort.
  await search(page, { sort: 'name' });
  assert.equal((await names(page))[0], `Locked ${RUN}`);
  await search(page, { sort: '-name' });
  assert.equal((await names(page))[0], `Seed 22 ${RUN}`);
  await search(page, { sort: 'email' });
  assert.equal((await names(page))[0], `Locked ${RUN}`);
  await search(page, { sort: '-email' });
  assert.equal((await names(page))[0], `Seed 22 ${RUN}`);
  await search(page, { sort: 'created_at' });
  assert.equal((await names(page))[0], `Seed 01 ${RUN}`);

  // Filters.
  await search(page, { role: 'admin' });
  assert.deepEqual(await names(page), [`Seed 05 ${RUN}`]);
  await search(page, { active: 'false', sort: 'name' });
  assert.deepEqual(await names(page), [4, 8, 12, 16, 20].map((n) => `Seed ${String(n).padStart(2, '0')} ${RUN}`));
  await search(page, { q: `nobody-${RUN}` });
  await page.getByText('No user matches.').waitFor();

  // Paging by cursor, 10 at a time, oldest first.
  await search(page, { sort: 'created_at', perPage: '10' });
  assert.match(await page.locator('#users-summary').innerText(), /Users 1 to 10 of 24\./);
  await page.getByRole('link', { name: 'Next page' }).click();
  await page.waitForURL((url) => url.searchParams.has('after'));
  await page.locator('#users-summary').filter({ hasText: 'Users 11 to 20 of 24.' }).waitFor();
  assert.equal((await names(page))[0], `Seed 11 ${RUN}`);
  await check(page, 'admin-users-page-2');
  await page.getByRole('link', { name: 'Next page' }).click();
  await page.locator('#users-summary').filter({ hasText: 'Users 21 to 24 of 24.' }).waitFor();
  assert.deepEqual((await names(page)).slice(0, 2), [`Seed 21 ${RUN}`, `Seed 22 ${RUN}`]);
  assert.equal(await page.getByRole('link', { name: 'Next page' }).count(), 0);
  await check(page, 'admin-users-page-3');
  // Back a page at a time (the second page links to the first as "First page" alone).
  await page.getByRole('link', { name: 'Previous page' }).click();
  await page.locator('#users-summary').filter({ hasText: 'Users 11 to 20 of 24.' }).waitFor();
  assert.equal((await names(page))[0], `Seed 11 ${RUN}`);
  assert.equal(await page.getByRole('link', { name: 'Previous page' }).count(), 0);
  await page.getByRole('link', { name: 'First page' }).click();
  await page.locator('#users-summary').filter({ hasText: 'Users 1 to 10 of 24.' }).waitFor();

  // An address the list refuses: said, with a way to the page without it.
  await page.goto('/admin?per_page=500');
  await page.getByText('Something went wrong').waitFor();
  await page.getByRole('link', { name: 'Open this page afresh' }).click();
  await page.waitForURL((url) => url.pathname === '/admin' && url.search === '');
  await page.locator('#users-summary').waitFor();

  // The admin's own page warns before a delete.
  const self = await api('GET', '/api/users/me', { token: await login(ADMIN.email, ADMIN.password) });
  await page.goto(`/admin?user=${self.data.id}`);
  await page.getByRole('button', { name: 'Delete user…' }).click();
  const dialog = page.getByRole('dialog', { name: 'Delete this user?' });
  await dialog.getByText('This is your own account').waitFor();
  await dialog.getByRole('button', { name: 'Keep the user' }).click();
  await dialog.waitFor({ state: 'hidden' });
  assertClean(page);
});

test("a user's page edits, deactivates, unlocks, resets two-factor, ends sessions and deletes", async () => {
  const page = await newPage(browser);
  await signIn(page, ADMIN.email, ADMIN.password, `/admin?q=${RUN}&sort=name`);
  await page.getByRole('link', { name: `Seed 03 ${RUN}` }).click();
  const heading = page.getByRole('heading', { name: `Seed 03 ${RUN}`, level: 2 });
  await heading.waitFor();
  await check(page, 'admin-user');

  // Edit: every field the console offers.
  const target = seeds[2];
  const form = page.locator('#user-form');
  await form.getByLabel('Name', { exact: true }).fill(`Renamed ${RUN}`);
  await form.getByLabel('Username').fill(`renamed_${RUN}`);
  await form.getByLabel('Email', { exact: true }).fill(`renamed.${RUN}@example.com`);
  await form.getByLabel('Role').selectOption('admin');
  await form.getByLabel('Email address confirmed').check();
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.locator('#user-form [data-status]').filter({ hasText: 'Saved.' }).waitFor();
  await page.getByRole('heading', { name: `Renamed ${RUN}`, level: 2 }).waitFor();
  let stored = (await api('GET', `/api/users/${target.id}`, { token: adminToken })).data;
  assert.equal(stored.name, `Renamed ${RUN}`);
  assert.equal(stored.username, `renamed_${RUN}`);
  assert.equal(stored.email, `renamed.${RUN}@example.com`);
  assert.equal(stored.role, 'admin');
  assert.equal(stored.email_verified, true);

  // A refused edit: the field error shows next to its field.
  await form.getByLabel('Username').fill('no spaces allowed');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.locator('#edit-username-error').waitFor();
  await check(page, 'admin-user-refused-edit');

  // Someone else changes the user meanwhile: the console says so instead of overwriting.
  await api('PATCH', `/api/users/${target.id}`, { token: adminToken, body: { name: `Elsewhere ${RUN}` } });
  await form.getByLabel('Username').fill(`renamed_${RUN}`);
  await form.getByLabel('Name', { exact: true }).fill(`Mine ${RUN}`);
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.getByText('Someone changed this user while you were editing').waitFor();
  // Their version shows; what was typed stays in the form, to be saved again.
  await page.getByRole('heading', { name: `Elsewhere ${RUN}`, level: 2 }).waitFor();
  assert.equal(await form.getByLabel('Name', { exact: true }).inputValue(), `Mine ${RUN}`);
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.locator('#user-form [data-status]').filter({ hasText: 'Saved.' }).waitFor();
  assert.equal((await api('GET', `/api/users/${target.id}`, { token: adminToken })).data.name, `Mine ${RUN}`);

  // A new address starts unconfirmed: the box unticks as the address is edited, and what
  // it shows is what is saved.
  const confirmed = form.getByLabel('Email address confirmed');
  assert.equal(await confirmed.isChecked(), true);
  await form.getByLabel('Email', { exact: true }).fill(`moved.${RUN}@example.com`);
  assert.equal(await confirmed.isChecked(), false);
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.locator('#user-form [data-status]').filter({ hasText: 'Saved.' }).waitFor();
  stored = (await api('GET', `/api/users/${target.id}`, { token: adminToken })).data;
  assert.equal(stored.email, `moved.${RUN}@example.com`);
  assert.equal(stored.email_verified, false);

  // Deactivate, then activate.
  await page.getByRole('button', { name: 'Deactivate' }).click();
  await page.getByText('Deactivated: the user is signed out').waitFor();
  stored = (await api('GET', `/api/users/${target.id}`, { token: adminToken })).data;
  assert.equal(stored.active, false);
  await page.getByRole('button', { name: 'Activate' }).click();
  await page.getByText('Activated: the user may sign in again.').waitFor();
  assert.equal((await api('GET', `/api/users/${target.id}`, { token: adminToken })).data.active, true);

  // Delete: asked first; keeping the user changes nothing.
  await page.getByRole('button', { name: 'Delete user…' }).click();
  const dialog = page.getByRole('dialog', { name: 'Delete this user?' });
  await dialog.waitFor();
  await check(page, 'admin-delete-dialog');
  await dialog.getByRole('button', { name: 'Keep the user' }).click();
  await dialog.waitFor({ state: 'hidden' });
  assert.equal((await api('GET', `/api/users/${target.id}`, { token: adminToken })).status, 200);
  await page.getByRole('button', { name: 'Delete user…' }).click();
  await dialog.getByRole('button', { name: 'Delete for good' }).click();
  await page.waitForURL((url) => url.searchParams.has('deleted'));
  await page.getByText(`Deleted moved.${RUN}@example.com.`).waitFor();
  assert.equal((await api('GET', `/api/users/${target.id}`, { token: adminToken })).status, 404);

  // Unlock the locked user.
  await page.goto(`/admin?user=${locked.id}`);
  await page.locator('#user-facts .tag', { hasText: 'Locked' }).waitFor();
  await page.getByRole('button', { name: 'Lift the sign-in lock' }).click();
  await page.getByText('The sign-in lock is lifted.').waitFor();
  assert.equal(await page.getByRole('button', { name: 'Lift the sign-in lock' }).count(), 0);
  assert.equal((await api('GET', `/api/users/${locked.id}`, { token: adminToken })).data.locked_until, null);
  assert.equal((await api('POST', '/api/auth/login', { body: { email: locked.email, password: PASSWORD } })).status, 200);

  // Reset two-factor sign-in, and end the sessions, of the two-factor user.
  await page.goto(`/admin?user=${twoFactor.id}`);
  await page.locator('#user-sessions tbody tr').first().waitFor();
  assert.equal(await page.locator('#user-sessions tbody tr').count(), 1);
  await page.getByRole('button', { name: 'Turn off two-factor sign-in' }).click();
  await page.getByText('Two-factor sign-in is off; the user can set it up again.').waitFor();
  assert.equal((await api('GET', `/api/users/${twoFactor.id}`, { token: adminToken })).data.mfa_enabled, false);
  await page.getByRole('button', { name: 'Sign out everywhere' }).click();
  await page.getByText('Every session of the user is signed out.').waitFor();
  await page.getByText('Not signed in anywhere.').waitFor();
  assertClean(page);
});

test('the audit log filters by user, event and time', async () => {
  const page = await newPage(browser);
  await signIn(page, ADMIN.email, ADMIN.password, '/admin?view=audit');
  await page.getByRole('heading', { name: 'Audit log' }).waitFor();
  await page.locator('#audit tbody tr').first().waitFor();
  await check(page, 'admin-audit');

  await page.getByLabel('Event').selectOption('user.deactivated');
  await page.getByRole('button', { name: 'Show events' }).click();
  await page.waitForURL((url) => url.searchParams.get('type') === 'user.deactivated');
  const rows = page.locator('#audit tbody tr');
  await rows.first().waitFor();
  for (const text of await rows.allInnerTexts()) assert.match(text, /Account deactivated/);

  // One user's events, from the link on their page.
  await page.goto(`/admin?user=${locked.id}`);
  await page.getByRole('link', { name: 'Security events of this user' }).click();
  await page.waitForURL((url) => url.searchParams.get('user_id') === locked.id);
  const table = page.locator('#audit tbody');
  await table.getByText('Sign-in locked after failures').first().waitFor();
  await table.getByText('Sign-in lock lifted').first().waitFor();
  assert.equal(await page.getByLabel('User id').inputValue(), locked.id);
  await check(page, 'admin-audit-user');

  // A window in the future holds nothing.
  await page.getByLabel('From').fill('2999-01-01T00:00');
  await page.getByRole('button', { name: 'Show events' }).click();
  await page.getByText('No event matches.').waitFor();
  assertClean(page);
});

test('a user who is not an admin is told the console is for admins', async () => {
  const user = await createUser(adminToken, { name: `Plain ${RUN}`, email: `plain.${RUN}@example.com` });
  const page = await newPage(browser);
  await signIn(page, user.email, PASSWORD, '/admin');
  await page.waitForURL('**/admin');
  await page.getByRole('heading', { name: 'This console is for admins' }).waitFor();
  await page.getByText(user.email).waitFor();
  assert.equal(await page.locator('#users').isVisible(), false);
  await page.getByRole('link', { name: 'your account page' }).waitFor();
  await check(page, 'admin-not-admin');
});
