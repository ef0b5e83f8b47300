// The operator console: a static page over the platform's public API,
// served by the gateway at /console/ beside /v1/... (one origin).
//
// It holds no authority of its own: every request carries the bearer token
// the operator pasted in, and the services decide what that token may do.
// The token lives in sessionStorage (this tab only) and nowhere else.
//
// Everything shown is built with DOM calls and set as text
// (textContent, Node.append of strings), never parsed as markup, because
// names, addresses, cancel reasons and error texts come from users. The
// page runs under a Content-Security-Policy without inline scripts or
// styles, so there are no inline handlers and no style attributes here:
// handlers are attached with addEventListener, looks are CSS classes.
'use strict';

(() => {
  const TOKEN_KEY = 'orders-console.token';
  const STATUSES = ['running', 'compensating', 'completed', 'compensated', 'failed'];
  const STEPS = ['reserve_inventory', 'charge_payment', 'create_shipment'];
  const TERMINAL = ['completed', 'compensated'];
  const PAGE_SIZE = 50;
  const DEEPEST = 8;

  const view = document.getElementById('view');
  const notice = document.getElementById('notice');

  // Bumped on every navigation: an answer that arrives for an older page
  // is dropped instead of drawn over the current one.
  let generation = 0;
  let timer = null;
  let flash = null;

  // ---------------------------------------------------------------- DOM

  /** An element with properties and children; strings become text nodes. */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') node.className = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  /** A link; an optional second argument of plain properties. */
  function link(href, ...rest) {
    const props = rest.length && rest[0] && rest[0].constructor === Object ? rest.shift() : {};
    return el('a', { ...props, href }, ...rest);
  }

  function button(label, onclick, props) {
    return el('button', { type: 'button', ...props, onclick }, label);
  }

  function render(...nodes) {
    view.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false));
  }

  function table(id, headings, rows) {
    return el('table', { id },
      el('thead', {}, el('tr', {}, headings.map((h) => el('th', {}, h)))),
      el('tbody', {}, rows));
  }

  function badge(status) {
    return el('span', { class: `badge status-${String(status).replace(/[^a-z_]/g, '')}` }, status);
  }

  function when(iso) {
    if (!iso) return '—';
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return date.toISOString().replace('T', ' ').replace('Z', ' UTC');
  }

  function words(name) {
    return name ? String(name).replace(/_/g, ' ') : '—';
  }

  function showNotice(text, kind) {
    notice.className = `notice notice-${kind || 'info'}`;
    notice.textContent = text;
    notice.hidden = false;
  }

  function every(ms, refresh) {
    clearTimeout(timer);
    const mine = generation;
    timer = setTimeout(async () => {
      if (mine === generation) await refresh();
    }, ms);
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, problem) {
      super(problem.detail || problem.title || `HTTP ${status}`);
      this.status = status;
      this.problem = problem;
    }
  }

  const HINTS = {
    401: 'The API refused your token: it may have expired or not be meant for this platform. Sign in again with a fresh one.',
    403: 'Your token is valid but its role may not do this: looking needs reader, acting needs operator or admin.',
    404: 'Nothing by that id (or nothing you may see).',
    409: 'This conflicts with the current state; the page shows the state as it is now.',
  };

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json', Authorization: `Bearer ${token()}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch (error) {
      throw new ApiError(0, { title: 'Network error', detail: `The API could not be reached (${error.message}).` });
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const problem = data && typeof data === 'object'
        ? data
        : { title: response.statusText, detail: text.slice(0, 300) };
      throw new ApiError(response.status, problem);
    }
    return data;
  }

  /** A readable account of a failed request. */
  function problemView(error) {
    const box = el('div', { class: 'problem', role: 'alert' });
    if (!(error instanceof ApiError)) {
      box.append(el('strong', {}, 'Something went wrong: '), String(error && error.message));
      return box;
    }
    const problem = error.problem || {};
    const status = error.status ? `${error.status} ` : '';
    box.append(el('strong', { class: 'problem-title' }, `${status}${problem.title || 'Error'}`));
    if (problem.detail) box.append(el('p', { class: 'problem-detail' }, problem.detail));
    if (Array.isArray(problem.errors)) {
      box.append(el('ul', {}, problem.errors.map((e) => el('li', {}, `${e.field}: ${e.message}`))));
    }
    if (HINTS[error.status]) box.append(el('p', { class: 'hint' }, HINTS[error.status]));
    if (error.status === 401) box.append(button('Sign in again', signOut));
    return box;
  }

  // ------------------------------------------------------------ session

  /** The token's claims, for display only: the API checks the token. */
  function claims() {
    try {
      const part = (token() || '').split('.')[1];
      const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
      return JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')));
    } catch {
      return null;
    }
  }

  function roles() {
    const found = claims();
    return found && Array.isArray(found.roles) ? found.roles.map(String) : [];
  }

  /**
   * Whether to offer the operator actions. Only a convenience: a reader
   * who sends one anyway gets the API's 403. Roles kept under another
   * claim cannot be read here, so then the actions are offered.
   */
  function mayAct() {
    const held = roles();
    return held.length === 0 || held.includes('operator') || held.includes('admin');
  }

  function signIn(event) {
    event.preventDefault();
    const field = document.getElementById('token');
    const value = field.value.trim().replace(/^Bearer\s+/i, '');
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    field.value = '';
    if (!location.hash || location.hash === '#/') location.hash = '#/sagas';
    route();
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    route();
  }

  // ------------------------------------------------------------- routes

  function route() {
    generation += 1;
    clearTimeout(timer);
    notice.hidden = true;
    if (flash) {
      showNotice(flash.text, flash.kind);
      flash = null;
    }
    const signedIn = Boolean(token());
    document.getElementById('sign-in').hidden = signedIn;
    document.getElementById('nav').hidden = !signedIn;
    document.getElementById('sign-out').hidden = !signedIn;
    const who = claims();
    document.getElementById('who').textContent = signedIn && who
      ? `${who.sub || '?'} · ${roles().join(', ') || 'roles not shown'}`
      : '';
    if (!signedIn) {
      render();
      document.getElementById('token').focus();
      return;
    }
    const [path, query] = (location.hash.slice(1) || '/sagas').split('?');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    const params = new URLSearchParams(query || '');
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('current', a.dataset.section === parts[0]);
    }
    if (parts[0] === 'sagas' && parts.length === 1) return sagasPage(params);
    if (parts[0] === 'sagas' && parts.length === 2) return sagaPage(parts[1]);
    if (parts[0] === 'orders' && parts.length === 3 && parts[2] === 'trace') return tracePage(parts[1]);
    if (parts[0] === 'orders' && parts.length === 1) return findOrderPage();
    if (parts[0] === 'projections') return projectionsPage();
    if (parts[0] === 'jobs' && parts.length === 2) return jobPage(parts[1]);
    return render(el('p', {}, 'No such page. ', link('#/sagas', 'See the sagas.')));
  }

  /** Loads, then draws with `draw` unless the user navigated meanwhile. */
  async function load(fetcher, draw) {
    const mine = generation;
    try {
      const data = await fetcher();
      if (mine === generation) draw(data);
    } catch (error) {
      if (mine === generation) render(problemView(error));
    }
  }

  // -------------------------------------------------------------- sagas

  const FILTERS = ['status', 'step', 'failure', 'min_attempts', 'stuck_for', 'placed_from', 'placed_to'];

  /** The filter in the page's address, as the bulk retry takes it. */
  function filterOf(params) {
    const filter = {};
    for (const name of FILTERS) {
      const value = params.get(name);
      if (value === null || value === '') continue;
      filter[name] = name === 'min_attempts' || name === 'stuck_for' ? Number(value) : value;
    }
    return filter;
  }

  function select(id, label, options, current) {
    return el('label', { for: id }, label,
      el('select', { id, name: id.replace('filter-', '') },
        el('option', { value: '' }, 'any'),
        options.map((o) => el('option', { value: o, selected: o === current }, words(o)))));
  }

  function input(id, label, type, value, extra) {
    return el('label', { for: id }, label,
      el('input', { id, name: id.replace('filter-', ''), type, value: value || '', ...extra }));
  }

  /** RFC 3339 → the value a datetime-local input shows (both in UTC). */
  function toLocalInput(iso) {
    return iso ? iso.slice(0, 16) : '';
  }

  function filterForm(params) {
    const form = el('form', { id: 'saga-filter', class: 'filters' },
      select('filter-status', 'Status', STATUSES, params.get('status')),
      select('filter-step', 'Current step', STEPS, params.get('step')),
      input('filter-failure', 'Failure or error contains', 'search', params.get('failure'), { maxlength: 200 }),
      input('filter-min_attempts', 'Attempts at least', 'number', params.get('min_attempts'), { min: 1 }),
      input('filter-stuck_for', 'No progress for (s)', 'number', params.get('stuck_for'), { min: 1 }),
      input('filter-placed_from', 'Placed from (UTC)', 'datetime-local', toLocalInput(params.get('placed_from'))),
      input('filter-placed_to', 'Placed before (UTC)', 'datetime-local', toLocalInput(params.get('placed_to'))),
      el('div', { class: 'actions' },
        el('button', { type: 'submit', id: 'apply-filter' }, 'Apply'),
        link('#/sagas', 'Clear')));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const next = new URLSearchParams();
      if (params.get('limit')) next.set('limit', params.get('limit'));
      for (const name of FILTERS) {
        let value = form.elements[name].value.trim();
        if (!value) continue;
        if (name.startsWith('placed_')) value = `${value}:00Z`;
        next.set(name, value);
      }
      location.hash = `#/sagas?${next}`;
    });
    return form;
  }

  function sagasPage(params) {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(filterOf(params))) query.set(name, value);
    // A page size in the address (not in the form) is kept while paging.
    query.set('limit', params.get('limit') || String(PAGE_SIZE));
    if (params.get('cursor')) query.set('cursor', params.get('cursor'));
    const form = filterForm(params);
    render(el('h1', {}, 'Sagas'), form, el('p', { class: 'muted' }, 'Loading…'));
    load(() => api('GET', `/v1/sagas?${query}`), (page) => {
      const rows = page.items.map((saga) => el('tr', { 'data-order-id': saga.order_id, 'data-status': saga.status },
        el('td', {}, link(`#/sagas/${encodeURIComponent(saga.order_id)}`, { class: 'saga-link' }, el('code', {}, saga.order_id))),
        el('td', {}, badge(saga.status)),
        el('td', {}, words(saga.current_step)),
        el('td', { class: 'error-text' }, saga.failure_reason || ''),
        el('td', {}, when(saga.started_at)),
        el('td', {}, when(saga.updated_at))));
      const paging = el('div', { class: 'paging' });
      if (params.get('cursor')) {
        const first = new URLSearchParams(params);
        first.delete('cursor');
        paging.append(link(`#/sagas?${first}`, { id: 'first-page' }, 'First page'));
      }
      if (page.next_cursor) {
        const next = new URLSearchParams(params);
        next.set('cursor', page.next_cursor);
        paging.append(link(`#/sagas?${next}`, { id: 'next-page' }, 'Next page'));
      }
      render(el('h1', {}, 'Sagas'), form,
        el('p', { class: 'muted', id: 'saga-count' },
          page.items.length ? `${page.items.length} sagas on this page, newest first.` : 'No saga matches.'),
        table('saga-list', ['Order', 'Status', 'Current step', 'Failure', 'Placed', 'Last progress'], rows),
        paging,
        mayAct() ? bulkRetryCard(params) : null);
    });
  }

  function bulkRetryCard(params) {
    const filter = filterOf(params);
    const result = el('div', { id: 'bulk-result' });
    const card = el('section', { class: 'card', id: 'bulk-retry' },
      el('h2', {}, 'Bulk retry'),
      el('p', {}, 'Retry every failed saga this filter selects, on every page, not only this one. ',
        'A dry run first shows how many and a sample; nothing changes until you run the job.'));
    if (filter.status && filter.status !== 'failed') {
      card.append(el('p', { class: 'muted' }, 'Only failed sagas are retried: set the status to failed or to any.'));
      return card;
    }
    card.append(button('Dry run', async () => {
      result.replaceChildren(el('p', { class: 'muted' }, 'Counting…'));
      try {
        const dry = await api('POST', '/v1/sagas/retry', { filter, dry_run: true });
        result.replaceChildren(...dryRunView(filter, dry, result));
      } catch (error) {
        result.replaceChildren(problemView(error));
      }
    }, { id: 'bulk-dry-run' }), result);
    return card;
  }

  function dryRunView(filter, dry, result) {
    const count = el('p', { id: 'bulk-count', class: 'count' },
      `${dry.count} failed ${dry.count === 1 ? 'saga matches' : 'sagas match'} this filter.`);
    if (dry.count === 0) return [count];
    const sample = table('bulk-sample', ['Order', 'Failure', 'Last progress'], dry.sample.map((s) => el('tr', {},
      el('td', {}, link(`#/sagas/${encodeURIComponent(s.order_id)}`, el('code', {}, s.order_id))),
      el('td', { class: 'error-text' }, s.failure_reason || ''),
      el('td', {}, when(s.updated_at)))));
    const run = button(`Retry all ${dry.count}`, async () => {
      run.disabled = true;
      try {
        const job = await api('POST', '/v1/sagas/retry', { filter, dry_run: false });
        flash = { text: `Bulk retry started: ${job.count} sagas.`, kind: 'ok' };
        location.hash = `#/jobs/${encodeURIComponent(job.job_id)}`;
      } catch (error) {
        run.disabled = false;
        result.append(problemView(error));
      }
    }, { id: 'bulk-run', class: 'act' });
    return [count, el('p', { class: 'muted' }, `A sample of ${dry.sample.length}:`), sample, run];
  }

  // --------------------------------------------------------------- saga

  /** "attempt 3: error text (will retry)" → [3, "error text", true]. */
  function parseAttempt(detail) {
    const match = /^attempt (\d+)(?::\s?([\s\S]*))?$/.exec(detail || '');
    if (!match) return [null, detail || null, false];
    let error = match[2] === undefined ? null : match[2];
    const retrying = Boolean(error && error.endsWith(' (will retry)'));
    if (retrying) error = error.slice(0, -' (will retry)'.length);
    return [Number(match[1]), error, retrying];
  }

  /** When a scheduled retry starts: the time at the end of its detail. */
  function retryTime(detail) {
    const match = / at (\S+)$/.exec(detail || '');
    return match ? match[1] : null;
  }

  const ATTEMPT_EVENTS = {
    step_started: ['step', 'start'],
    step_succeeded: ['step', 'succeeded'],
    step_failed: ['step', 'failed'],
    step_compensation_started: ['compensation', 'start'],
    step_compensated: ['compensation', 'compensated'],
    step_compensation_failed: ['compensation', 'failed'],
  };

  /** Each attempt at a step or at undoing it, from the saga's history. */
  function attemptsOf(history) {
    const rows = [];
    const open = new Map();
    for (const entry of history) {
      if (entry.event === 'retry_scheduled') {
        const kind = /^compensation/.test(entry.detail || '') ? 'compensation' : 'step';
        const failed = [...rows].reverse().find((r) => r.step === entry.step && r.kind === kind);
        if (failed) failed.retryAt = retryTime(entry.detail);
        continue;
      }
      const known = ATTEMPT_EVENTS[entry.event];
      if (!known || !entry.step) continue;
      const [kind, outcome] = known;
      const key = `${entry.step}/${kind}`;
      const [attempt, error] = parseAttempt(entry.detail);
      if (outcome === 'start') {
        const row = { step: entry.step, kind, attempt, started: entry.at, ended: null, outcome: 'running', error: null };
        rows.push(row);
        open.set(key, row);
        continue;
      }
      let row = open.get(key);
      if (!row) {
        row = { step: entry.step, kind, attempt, started: null };
        rows.push(row);
      }
      open.delete(key);
      row.ended = entry.at;
      row.outcome = outcome;
      row.error = outcome === 'failed' ? error : null;
    }
    return rows;
  }

  /** What the saga waits for now, and until when. */
  function waitingFor(saga) {
    const history = saga.history || [];
    const last = history[history.length - 1];
    switch (saga.status) {
      case 'completed':
        return `Nothing: it ended completed at ${when(saga.finished_at)}.`;
      case 'compensated':
        return `Nothing: it ended compensated at ${when(saga.finished_at)}; every step done was undone (reason: ${saga.failure_reason || 'none given'}).`;
      case 'failed':
        return 'An operator: a compensation could not be completed. Fix its cause, then retry the saga.';
      default:
        break;
    }
    if (last && last.event === 'retry_scheduled') {
      const undo = /^compensation/.test(last.detail || '') ? 'undo ' : '';
      const attempt = (/attempt (\d+)/.exec(last.detail || '') || [])[1] || '?';
      const at = retryTime(last.detail);
      const left = Date.parse(at) - Date.now();
      const due = Number.isNaN(left) ? '' : left > 0 ? ` (in ${Math.ceil(left / 1000)} s)` : ' (due now)';
      return `A timer: ${undo}attempt ${attempt} of ${words(last.step)} starts at ${when(at)}${due}.`;
    }
    const stepName = (last && last.step) || saga.current_step;
    const step = (saga.steps || []).find((s) => s.name === stepName);
    if (saga.status === 'compensating') {
      return `Undoing ${words(stepName)}${step ? ` (compensation attempt ${step.compensation_attempts})` : ''}, since ${when(last && last.at)}.`;
    }
    return `The answer of ${words(stepName)}${step ? ` (attempt ${step.attempts})` : ''}, running since ${when(last && last.at)}.`;
  }

  function eventClass(event) {
    if (/failed$/.test(event)) return 'ev-failed';
    if (event === 'retry_scheduled') return 'ev-retry';
    if (/^saga_(completed|compensated)$/.test(event)) return 'ev-end';
    if (/compensat|cancellation/.test(event)) return 'ev-compensation';
    if (/succeeded$/.test(event)) return 'ev-ok';
    return 'ev-plain';
  }

  function sagaPage(orderId) {
    render(el('h1', {}, 'Saga'), el('p', { class: 'muted' }, 'Loading…'));
    const refresh = () => load(() => api('GET', `/v1/sagas/${encodeURIComponent(orderId)}`), (saga) => {
      drawSaga(saga);
      if (!TERMINAL.includes(saga.status)) every(2000, refresh);
    });
    refresh();
  }

  function drawSaga(saga) {
    const actions = el('div', { class: 'actions' },
      link(`#/orders/${encodeURIComponent(saga.order_id)}/trace`, { id: 'trace-link' }, 'Causal trace of this order'),
      link('#/sagas', 'All sagas'));
    if (saga.status === 'failed' && mayAct()) {
      const retry = button('Retry this saga', async () => {
        retry.disabled = true;
        try {
          await api('POST', `/v1/sagas/${encodeURIComponent(saga.order_id)}/retry`);
          showNotice('Retry requested: the saga resumes its compensation.', 'ok');
          sagaPage(saga.order_id);
        } catch (error) {
          retry.disabled = false;
          actions.append(problemView(error));
        }
      }, { id: 'retry-saga', class: 'act' });
      actions.prepend(retry);
    }
    const summary = el('dl', { class: 'summary' },
      el('dt', {}, 'Status'), el('dd', { id: 'saga-status' }, badge(saga.status)),
      el('dt', {}, 'Current step'), el('dd', {}, words(saga.current_step)),
      el('dt', {}, 'Failure'), el('dd', { class: 'error-text', id: 'saga-failure' }, saga.failure_reason || '—'),
      el('dt', {}, 'Started'), el('dd', {}, when(saga.started_at)),
      el('dt', {}, 'Last progress'), el('dd', {}, when(saga.updated_at)),
      el('dt', {}, 'Ended'), el('dd', {}, when(saga.finished_at)));
    const steps = table('steps', ['Step', 'Status', 'Attempts', 'Undo attempts', 'Started', 'Finished', 'Last error'],
      (saga.steps || []).map((s) => el('tr', { 'data-step': s.name },
        el('td', {}, words(s.name)), el('td', {}, badge(s.status)),
        el('td', { class: 'num' }, s.attempts), el('td', { class: 'num' }, s.compensation_attempts ?? 0),
        el('td', {}, when(s.started_at)), el('td', {}, when(s.finished_at)),
        el('td', { class: 'error-text' }, s.last_error || ''))));
    const attempts = table('attempts', ['Step', 'Kind', 'Attempt', 'Start', 'End', 'Outcome', 'Error', 'Next attempt'],
      attemptsOf(saga.history || []).map((a) => el('tr', { class: `outcome-${a.outcome}` },
        el('td', {}, words(a.step)), el('td', {}, a.kind === 'step' ? 'forward' : 'undo'),
        el('td', { class: 'num' }, a.attempt ?? '?'), el('td', {}, when(a.started)), el('td', {}, when(a.ended)),
        el('td', {}, badge(a.outcome)), el('td', { class: 'error-text' }, a.error || ''),
        el('td', {}, a.retryAt ? when(a.retryAt) : ''))));
    const timeline = el('ol', { id: 'timeline', class: 'timeline' }, (saga.history || []).map((h) =>
      el('li', { class: eventClass(h.event), 'data-event': h.event },
        el('time', {}, when(h.at)), ' ',
        el('strong', {}, words(h.event)),
        h.step ? el('span', { class: 'step' }, ` · ${words(h.step)}`) : null,
        h.detail ? el('span', { class: 'detail' }, ` — ${h.detail}`) : null)));
    render(
      el('h1', {}, 'Saga of order ', el('code', {}, saga.order_id)),
      actions,
      summary,
      el('p', { class: 'now', id: 'saga-now' }, el('strong', {}, 'Waiting for: '), waitingFor(saga)),
      el('h2', {}, 'Steps'), steps,
      el('h2', {}, 'Attempts'), attempts,
      el('h2', {}, 'Timeline'), timeline);
  }

  // -------------------------------------------------------------- trace

  function findOrderPage() {
    const form = el('form', { id: 'find-order', class: 'filters' },
      input('order-id', 'Order id', 'text', '', { required: true, size: 40, autocomplete: 'off' }),
      el('div', { class: 'actions' }, el('button', { type: 'submit' }, 'Show trace')));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const id = form.elements['order-id'].value.trim();
      if (id) location.hash = `#/orders/${encodeURIComponent(id)}/trace`;
    });
    render(el('h1', {}, 'Order trace'),
      el('p', {}, 'Every event an order\'s placement caused, in every stream, in the store\'s global order.'), form);
  }

  /** The order and its customer, best effort: the trace stands alone. */
  async function orderSummary(orderId) {
    const box = el('section', { class: 'card', id: 'order-summary' });
    try {
      const order = await api('GET', `/v1/orders/${encodeURIComponent(orderId)}`);
      let customer = null;
      try {
        customer = await api('GET', `/v1/customers/${encodeURIComponent(order.customer_id)}`);
      } catch {
        customer = null;
      }
      const address = order.shipping_address || {};
      box.append(el('dl', { class: 'summary' },
        el('dt', {}, 'Order'), el('dd', {}, badge(order.status), ' ', `${order.total_cents} cents`,
          order.rejection_reason ? ` · rejected: ${order.rejection_reason}` : ''),
        el('dt', {}, 'Customer'), el('dd', { id: 'customer-name' }, customer ? customer.name : '', ' ',
          el('code', {}, order.customer_id)),
        el('dt', {}, 'Ship to'), el('dd', { id: 'ship-to' },
          [address.name, address.line1, address.postal_code, address.city, address.country].filter(Boolean).join(', '))));
    } catch (error) {
      box.append(el('p', { class: 'muted' }, `The order's read model is not available: ${error.message}`));
    }
    return box;
  }

  function tracePage(orderId) {
    render(el('h1', {}, 'Causal trace'), el('p', { class: 'muted' }, 'Loading…'));
    const mine = generation;
    const summary = orderSummary(orderId);
    load(() => api('GET', `/v1/orders/${encodeURIComponent(orderId)}/trace`), async (trace) => {
      const box = await summary;
      if (mine === generation) drawTrace(trace, box);
    });
  }

  function drawTrace(trace, summary) {
    const seen = new Map();
    const items = trace.events.map((event) => {
      const cause = seen.get(event.causation_id);
      const depth = cause ? Math.min(cause.depth + 1, DEEPEST) : 0;
      seen.set(event.event_id, { depth, event });
      const causedBy = cause
        ? button(`caused by #${cause.event.position} ${cause.event.type} (${cause.event.stream_id})`, () => {
          const target = document.getElementById(`event-${cause.event.event_id}`);
          target.scrollIntoView({ block: 'center' });
          target.classList.remove('flash');
          void target.offsetWidth;
          target.classList.add('flash');
        }, { class: 'cause' })
        : el('span', { class: 'cause root' }, `caused by command ${event.causation_id || '?'}`);
      return el('li', {
        id: `event-${event.event_id}`,
        class: `trace-event depth-${depth}`,
        'data-type': event.type,
        'data-stream': event.stream_id,
      },
      el('div', { class: 'line' },
        el('span', { class: 'position' }, `#${event.position}`), ' ',
        el('strong', { class: 'type' }, event.type), ' ',
        el('span', { class: 'stream' }, `${event.stream_id} v${event.version}`), ' ',
        el('time', {}, when(event.recorded_at))),
      el('div', { class: 'line' }, causedBy,
        event.metadata && event.metadata.actor ? el('span', { class: 'muted' }, ` · by ${event.metadata.actor}`) : null),
      el('code', { class: 'data' }, JSON.stringify(event.data)));
    });
    render(
      el('h1', {}, 'Causal trace of order ', el('code', {}, trace.order_id)),
      el('div', { class: 'actions' }, link(`#/sagas/${encodeURIComponent(trace.order_id)}`, 'Its saga')),
      summary,
      el('p', { class: 'muted' }, `${trace.events.length} events in global order; each is indented under the event that caused it.`),
      trace.truncated ? el('p', { class: 'problem' }, 'Cut at its first events: the trace is longer.') : null,
      el('ol', { id: 'trace', class: 'trace' }, items));
  }

  // -------------------------------------------------------- projections

  function projectionsPage() {
    render(el('h1', {}, 'Projections'), el('p', { class: 'muted' }, 'Loading…'));
    const refresh = () => load(() => api('GET', '/v1/projections'), (all) => {
      drawProjections(all, refresh);
      every(3000, refresh);
    });
    refresh();
  }

  function drawProjections(all, refresh) {
    const rows = all.map((p) => {
      const rebuild = mayAct()
        ? button('Rebuild', async () => {
          rebuild.disabled = true;
          try {
            await api('POST', `/v1/projections/${encodeURIComponent(p.name)}/rebuild`);
            showNotice(`Rebuild of ${p.name} started; the current read model keeps serving until the swap.`, 'ok');
          } catch (error) {
            notice.hidden = true;
            view.prepend(problemView(error));
          }
          refresh();
        }, { class: 'rebuild', 'data-name': p.name, disabled: p.status === 'rebuilding' })
        : null;
      return el('tr', { 'data-name': p.name, 'data-status': p.status },
        el('td', {}, p.name), el('td', {}, badge(p.status)),
        el('td', { class: 'num' }, p.position), el('td', { class: 'num' }, p.lag_events),
        el('td', { class: 'num' }, p.lag_seconds === undefined ? '' : Number(p.lag_seconds).toFixed(1)),
        el('td', { class: 'num' }, p.events_applied),
        el('td', {}, p.rebuild ? `${p.rebuild.events_read} events read` : ''),
        el('td', {}, rebuild));
    });
    render(el('h1', {}, 'Projections'),
      el('p', { class: 'muted' }, 'Stalled means behind the event store with no progress for a while. Refreshed every 3 s.'),
      table('projections', ['Name', 'Status', 'Position', 'Lag (events)', 'Lag (s)', 'Events applied', 'Rebuild', ''], rows));
  }

  // ---------------------------------------------------------------- job

  function jobPage(jobId) {
    render(el('h1', {}, 'Bulk retry'), el('p', { class: 'muted' }, 'Loading…'));
    const refresh = () => load(() => api('GET', `/v1/sagas/retry/${encodeURIComponent(jobId)}`), (job) => {
      drawJob(job);
      const unsettled = job.items.some((i) => i.outcome === 'retried' && !i.left_failed);
      if (job.status === 'running' || unsettled) every(1500, refresh);
    });
    refresh();
  }

  function drawJob(job) {
    const counts = el('dl', { class: 'summary' },
      el('dt', {}, 'Status'), el('dd', { id: 'job-status' }, badge(job.status)),
      el('dt', {}, 'Requested by'), el('dd', {}, `${job.requested_by || '?'} at ${when(job.requested_at)}`),
      el('dt', {}, 'Finished'), el('dd', {}, when(job.finished_at)),
      el('dt', {}, 'Filter'), el('dd', {}, el('code', {}, JSON.stringify(
        Object.fromEntries(Object.entries(job.filter || {}).filter(([, v]) => v !== null))))),
      el('dt', {}, 'Sagas'), el('dd', {}, `${job.total} in all: ${job.pending} pending, ${job.retried} retried, ${job.skipped} skipped`),
      el('dt', {}, 'Left failed'), el('dd', { id: 'job-left-failed' }, `${job.left_failed} of ${job.total}`));
    const done = job.total - job.pending;
    const items = table('job-items', ['Order', 'Outcome', 'Saga now', 'Left failed'], job.items.map((item) =>
      el('tr', { 'data-order-id': item.order_id, 'data-left-failed': item.left_failed ? 'yes' : 'no' },
        el('td', {}, link(`#/sagas/${encodeURIComponent(item.order_id)}`, el('code', {}, item.order_id))),
        el('td', {}, badge(item.outcome)),
        el('td', {}, item.status ? badge(item.status) : '—'),
        el('td', {}, item.left_failed ? 'yes' : 'no'))));
    render(el('h1', {}, 'Bulk retry job ', el('code', {}, job.job_id)),
      el('progress', { max: job.total || 1, value: done }), counts,
      job.items_truncated ? el('p', { class: 'muted' }, 'Only the first sagas are listed.') : null,
      items,
      el('p', {}, link('#/sagas?status=failed', 'Failed sagas')));
  }

  // --------------------------------------------------------------- boot

  document.getElementById('sign-in-form').addEventListener('submit', signIn);
  document.getElementById('sign-out').addEventListener('click', signOut);
  window.addEventListener('hashchange', route);
  route();
})();
