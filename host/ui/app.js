// wasmtrigger's web page: triggers, their runs, and each run's way through
// the engine, kept live by the run stream. Plain JavaScript, no build step.
// Data is only ever written into the page as text (textContent), never as
// markup: event payloads come from the outside world.
'use strict';

const TOKEN_KEY = 'wasmtrigger.apiToken';
const PAGE_SIZE = 50;
const MAX_ROWS = 500;

// ---- small helpers -------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = String(value);
    else if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function status(text) {
  return el('span', { class: 'status ' + text, text });
}

function when(iso) {
  if (!iso) return '—';
  const t = new Date(iso);
  return isNaN(t) ? iso : t.toLocaleString();
}

function ms(n) {
  if (n === undefined || n === null) return '—';
  return n < 1000 ? n + ' ms' : (n / 1000).toFixed(n < 10000 ? 2 : 1) + ' s';
}

function triggerLink(name) {
  return el('a', { href: '#/trigger/' + encodeURIComponent(name), text: name });
}

function runLink(id, text) {
  return el('a', { href: '#/run/' + encodeURIComponent(id), text: text || id });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ---- the API ---------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, options) {
  const opts = options || {};
  const headers = { accept: 'application/json' };
  if (token()) headers.authorization = 'Bearer ' + token();
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(path, {
    method: opts.method || 'GET',
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const why = (body && body.error) || response.statusText;
    if (response.status === 401) {
      throw new ApiError(401, 'refused: the API needs its token — enter it above (' + why + ')');
    }
    throw new ApiError(response.status, why);
  }
  return body;
}

function ask(question) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = question;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'yes'), { once: true });
    dialog.showModal();
    document.getElementById('confirm-no').focus();
  });
}

// ---- pages -------------------------------------------------------------------

const main = () => document.getElementById('main');
let page = null; // { onRuns(runs), refresh() }

function show(...nodes) {
  main().replaceChildren(...nodes.flat().filter((n) => n !== null && n !== undefined && n !== false));
}

function problemList(problems) {
  return el('ul', { class: 'problems' },
    problems.map((p) => el('li', {}, el('strong', { text: p.origin + ': ' }), p.message)));
}

