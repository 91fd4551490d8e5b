// What the browser tests share: the service's address, the browser, axe-core, screenshots,
// the mails the SMTP sink kept, TOTP codes, and API calls to set the stage.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

import AxeBuilder from '@axe-core/playwright';
import { chromium } from 'playwright-core';

export const BASE_URL = required('BASE_URL');
/** A second service, with REQUIRE_VERIFIED_EMAIL on. */
export const STRICT_BASE_URL = required('STRICT_BASE_URL');
export const ADMIN = { email: required('ADMIN_EMAIL'), password: required('ADMIN_PASSWORD') };
const MAIL_DIR = required('MAIL_DIR');
const SCREENSHOTS = required('SCREENSHOT_DIR');

/** The widths every page is checked and photographed at: a small phone and a laptop. */
export const WIDTHS = [375, 1280];

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run scripts/browser-tests.sh`);
  return value;
}

/** Debian's Chromium (or the Chromium-based browser `CHROMIUM` names), headless; nothing is
 * downloaded. */
export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/**
 * A fresh browser context (its own cookies) and a page in it that fails the test on any
 * script error, any CSP violation and any request to another origin than `base`.
 */
export async function newPage(browser, base = BASE_URL) {
  const context = await browser.newContext({ baseURL: base, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (error) => problems.push(`script error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy|Refused to/.test(message.text())) {
      problems.push(`console: ${message.text()}`);
    }
  });
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (!['data:', 'blob:'].includes(url.protocol) && url.origin !== new URL(base).origin) {
      problems.push(`request to another origin: ${request.url()}`);
    }
  });
  page.problems = problems;
  return page;
}

/** Asserts that nothing went wrong on the page so far. */
export function assertClean(page) {
  assert.deepEqual(page.problems, [], page.problems.join('\n'));
}

/**
 * Runs axe-core on the page at each width (no serious or critical violation may remain)
 * and writes a full-page screenshot of each to target/screenshots/NAME-WIDTH.png.
 */
export async function check(page, name) {
  await mkdir(SCREENSHOTS, { recursive: true });
  const original = page.viewportSize();
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: 900 });
    // Let the layout settle, and any focus ring or transition finish.
    await page.waitForTimeout(50);
    const results = await new AxeBuilder({ page }).analyze();
    const bad = results.violations.filter((v) => ['serious', 'critical'].includes(v.impact));
    assert.deepEqual(
      bad.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(' ')).join('; ')}`),
      [],
      `${name} at ${width}px`,
    );
    // Nothing may stick out of the window sideways (inside a box that clips or scrolls
    // within the window is fine); if something does, name it.
    // Measured until it holds for a moment or 2 s have passed: the page may still be
    // settling from the resize (a busy machine runs its scripts late), and only what stays
    // counts.
    const measure = () =>
      page.evaluate(() => {
        const right = window.innerWidth + 0.5;
        const contained = (node) => {
          for (let box = node.parentElement; box && box !== document.body; box = box.parentElement) {
            if (getComputedStyle(box).overflowX !== 'visible' && box.getBoundingClientRect().right <= right) {
              return true;
            }
          }
          return false;
        };
        const name = (node) => `${node.tagName.toLowerCase()}${node.id ? `#${node.id}` : ''}.${node.className}`;
        // A box that clips or scrolls its own content (a text field with a long value, say)
        // keeps that content inside: only the box itself counts.
        const clipsItself = (node) =>
          node.matches('input, textarea, select') || getComputedStyle(node).overflowX !== 'visible';
        // An element that sticks out itself, or whose content (a long word, a pseudo-element)
        // reaches past the window from inside it.
        return [...document.querySelectorAll('body *')]
          .filter((node) => !contained(node))
          .filter((node) => {
            const box = node.getBoundingClientRect();
            return box.right > right || (!clipsItself(node) && box.left + node.scrollWidth > right);
          })
          .map(name);
      });
    let sticking = [];
    let overflow = 0;
    for (let attempt = 0; attempt < 20; attempt += 1) {
      sticking = await measure();
      overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      if (overflow <= 0 && sticking.length === 0) break;
      await page.waitForTimeout(100);
    }
    assert.ok(overflow <= 0, `${name} at ${width}px scrolls sideways by ${overflow}px: ${sticking}`);
    assert.deepEqual(sticking, [], `${name} at ${width}px: these stick out sideways`);
    await page.screenshot({ path: path.join(SCREENSHOTS, `${name}-${width}.png`), fullPage: true });
  }
  await page.setViewportSize(original);
  assertClean(page);
}

// --- mail ---

/** The mails the sink has kept for `to` whose subject is `subject`, oldest first. */
async function mailsTo(to, subject) {
  const files = (await readdir(MAIL_DIR)).sort();
  const found = [];
  for (const file of files) {
    const text = await readFile(path.join(MAIL_DIR, file), 'utf8');
    const headers = text.split(/\r?\n\r?\n/)[0];
    if (headers.toLowerCase().includes(`to: ${to}`.toLowerCase()) && headers.includes(`Subject: ${subject}`)) {
      found.push(text);
    }
  }
  return found;
}

/** Waits for the `n`th mail to `to` with `subject` and returns the link in it. */
export async function linkInMail(to, subject, n = 1) {
  for (let tries = 0; tries < 100; tries++) {
    const mails = await mailsTo(to, subject);
    if (mails.length >= n) {
      const [headers, ...rest] = mails[n - 1].split(/\r?\n\r?\n/);
      let body = rest.join('\n\n');
      if (/Content-Transfer-Encoding: base64/i.test(headers)) {
        body = Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8');
      } else {
        // Quoted-printable breaks long lines with "=\r\n" and writes "=" as "=3D".
        body = body.replace(/=\r?\n/g, '').replace(/=3D/g, '=');
      }
      const link = body.match(/https?:\/\/[^\s"<>]+/);
      assert.ok(link, `no link in the mail to ${to}: ${body}`);
      return link[0];
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no mail "${subject}" #${n} to ${to} arrived`);
}

