// Small DOM helpers shared by the pages. Text always goes in as text (never as HTML), so
// nothing the service returns can become markup.

/** Creates an element: h('a', {href: '/x', class: 'btn'}, 'text', child, ...). */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === 'class') node.className = value;
    else if (value === true) node.setAttribute(key, '');
    else node.setAttribute(key, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

/** The message region of a form (its `[data-status]`, an aria-live region). */
function statusOf(form) {
  return form.querySelector('[data-status]') || document.querySelector('#page-status');
}

function write(status, text, kind) {
  status.textContent = text;
  status.className = `status ${kind}`;
}

/** Shows a message in a form's live region; kind is 'ok' or 'error'. */
export function say(form, text, kind = 'ok') {
  write(statusOf(form), text, kind);
}

/** Shows a message in the page's own live region, at the top. */
export function sayOnPage(text, kind = 'ok') {
  write(document.querySelector('#page-status'), text, kind);
}

/** The service's messages as sentences: a capital first, a full stop last. */
function sentence(text) {
  const trimmed = String(text).trim();
  if (!trimmed) return trimmed;
  const capital = trimmed[0].toUpperCase() + trimmed.slice(1);
  return /[.!?:]$/.test(capital) ? capital : `${capital}.`;
}

/** Removes the messages and field errors a form shows. */
export function clear(form) {
  const status = statusOf(form);
  if (status) {
    status.textContent = '';
    status.className = 'status';
  }
  for (const node of form.querySelectorAll('.field-error')) node.remove();
  for (const input of form.querySelectorAll('[aria-invalid]')) {
    input.removeAttribute('aria-invalid');
    input.removeAttribute('aria-describedby');
  }
}

/**
 * Shows an error from the API: each field error next to its input (by name), and the
 * problem's detail in the form's live region. The first bad input gets the focus.
 */
export function showError(form, error) {
  let first = null;
  const unplaced = [];
  for (const { field, message } of error.fieldErrors || []) {
    const input = form.querySelector(`[name="${CSS.escape(field)}"]`);
    if (!input) {
      unplaced.push(sentence(`${field.replaceAll('_', ' ')} ${message}`));
      continue;
    }
    const id = `${input.id}-error`;
    input.setAttribute('aria-invalid', 'true');
    input.setAttribute('aria-describedby', [input.dataset.hint, id].filter(Boolean).join(' '));
    // "New password is one of the most common passwords": the field's label, then why.
    const label = input.labels?.[0]?.firstChild?.textContent?.trim() ?? field;
    input.closest('.field').append(h('p', { class: 'field-error', id }, sentence(`${label} ${message}`)));
    first ??= input;
  }
  // Each bad field says why next to it; the summary then says where to look. A field the
  // form lacks says why in the summary, in place of the service's terser detail.
  let summary = [sentence(error.message)];
  if (first) summary = ['Please correct the marked field.'];
  else if (unplaced.length > 0) summary = [];
  say(form, [...summary, ...unplaced].join(' '), 'error');
  first?.focus();
}

/**
 * Runs `work` for a submitted form: clears old messages, disables the form's buttons while
 * it runs, and shows any error. Returns what `work` returned, or undefined after an error.
 */
async function submit(form, work) {
  clear(form);
  const focused = document.activeElement;
  const buttons = form.querySelectorAll('button');
  for (const button of buttons) button.disabled = true;
  form.setAttribute('aria-busy', 'true');
  try {
    return await work();
  } catch (error) {
    showError(form, error);
    return undefined;
  } finally {
    for (const button of buttons) button.disabled = false;
    form.removeAttribute('aria-busy');
    // A button that was disabled lost the focus to the page: give it back, unless the
    // work put it somewhere else or hid the button.
    if (document.activeElement === document.body && focused?.isConnected && !focused.closest('[hidden]')) {
      focused.focus();
    }
  }
}

/** Wires a form: on submit, `work(values, form)` with the form's fields as an object. */
export function onSubmit(form, work) {
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    submit(form, () => work(values(form), form));
  });
}

/** A form's fields by name: checkboxes as booleans, the rest as strings. */
export function values(form) {
  const out = {};
  for (const input of form.elements) {
    if (!input.name) continue;
    out[input.name] = input.type === 'checkbox' ? input.checked : input.value;
  }
  return out;
}

/** A readable local date and time for an RFC 3339 timestamp. */
export function when(iso) {
  if (!iso) return '—';
  return new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** A <time> element for a timestamp. */
export function time(iso) {
  return iso ? h('time', { datetime: iso }, when(iso)) : '—';
}

/** Reads the mailed token from the address and takes it out of the address bar (and so out
 * of the history), before anything else can see it. A reload then finds none: the pages
 * say so, apart from a link that no longer works. */
export function takeToken() {
  const params = new URLSearchParams(location.search);
  const token = params.get('token');
  if (token !== null) {
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + (rest ? `?${rest}` : ''));
  }
  return token;
}

/** The new password twice must agree; says so next to the second field. */
export function passwordsMatch(form, first, second) {
  if (form.elements[first].value === form.elements[second].value) return true;
  showError(form, {
    message: 'The two passwords differ.',
    fieldErrors: [{ field: second, message: 'must be the same as the new password' }],
  });
  return false;
}

// The contract's password rules, shown before a new password is submitted (the service's
// own message for a refused one then appears next to the field).
for (const node of document.querySelectorAll('[data-password-rules]')) {
  node.replaceChildren(
    h('p', {}, 'A new password:'),
    h(
      'ul',
      {},
      h('li', {}, 'is 8 to 72 bytes long (a phrase of several ordinary words is good);'),
      h('li', {}, 'is not one of the 10,000 most common passwords;'),
      h('li', {}, 'is not your name, username, email address, or the part of it before the @.'),
    ),
  );
}