function sparkline(counts) {
  const width = 120, height = 22;
  const max = Math.max(1, ...counts);
  const bar = width / counts.length;
  const chart = svg('svg', { class: 'spark', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img' });
  const total = counts.reduce((a, b) => a + b, 0);
  chart.setAttribute('aria-label', total + ' runs in the last hour');
  counts.forEach((n, i) => {
    const h = Math.round((n / max) * (height - 2));
    if (h > 0) chart.append(svg('rect', { x: (i * bar).toFixed(2), y: height - h, width: Math.max(1, bar - 0.5).toFixed(2), height: h }));
  });
  const title = svg('title');
  title.textContent = counts[counts.length - 1] + ' this minute, ' + total + ' in the last hour';
  chart.append(title);
  return chart;
}

async function triggersPage() {
  const data = await api('/api/v1/triggers');
  const triggers = data.triggers.slice().sort((a, b) => a.name.localeCompare(b.name));
  const rows = triggers.map((t) => el('tr', { 'data-trigger': t.name },
    el('td', {}, triggerLink(t.name)),
    el('td', {}, status(t.state), t.problems ? el('div', { class: 'muted' }, t.problems.join('\n')) : null),
    el('td', { text: t.source }),
    el('td', { class: 'mono' }, (t.modules || []).join(', ') || '—'),
    el('td', {}, when(t.lastSuccess)),
    el('td', {}, when(t.lastFailure), t.lastError ? el('div', { class: 'muted', text: t.lastError }) : null),
    el('td', { class: 'num' }, `${t.successes || 0} / ${t.failures || 0} / ${t.filtered || 0}`),
    el('td', {}, t.perMinute ? sparkline(t.perMinute) : '—'),
    el('td', {}, t.shadow ? `${t.shadow.matched} match / ${t.shadow.differed} diff / ${t.shadow.errors} error` : '—'),
  ));
  const latest = el('tbody', { id: 'latest-runs' });
  const recent = await api('/api/v1/runs?limit=20');
  for (const run of recent.runs) latest.append(runRow(run, true));
  show(
    el('h1', { text: 'Triggers' }),
    (data.problems || []).length ? el('div', { class: 'error-box', role: 'alert' },
      el('strong', { text: 'Not applied (the previous version keeps running):' }), problemList(data.problems)) : null,
    el('table', { id: 'triggers' },
      el('thead', {}, el('tr', {},
        ['Trigger', 'State', 'Source', 'Modules', 'Last success', 'Last failure'].map((h) => el('th', { text: h })),
        el('th', { class: 'num', text: 'Succeeded / failed / filtered' }),
        el('th', { text: 'Runs per minute (1 h)' }), el('th', { text: 'Shadow' }))),
      el('tbody', {}, rows)),
    el('h2', { text: 'Latest runs' }),
    el('table', {}, runHead(true), latest),
  );
  let refreshing = null;
  return {
    onRuns(runs) {
      for (const run of runs) {
        latest.prepend(runRow(run, true));
      }
      while (latest.children.length > 20) latest.lastChild.remove();
      // Counts and charts: at most one reload a second.
      if (!refreshing) {
        refreshing = setTimeout(async () => {
          refreshing = null;
          if (page && page.kind === 'triggers') route();
        }, 1000);
      }
    },
    kind: 'triggers',
  };
}

function runHead(withTrigger) {
  return el('thead', {}, el('tr', {},
    el('th', { text: 'Run' }),
    withTrigger ? el('th', { text: 'Trigger' }) : null,
    el('th', { text: 'Status' }), el('th', { text: 'Started' }), el('th', { class: 'num', text: 'Duration' }),
    el('th', { text: 'Event' }), el('th', { text: 'Error or output' })));
}

function runRow(run, withTrigger) {
  const detail = run.status === 'failed' ? run.error : run.output;
  return el('tr', { 'data-run': run.runId, 'data-status': run.status },
    el('td', { class: 'mono' }, runLink(run.runId, run.runId.slice(0, 13) + '…')),
    withTrigger ? el('td', {}, triggerLink(run.trigger)) : null,
    el('td', {}, status(run.status), run.dryRun ? el('span', { class: 'muted', text: ' dry run' }) : null),
    el('td', { text: when(run.startedAt) }),
    el('td', { class: 'num', text: ms(run.durationMs) }),
    el('td', { class: 'mono', text: run.eventId }),
    el('td', { class: 'mono', text: (detail || '').slice(0, 160) }),
  );
}

async function triggerPage(name, params) {
  const data = await api('/api/v1/triggers');
  const t = data.triggers.find((x) => x.name === name);
  const upstream = data.triggers.filter((x) => (x.onSuccess || []).includes(name) || (x.onFailure || []).includes(name));
  const filters = {
    status: params.get('status') || '',
    since: params.get('since') || '',
    event: params.get('event') || '',
  };
  const table = el('tbody', { id: 'runs' });
  const more = el('button', { type: 'button', id: 'older', text: 'Older runs' });
  let oldest = null;
  async function load(before) {
    const q = new URLSearchParams({ trigger: name, limit: String(PAGE_SIZE) });
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    if (before) q.set('before', before);
    const page = await api('/api/v1/runs?' + q.toString());
    for (const run of page.runs) table.append(runRow(run, false));
    oldest = page.runs.length ? page.runs[page.runs.length - 1].runId : oldest;
    more.hidden = page.runs.length < PAGE_SIZE;
  }
  more.addEventListener('click', () => load(oldest).catch(showError));
  const statusSelect = el('select', { id: 'filter-status', name: 'status' },
    ['', 'succeeded', 'failed', 'filtered'].map((s) => el('option', { value: s, text: s || 'any', selected: s === filters.status })));
  const sinceInput = el('input', { id: 'filter-since', name: 'since', placeholder: '15m or 2026-11-30T10:00:00Z', value: filters.since });
  const eventInput = el('input', { id: 'filter-event', name: 'event', placeholder: 'event id', value: filters.event });
  const form = el('form', { class: 'filters', id: 'filters' },
    el('label', {}, 'Status', statusSelect),
    el('label', {}, 'Since', sinceInput),
    el('label', {}, 'Event id', eventInput),
    el('button', { type: 'submit', id: 'apply-filters', text: 'Filter' }));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (statusSelect.value) q.set('status', statusSelect.value);
    if (sinceInput.value.trim()) q.set('since', sinceInput.value.trim());
    if (eventInput.value.trim()) q.set('event', eventInput.value.trim());
    location.hash = '#/trigger/' + encodeURIComponent(name) + (q.toString() ? '?' + q : '');
  });
  const chain = (label, names) => names.length
    ? el('dd', {}, names.map((n, i) => [i ? ', ' : '', triggerLink(n)]))
    : el('dd', { class: 'muted', text: 'none' });
  show(
    el('p', {}, el('a', { href: '#/', text: '← all triggers' })),
    el('h1', {}, 'Trigger ', el('span', { class: 'mono', text: name })),
    t && t.problems ? el('div', { class: 'error-box', role: 'alert', text: t.problems.join('\n') }) : null,
    el('dl', { class: 'facts' },
      el('dt', { text: 'State' }), el('dd', {}, t ? status(t.state) : status('gone')),
      el('dt', { text: 'Source' }), el('dd', { text: t ? t.source : '—' }),
      el('dt', { text: 'Modules' }), el('dd', { class: 'mono', text: t && t.modules ? t.modules.join(', ') : '—' }),
      el('dt', { text: 'Runs' }), el('dd', { text: t ? `${t.successes || 0} succeeded, ${t.failures || 0} failed, ${t.filtered || 0} filtered` : '—' }),
      el('dt', { text: 'Upstream' }), chain('Upstream', upstream.map((x) => x.name)),
      el('dt', { text: 'On success' }), chain('On success', t ? t.onSuccess || [] : []),
      el('dt', { text: 'On failure' }), chain('On failure', t ? t.onFailure || [] : []),
      t && t.shadow ? [el('dt', { text: 'Shadow' }), el('dd', { text: `${t.shadow.matched} match, ${t.shadow.differed} diff, ${t.shadow.errors} error` })] : null,
    ),
    el('h2', { text: 'Runs' }),
    form,
    el('table', {}, runHead(false), table),
    el('div', { class: 'buttons' }, more),
  );
  await load(null);
  const filtered = filters.status || filters.since || filters.event;
  return {
    kind: 'trigger',
    onRuns(runs) {
      const mine = runs.filter((r) => r.trigger === name && (!filters.status || r.status === filters.status)
        && (!filters.event || r.eventId === filters.event));
      if (filtered && filters.since === '' && !mine.length) return;
      for (const run of mine) table.prepend(runRow(run, false));
      while (table.children.length > MAX_ROWS) table.lastChild.remove();
    },
  };
}