// --- TOTP (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps) ---

function base32(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const char of text.replace(/=+$/, '').toUpperCase()) {
    const value = alphabet.indexOf(char);
    assert.ok(value >= 0, `not base32: ${text}`);
    bits += value.toString(2).padStart(5, '0');
  }
  const bytes = [];
  for (let i = 0; i + 8 <= bits.length; i += 8) bytes.push(parseInt(bits.slice(i, i + 8), 2));
  return Buffer.from(bytes);
}

/** The TOTP code of `secret` for the step `offset` steps from now. */
export function totp(secret, offset = 0) {
  const step = Math.floor(Date.now() / 1000 / 30) + offset;
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = createHmac('sha1', base32(secret)).update(counter).digest();
  const at = mac[mac.length - 1] & 0x0f;
  const number = mac.readUInt32BE(at) & 0x7fffffff;
  return String(number % 1_000_000).padStart(6, '0');
}

// --- the API, to set the stage ---

export async function api(method, apiPath, { body, token, base = BASE_URL } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(new URL(apiPath, base), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, data: text ? JSON.parse(text) : null };
}

export async function login(email, password) {
  const { status, data } = await api('POST', '/api/auth/login', { body: { email, password } });
  assert.equal(status, 200, JSON.stringify(data));
  return data.access_token;
}

/** A user made by the admin through the API, with a unique address. */
export async function createUser(adminToken, { name, email, password = 'correct horse battery', ...rest }) {
  const { status, data } = await api('POST', '/api/users', {
    token: adminToken,
    body: { name, email, password, ...rest },
  });
  assert.equal(status, 201, JSON.stringify(data));
  return data;
}

/** A suffix that keeps the addresses of one run apart from another's. */
export const RUN = Date.now().toString(36);

/** Signs in through the sign-in page. */
export async function signIn(page, login, password, next = '/account') {
  await page.goto(`/sign-in?next=${encodeURIComponent(next)}`);
  await page.getByLabel('Email or username').fill(login);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
}