function jsonTree(value, depth) {
  if (value === null || typeof value !== 'object') {
    const cls = typeof value === 'string' ? 's' : typeof value === 'number' ? 'n' : 'b';
    return el('span', { class: cls, text: JSON.stringify(value) });
  }
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  const open = Array.isArray(value) ? '[' : '{';
  const close = Array.isArray(value) ? ']' : '}';
  if (!entries.length) return el('span', { text: open + close });
  const box = el('details', { class: 'json', open: depth < 3 },
    el('summary', { text: `${open} ${entries.length} ${Array.isArray(value) ? 'items' : 'keys'} ${close}` }));
  for (const [k, v] of entries) {
    box.append(el('div', { class: 'json-line' },
      Array.isArray(value) ? null : el('span', { class: 'k', text: JSON.stringify(k) + ': ' }),
      jsonTree(v, depth + 1)));
  }
  return box;
}

async function getRun(id) {
  // A run announced by the stream is stored a moment after: ask again briefly.
  for (let i = 0; ; i++) {
    try {
      return await api('/api/v1/runs/' + encodeURIComponent(id));
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 404 || i >= 10) throw e;
      await sleep(200);
    }
  }
}

function compared(title, part) {
  if (!part || part.same) return null;
  return el('div', {}, el('h3', { text: title }),
    el('table', {}, el('tbody', {},
      el('tr', {}, el('th', { text: 'recorded' }), el('td', { class: 'mono' }, el('pre', { text: JSON.stringify(part.recorded, null, 2) }))),
      el('tr', {}, el('th', { text: 'now' }), el('td', { class: 'mono' }, el('pre', { text: JSON.stringify(part.replayed, null, 2) }))))));
}

async function runPage(id) {
  const run = await getRun(id);
  const rec = run.recording || {};
  const result = el('div', { class: 'result', id: 'action-result', role: 'status', 'aria-live': 'polite' });
  const eventData = rec.event && rec.event.data !== undefined && rec.event.data !== null ? rec.event.data : null;
  async function act(question, doit) {
    if (!(await ask(question))) {
      result.replaceChildren(el('span', { class: 'muted', text: 'Cancelled.' }));
      return;
    }
    result.replaceChildren(el('span', { class: 'muted', text: 'Working…' }));
    try {
      result.replaceChildren(...(await doit()).filter((n) => n));
    } catch (e) {
      result.replaceChildren(el('div', { class: 'error-box', role: 'alert', text: e.message }));
    }
  }
  const replay = el('button', { type: 'button', id: 'replay', text: 'Replay' });
  replay.addEventListener('click', () => act(
    'Replay this run? Its event goes through the recorded filter and action again, every capability call answered from the recording: nothing is sent.',
    async () => {
      const report = await api('/api/v1/runs/' + encodeURIComponent(id) + '/replay', { method: 'POST', body: {} });
      return [el('p', {}, 'Replay: ', status(report.identical ? 'identical' : 'different'), ' ', el('span', { class: 'muted', text: (report.modules || []).join(', ') })),
        compared('Verdict', report.verdict), compared('Output', report.output), compared('Error', report.error), compared('Calls', report.calls),
        (report.divergences || []).length ? el('ul', {}, report.divergences.map((d) => el('li', { class: 'mono', text: d }))) : null];
    }));
  const redrive = el('button', { type: 'button', id: 'redrive', text: 'Redrive' });
  redrive.addEventListener('click', () => act(
    `Resubmit this run's event to ${run.trigger} as a new event? Its action runs again, for real.`,
    async () => {
      const answer = await api('/api/v1/triggers/' + encodeURIComponent(run.trigger) + '/redrive',
        { method: 'POST', body: { runIds: [id], status: 'any' } });
      const sent = answer.redriven || [];
      if (!sent.length) {
        const skipped = (answer.skipped || []).map((s) => s.reason).join('; ');
        return [el('p', { text: 'Not resubmitted: ' + (skipped || 'nothing matched') })];
      }
      return [el('p', { text: 'Resubmitted as event ' + sent[0].eventId + '.' })];
    }));
  const fire = el('button', { type: 'button', id: 'fire', text: 'Fire again' });
  fire.addEventListener('click', () => act(
    `Fire ${run.trigger} now with this run's event data?`,
    async () => {
      let data = {};
      try { data = eventData === null ? {} : JSON.parse(eventData); } catch (_) { data = {}; }
      const answer = await api('/api/v1/triggers/' + encodeURIComponent(run.trigger) + '/fire',
        { method: 'POST', body: { data } });
      return [el('p', { text: 'Fired: event ' + answer.eventId + '.' })];
    }));

  const attempts = run.attempts || [];
  const attemptRows = attempts.map((a, i) => {
    let backoff = '—';
    if (i > 0) {
      const prev = attempts[i - 1];
      const gap = new Date(a.startedAt) - new Date(prev.startedAt) - prev.durationMs;
      if (!isNaN(gap)) backoff = ms(Math.max(0, gap));
    }
    return el('tr', {}, el('td', { class: 'num', text: a.number }), el('td', { text: when(a.startedAt) }),
      el('td', { class: 'num', text: ms(a.durationMs) }), el('td', { class: 'num', text: backoff }),
      el('td', { class: 'mono', text: a.error || '' }), el('td', { text: a.reason || '' }));
  });
  const maxUs = Math.max(1, ...(rec.calls || []).map((c) => c.durationUs || 0));
  const callRows = (rec.calls || []).map((c) => {
    const fill = el('div', { class: 'bar-fill' });
    fill.style.width = Math.max(1, Math.round(((c.durationUs || 0) / maxUs) * 100)) + '%';
    return el('tr', {}, el('td', { class: 'num', text: c.atMs + ' ms' }),
      el('td', { text: c.phase === 'filter' ? 'filter' : 'action #' + c.attempt }),
      el('td', { class: 'mono', text: c.interface + '.' + c.function }),
      el('td', { class: 'mono', text: c.args }),
      el('td', {}, el('span', { class: 'status ' + (c.outcome === 'ok' ? 'succeeded' : 'failed'), text: c.outcome })),
      el('td', { class: 'mono', text: c.answer === undefined ? (c.answerBytes ? c.answerBytes + ' bytes, not kept' : '') : JSON.stringify(c.answer).slice(0, 300) }),
      el('td', { class: 'num bar-cell' }, (c.durationUs / 1000).toFixed(2) + ' ms', fill));
  });
  const logRows = (rec.logs || []).map((l) => el('tr', {},
    el('td', { class: 'num', text: l.atMs + ' ms' }), el('td', { text: l.phase === 'filter' ? 'filter' : 'action #' + l.attempt }),
    el('td', { text: l.level }), el('td', { class: 'mono', text: l.message })));
  let parsed = null;
  if (eventData !== null) {
    try { parsed = JSON.parse(eventData); } catch (_) { parsed = eventData; }
  }
  const verdict = rec.verdict;
  const section = (title, id, ...body) => [el('h2', { id, text: title }), ...body];
  const shadowBox = el('div', { id: 'shadow' });
  const downstream = el('ul', { id: 'downstream' });
  show(
    el('p', {}, el('a', { href: '#/', text: '← all triggers' }), ' · ', triggerLink(run.trigger)),
    el('h1', {}, 'Run ', el('span', { class: 'mono', text: run.runId }), ' ', status(run.status)),
    run.status === 'failed' ? el('div', { class: 'error-box', id: 'run-error', role: 'alert', text: run.error || 'failed' }) : null,
    el('div', { class: 'buttons' }, replay, redrive, fire),
    result,
    el('dl', { class: 'facts' },
      el('dt', { text: 'Trigger' }), el('dd', {}, triggerLink(run.trigger)),
      el('dt', { text: 'Event' }), el('dd', { class: 'mono', text: `${run.eventId} (${run.source}, ${run.kind})` }),
      el('dt', { text: 'Started' }), el('dd', { text: `${when(run.startedAt)} (queued ${ms(run.queuedMs)}, ran ${ms(run.durationMs)})` }),
      el('dt', { text: 'Filter' }), el('dd', { class: 'mono', text: run.filter || 'none' }),
      el('dt', { text: 'Action' }), el('dd', { class: 'mono', text: run.module || '—' }),
      run.dryRun ? [el('dt', { text: 'Dry run' }), el('dd', { text: 'yes: side effects were suppressed' })] : null,
      run.replayed ? [el('dt', { text: 'Delivery' }), el('dd', { text: `replayed from the journal (delivery ${run.delivery})` })] : null,
      run.redriveOf ? [el('dt', { text: 'Redrive of' }), el('dd', {}, runLink(run.redriveOf))] : null,
      run.upstream ? [el('dt', { text: 'Upstream' }), el('dd', {}, runLink(run.upstream.runId), ` (${run.upstream.trigger}, ${run.upstream.status})`)] : null,
    ),
    section('Verdict', 'verdict', el('p', { id: 'verdict-text' },
      !verdict ? 'No filter: every event goes to the action.'
        : [verdict.filter === 'cel' ? 'CEL ' : 'Filter ', el('code', { text: verdict.expression || verdict.filter }), ' → ',
          verdict.passed === true ? el('span', { class: 'status succeeded', text: 'passed' })
            : verdict.passed === false ? el('span', { class: 'status filtered', text: 'dropped the event' })
              : el('span', { class: 'status failed', text: 'failed' })])),
    section('Attempts', 'attempts', attempts.length
      ? el('table', {}, el('thead', {}, el('tr', {}, ['#', 'Started', 'Duration', 'Backoff before', 'Error', 'Reason'].map((h) => el('th', { text: h })))), el('tbody', {}, attemptRows))
      : el('p', { class: 'muted', text: 'The action did not run.' })),
    section('Log', 'log', logRows.length
      ? el('table', { id: 'log-lines' }, el('thead', {}, el('tr', {}, ['At', 'Where', 'Level', 'Message'].map((h) => el('th', { text: h })))), el('tbody', {}, logRows))
      : el('p', { class: 'muted', text: 'No log lines.' }),
      rec.droppedLogLines ? el('p', { class: 'muted', text: rec.droppedLogLines + ' more lines were not kept.' }) : null),
    section('Capability calls', 'calls', callRows.length
      ? el('table', { id: 'call-timeline' }, el('thead', {}, el('tr', {}, ['At', 'Where', 'Call', 'Arguments', 'Outcome', 'Answer', 'Duration'].map((h) => el('th', { text: h })))), el('tbody', {}, callRows))
      : el('p', { class: 'muted', text: 'No capability calls.' })),
    section('Output', 'output', run.output ? el('pre', { text: run.output }) : el('p', { class: 'muted', text: run.status === 'failed' ? 'None: the run failed.' : 'None.' })),
    section('Event', 'event', parsed === null
      ? el('p', { class: 'muted', text: rec.event ? `Not kept (${rec.event.dataBytes} bytes, over engine.history.maxEventSize).` : 'Not recorded.' })
      : el('div', { class: 'json-root', id: 'event-data' }, jsonTree(parsed, 0))),
    section('Downstream runs', 'downstream-title', downstream),
    section('Shadow', 'shadow-title', shadowBox),
  );
  // Downstream runs: the recent runs of the triggers this one starts, whose upstream is this run.
  const triggers = await api('/api/v1/triggers');
  const me = triggers.triggers.find((x) => x.name === run.trigger) || {};
  const next = [...new Set([...(me.onSuccess || []), ...(me.onFailure || [])])];
  for (const name of next) {
    const runs = await api('/api/v1/runs?limit=200&trigger=' + encodeURIComponent(name));
    for (const r of runs.runs.filter((x) => x.upstream && x.upstream.runId === run.runId)) {
      downstream.append(el('li', {}, runLink(r.runId), ` ${r.trigger} `, status(r.status)));
    }
  }
  if (!downstream.children.length) downstream.append(el('li', { class: 'muted', text: 'none' }));
  if (me.shadow) {
    const view = await api('/api/v1/triggers/' + encodeURIComponent(run.trigger) + '/shadow');
    const mine = (view.latest || []).find((s) => s.runId === run.runId);
    shadowBox.append(mine
      ? el('div', {}, el('p', {}, 'Candidate ', el('code', { text: mine.candidate || view.candidate }), ': ', status(mine.outcome)),
        compared('Output', mine.output), compared('Error', mine.error), compared('Calls', mine.calls))
      : el('p', { class: 'muted', text: 'Not among the latest shadow comparisons.' }));
  } else {
    shadowBox.append(el('p', { class: 'muted', text: 'This trigger has no shadow candidate.' }));
  }
  return { kind: 'run', onRuns() {} };
}

function showError(e) {
  show(el('div', { class: 'error-box', role: 'alert', id: 'page-error', text: e.message }),
    el('p', {}, el('a', { href: '#/', text: 'Back to the triggers' })));
}

let routing = 0;
async function route() {
  const mine = ++routing;
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query] = hash.split('?');
  const params = new URLSearchParams(query || '');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  try {
    let next;
    if (parts[0] === 'trigger' && parts[1]) next = await triggerPage(parts[1], params);
    else if (parts[0] === 'run' && parts[1]) next = await runPage(parts[1]);
    else next = await triggersPage();
    if (mine === routing) page = next;
  } catch (e) {
    if (mine === routing) {
      page = null;
      showError(e);
    }
  }
}

// ---- the live stream -------------------------------------------------------

let pending = [];
let flushing = null;

function deliver(runs) {
  // Counters a benchmark reads to see whether the page keeps up.
  window.wasmtriggerRunsSeen = (window.wasmtriggerRunsSeen || 0) + runs.length;
  window.wasmtriggerStreamMessages = (window.wasmtriggerStreamMessages || 0) + 1;
  pending.push(...runs);
  // Coalesce: one page update per 200 ms however fast runs come.
  if (!flushing) {
    flushing = setTimeout(() => {
      const batch = pending;
      pending = [];
      flushing = null;
      if (page && batch.length) page.onRuns(batch.reverse());
    }, 200);
  }
}

function setLive(text, on) {
  const live = document.getElementById('live');
  live.textContent = text;
  live.classList.toggle('on', !!on);
}

let streamGeneration = 0;

async function follow() {
  const mine = ++streamGeneration;
  let lastId = null;
  while (mine === streamGeneration) {
    try {
      const headers = { accept: 'text/event-stream' };
      if (token()) headers.authorization = 'Bearer ' + token();
      if (lastId) headers['last-event-id'] = lastId;
      const response = await fetch('/api/v1/runs/stream', { headers });
      if (response.status === 401) {
        setLive('not live: needs the API token');
        return;
      }
      if (!response.ok) throw new Error('stream: ' + response.status);
      setLive('live', true);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      while (mine === streamGeneration) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = 'message', data = '', id = null;
          for (const line of block.split('\n')) {
            if (line.startsWith('event: ')) name = line.slice(7);
            else if (line.startsWith('data: ')) data += line.slice(6);
            else if (line.startsWith('id: ')) id = line.slice(4);
          }
          if (id) lastId = id;
          if (name === 'runs') deliver(JSON.parse(data));
          else if (name === 'resync' || name === 'lagged') route();
        }
      }
      if (mine !== streamGeneration) reader.cancel();
    } catch (_) {
      // reconnect below
    }
    if (mine !== streamGeneration) return;
    setLive('reconnecting…');
    await sleep(1000);
  }
}

// ---- start -------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  const form = document.getElementById('login');
  const input = document.getElementById('token');
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (input.value.trim()) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = '';
    follow();
    route();
  });
  document.getElementById('logout-button').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    streamGeneration++;
    setLive('not live: needs the API token');
  });
  window.addEventListener('hashchange', route);
  follow();
  route();
});
