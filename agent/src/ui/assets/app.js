// berth's web view: hash-routed pages that read and act through berth's own REST API (the
// same paths, JSON and api-version as the CLI), with the session cookie and, on actions,
// the session's CSRF header. Text goes in with textContent only (no HTML from data), and
// no secret field (registry passwords, SAS URLs, environment) is ever shown.
'use strict';

const API_VERSION = '2024-07-01.20.0';
const TASK_STATES = ['active', 'preparing', 'running', 'completed'];
const NODE_STATES = ['idle', 'running', 'starting', 'waitingforstarttask', 'starttaskfailed',
  'unusable', 'unknown', 'offline', 'leavingpool'];
let session = null;

// ---- small helpers ----

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}

function stateBadge(s) {
  const v = String(s || 'unknown');
  return el('span', { class: 'state s-' + v.toLowerCase() }, v);
}

// A timestamp in the viewer's zone; UTC on hover.
function ts(iso) {
  if (!iso) return el('span', { class: 'muted' }, '-');
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  return el('time', { datetime: iso, title: 'UTC ' + d.toISOString() }, d.toLocaleString());
}

function props(pairs) {
  const dl = el('dl', { class: 'props' });
  for (const [k, v] of pairs) {
    if (v === undefined) continue;
    dl.append(el('dt', {}, k), el('dd', {}, v === null || v === '' ? '-' : v));
  }
  return dl;
}

function enc(s) { return encodeURIComponent(s); }

// Only the path and query of a link (an odata.nextLink may name another host).
function localPath(link) {
  const u = new URL(link, location.origin);
  return u.pathname + u.search;
}

function setStatus(text, error) {
  const s = document.getElementById('status');
  s.textContent = text || '';
  s.className = error ? 'error' : '';
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || ('HTTP ' + status));
    this.status = status;
    this.code = code;
  }
}

function versioned(path) {
  if (path.includes('api-version=')) return path;
  return path + (path.includes('?') ? '&' : '?') + 'api-version=' + API_VERSION;
}

// One call of berth's API. Actions send the CSRF header; a 401 goes back to the login.
async function api(method, path, opts) {
  const o = opts || {};
  const headers = Object.assign({}, o.headers);
  if (method !== 'GET' && method !== 'HEAD') {
    headers['x-berth-csrf'] = session.csrf;
    headers['content-type'] = 'application/json; odata=minimalmetadata';
  }
  const r = await fetch(versioned(path), {
    method, headers, credentials: 'same-origin', cache: 'no-store',
    body: method === 'GET' || method === 'HEAD' ? undefined : JSON.stringify(o.body || {}),
  });
  if (r.status === 401) {
    location.href = '/ui/login';
    throw new ApiError(401, 'AuthenticationFailed', 'not logged in');
  }
  if (o.raw) return r;
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!r.ok) {
    const msg = body && body.message ? (body.message.value || body.message) : text;
    throw new ApiError(r.status, body && body.code, msg);
  }
  return body;
}

// Every page of a list, up to `limit` items.
async function listAll(path, limit) {
  let out = [];
  let next = path;
  while (next && out.length < limit) {
    const page = await api('GET', next);
    out = out.concat(page.value || []);
    next = page['odata.nextLink'] ? localPath(page['odata.nextLink']) : null;
  }
  return out;
}

// An action button: asks first when `confirmText`, reports the outcome in the status line.
function actionButton(label, confirmText, run, danger) {
  const b = el('button', { type: 'button', class: danger ? 'danger' : '' }, label);
  if (session && session.access === 'readOnly') {
    b.title = 'read-only token: the server refuses actions';
  }
  b.addEventListener('click', async () => {
    if (confirmText && !window.confirm(confirmText)) return;
    b.disabled = true;
    try {
      await run();
      setStatus(label + ': done');
      poller.now();
    } catch (e) {
      setStatus(label + ' refused: ' + (e.status ? e.status + ' ' : '') + (e.code ? e.code + ': ' : '') + e.message, true);
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

// ---- refresh: poll with backoff, paused while the page is hidden ----

const poller = {
  timer: null, delay: 2000, run: null, gen: 0, failed: false, busy: false, again: false,
  start(fn) {
    this.run = fn; this.delay = 2000; this.gen++;
    this.now();
  },
  // Runs the page's refresh now; one at a time (a call meanwhile runs once more after it).
  async now() {
    clearTimeout(this.timer);
    if (!this.run || document.hidden) return;
    if (this.busy) { this.again = true; return; }
    this.busy = true;
    const gen = this.gen;
    let more = true;
    try {
      more = await this.run();
      this.delay = 2000;
      if (gen === this.gen && this.failed) setStatus('');
      this.failed = false;
    } catch (e) {
      if (gen === this.gen) {
        this.failed = true;
        this.delay = Math.min(this.delay * 2, 30000);
        setStatus('refresh failed (' + e.message + '); retrying in ' + Math.round(this.delay / 1000) + ' s', true);
      }
    } finally {
      this.busy = false;
    }
    clearTimeout(this.timer);
    if (this.again || gen !== this.gen) { this.again = false; this.now(); return; }
    if (more !== false) this.timer = setTimeout(() => this.now(), this.delay);
  },
};
document.addEventListener('visibilitychange', () => {
  if (document.hidden) clearTimeout(poller.timer); else poller.now();
});

// ---- pages ----

const main = () => document.getElementById('main');

function page(title, ...kids) {
  const m = main();
  m.replaceChildren(el('h1', {}, title), ...kids);
  document.title = title + ' - berth';
}

// All nodes: the agent's one, or every pool's through the service.
async function allNodes() {
  if (session.mode === 'agent') {
    return [await api('GET', '/node')];
  }
  const pools = await listAll('/pools', 1000);
  let nodes = [];
  for (const p of pools) {
    const ns = await listAll('/pools/' + enc(p.id) + '/nodes', 100000);
    nodes = nodes.concat(ns.map((n) => Object.assign({ poolId: p.id }, n)));
  }
  return nodes;
}

function nodeHref(n) { return '#/node/' + enc(n.poolId || '-') + '/' + enc(n.id); }

async function poolPage() {
  const counts = el('ul', { class: 'legend', id: 'node-counts', 'aria-label': 'Nodes by state' });
  const grid = el('div', { class: 'heatmap', id: 'heatmap' });
  const errors = el('div', { id: 'node-errors' });
  page('Nodes', counts, grid, errors);
  poller.start(async () => {
    const nodes = await allNodes();
    const by = {};
    for (const n of nodes) by[n.state] = (by[n.state] || 0) + 1;
    counts.replaceChildren(...Object.keys(by).sort().map((s) =>
      el('li', {}, stateBadge(s), ' ', String(by[s]))));
    grid.replaceChildren(...nodes.map((n) => {
      const cell = el('a', { class: 'cell s-' + n.state, href: nodeHref(n), 'data-node': n.id },
        el('span', { class: 'id' }, n.id),
        el('small', {}, n.state + (n.schedulingState === 'disabled' ? ' (scheduling disabled)' : '')),
        n.runningTaskSlotsCount === undefined ? null : el('small', {}, 'slots in use: ' + n.runningTaskSlotsCount),
        n.runningTasksCount === undefined ? null : el('small', {}, 'running tasks: ' + n.runningTasksCount),
        n.gpus && n.gpus.devices ? el('small', {}, 'GPUs: ' + n.gpus.devices.length) : null,
        (n.errors || []).length ? el('small', {}, 'errors: ' + n.errors.length) : null);
      return cell;
    }));
    const errs = nodes.flatMap((n) => (n.errors || []).map((e) => [n, e]));
    errors.replaceChildren(...(errs.length ? [el('h2', {}, 'Node errors'),
      el('ul', {}, errs.map(([n, e]) => el('li', {}, el('a', { href: nodeHref(n) }, n.id), ': ',
        e.code + ' - ' + e.message)))] : []));
  });
}

// A job's task counts (Batch's /taskcounts, on the agent and the service alike).
async function taskCounts(jobId) {
  const c = await api('GET', '/jobs/' + enc(jobId) + '/taskcounts');
  return c.taskCounts;
}

function countsBar(c) {
  const parts = [['active', c.active], ['running', c.running], ['succeeded', c.succeeded], ['failed', c.failed]];
  const total = parts.reduce((a, [, n]) => a + (n || 0), 0);
  const bar = el('div', { class: 'bar', role: 'img',
    'aria-label': parts.map(([k, n]) => k + ' ' + (n || 0)).join(', ') });
  for (const [k, n] of parts) {
    if (!n) continue;
    const s = el('span', { class: 'b-' + k, title: k + ': ' + n });
    s.style.width = (100 * n / total) + '%';
    bar.append(s);
  }
  return el('div', {}, bar, el('div', { class: 'counts' },
    parts.map(([k, n]) => k + ' ' + (n || 0)).join(' · ')));
}

function jobActions(j) {
  const path = '/jobs/' + enc(j.id);
  const out = [];
  if (j.state === 'active') {
    out.push(actionButton('Disable', 'Disable job ' + j.id + '? Running tasks are requeued.',
      () => api('POST', path + '/disable', { body: { disableTasks: 'requeue' } })));
  }
  if (j.state === 'disabled') {
    out.push(actionButton('Enable', null, () => api('POST', path + '/enable')));
  }
  if (j.state === 'active' || j.state === 'disabled') {
    out.push(actionButton('Terminate', 'Terminate job ' + j.id + '?',
      () => api('POST', path + '/terminate', { body: {} }), true));
  }
  if (j.state !== 'deleting') {
    out.push(actionButton('Delete', 'Delete job ' + j.id + ' and its tasks?',
      () => api('DELETE', path), true));
  }
  return el('div', { class: 'actions' }, out);
}

async function jobsPage() {
  const body = el('tbody');
  page('Jobs', el('div', { class: 'table-wrap' }, el('table', { id: 'jobs' },
    el('thead', {}, el('tr', {}, el('th', {}, 'Job'), el('th', {}, 'State'),
      el('th', { class: 'opt' }, 'Priority'), el('th', { class: 'opt' }, 'Created'),
      el('th', {}, 'Tasks'), el('th', {}, 'Actions'))), body)));
  poller.start(async () => {
    const jobs = await listAll('/jobs', 10000);
    const rows = [];
    for (const j of jobs) {
      let counts;
      try { counts = countsBar(await taskCounts(j.id)); } catch (e) { counts = el('span', { class: 'muted' }, e.message); }
      rows.push(el('tr', { 'data-job': j.id },
        el('td', {}, el('a', { href: '#/job/' + enc(j.id) }, j.id)),
        el('td', {}, stateBadge(j.state)),
        el('td', { class: 'opt' }, String(j.priority ?? 0)),
        el('td', { class: 'opt' }, ts(j.creationTime)),
        el('td', {}, counts),
        el('td', {}, jobActions(j))));
    }
    body.replaceChildren(...(rows.length ? rows : [el('tr', {}, el('td', { colspan: 6 }, 'No jobs.'))]));
  });
}

// Why an active task waits (berth's berthPendingReason), as text.
function pendingText(t) {
  const r = t.state === 'active' && t.berthPendingReason;
  return r ? 'waiting: ' + r.message : '';
}

function taskResult(t) {
  const x = t.executionInfo || {};
  if (t.state === 'active') return pendingText(t);
  if (t.state !== 'completed') return '';
  return (x.result || '') + (x.exitCode !== undefined && x.exitCode !== null ? ' (exit ' + x.exitCode + ')' : '');
}

function svg(tag, attrs, ...kids) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

// The tasks that started, one lane per node: a bar from startTime to endTime (now while
// running) in plain SVG that stretches to the width, each bar named for screen readers
// and on hover, and the same as a table for those who read rather than look.
function timeline(tasks) {
  const now = Date.now();
  const runs = tasks.filter((t) => t.executionInfo && t.executionInfo.startTime).map((t) => {
    const x = t.executionInfo;
    const start = Date.parse(x.startTime);
    const end = x.endTime ? Date.parse(x.endTime) : now;
    return { t, node: t.nodeInfo ? t.nodeInfo.nodeId : '(no node)', start, end: Math.max(end, start) };
  }).filter((r) => !isNaN(r.start));
  if (!runs.length) return [el('p', { class: 'muted' }, 'No task of this page has started.')];
  const t0 = Math.min(...runs.map((r) => r.start));
  const span = Math.max(1, Math.max(...runs.map((r) => r.end)) - t0);
  const nodes = [...new Set(runs.map((r) => r.node))].sort();
  const W = 1000;
  const lanes = nodes.map((n) => {
    // Tasks that overlap (a node's slots) take rows of their own: each the first free one.
    const mine = runs.filter((r) => r.node === n).sort((a, b) => a.start - b.start);
    const ends = [];
    const row = mine.map((r) => {
      let i = ends.findIndex((e) => e <= r.start);
      if (i < 0) { i = ends.length; ends.push(0); }
      ends[i] = r.end;
      return i;
    });
    const bars = svg('svg', { viewBox: '0 0 ' + W + ' ' + (20 * ends.length), preserveAspectRatio: 'none',
      role: 'list', 'aria-label': 'Tasks on node ' + n });
    bars.style.height = (20 * ends.length) + 'px';
    for (const [k, r] of mine.entries()) {
      const x = W * (r.start - t0) / span;
      const w = Math.max(2, W * (r.end - r.start) / span);
      const what = r.t.id + ': ' + new Date(r.start).toLocaleString() + ' to '
        + (r.t.executionInfo.endTime ? new Date(r.end).toLocaleString() : 'now (' + r.t.state + ')')
        + ' (' + ((r.end - r.start) / 1000).toFixed(1) + ' s' + (taskResult(r.t) ? ', ' + taskResult(r.t) : '') + ')';
      const rect = svg('rect', { x: x.toFixed(1), y: 20 * row[k] + 2, width: w.toFixed(1), height: 16,
        class: 'run r-' + (r.t.executionInfo.result || r.t.state), 'data-task': r.t.id,
        role: 'listitem', 'aria-label': what }, svg('title', {}, what));
      bars.append(rect);
    }
    return el('div', { class: 'lane', 'data-node': n }, el('span', { class: 'lane-node' }, n), bars);
  });
  const axis = el('div', { class: 'lane axis' }, el('span'), el('span', { class: 'counts' },
    new Date(t0).toLocaleString() + ' · ' + (span / 1000).toFixed(1) + ' s'));
  const table = el('table', { id: 'timeline-table' },
    el('thead', {}, el('tr', {}, el('th', {}, 'Node'), el('th', {}, 'Task'), el('th', {}, 'Started'), el('th', {}, 'Ended'))),
    el('tbody', {}, runs.sort((a, b) => a.node.localeCompare(b.node) || a.start - b.start).map((r) => el('tr', {},
      el('td', {}, r.node), el('td', {}, r.t.id), el('td', {}, ts(r.t.executionInfo.startTime)),
      el('td', {}, r.t.executionInfo.endTime ? ts(r.t.executionInfo.endTime) : r.t.state)))));
  return [el('div', { class: 'timeline' }, ...lanes, axis),
    el('details', {}, el('summary', {}, 'The timeline as a table'), el('div', { class: 'table-wrap' }, table))];
}

// One run of a job preparation or release task on a node, as a table cell.
function jobTaskRun(x) {
  if (!x) return el('span', { class: 'muted' }, 'not run');
  const exit = x.exitCode === undefined || x.exitCode === null ? '' : ' (exit ' + x.exitCode + ')';
  return el('span', {}, stateBadge(x.state), ' ', (x.result || '') + exit,
    x.failureInfo ? el('div', { class: 'error' }, x.failureInfo.code + ': ' + x.failureInfo.message) : null,
    x.retryCount ? el('div', { class: 'counts' }, 'retries: ' + x.retryCount) : null,
    el('div', { class: 'counts' }, ts(x.startTime), ' to ', ts(x.endTime)));
}

// Batch's jobpreparationandreleasetaskstatus, one row a node.
async function prepRelease(jobId) {
  let list;
  try {
    list = await listAll('/jobs/' + enc(jobId) + '/jobpreparationandreleasetaskstatus', 10000);
  } catch (e) {
    return [el('p', { class: 'muted' }, 'Not available here: ' + e.message)];
  }
  if (!list.length) return [el('p', { class: 'muted' }, 'No node has run the preparation task yet.')];
  return [el('div', { class: 'table-wrap' }, el('table', { id: 'prep-release' },
    el('thead', {}, el('tr', {}, el('th', {}, 'Node'), el('th', {}, 'Preparation'), el('th', {}, 'Release'))),
    el('tbody', {}, list.map((r) => el('tr', { 'data-node': r.nodeId },
      el('td', {}, r.nodeId), el('td', {}, jobTaskRun(r.jobPreparationTaskExecutionInfo)),
      el('td', {}, jobTaskRun(r.jobReleaseTaskExecutionInfo)))))))];
}

async function jobPage(jobId) {
  const head = el('div');
  const filter = el('select', { id: 'task-state', 'aria-label': 'Task state' },
    el('option', { value: '' }, 'all states'), TASK_STATES.map((s) => el('option', { value: s }, s)));
  const search = el('input', { id: 'task-search', type: 'search', placeholder: 'task id', 'aria-label': 'Find a task by id' });
  const size = el('select', { id: 'page-size', 'aria-label': 'Tasks per page' },
    [25, 100, 1000].map((n) => el('option', { value: n }, n + ' per page')));
  const prev = el('button', { type: 'button', id: 'prev-page' }, 'Previous');
  const next = el('button', { type: 'button', id: 'next-page' }, 'Next');
  const info = el('span', { class: 'muted', id: 'page-info' });
  const body = el('tbody');
  const lanes = el('div', { id: 'timeline' });
  const prep = el('div', { id: 'prep' });
  const form = el('form', { class: 'toolbar', role: 'search' }, filter, search,
    el('button', { type: 'submit' }, 'Find'), size, prev, next, info);
  page('Job ' + jobId, head, prep, el('h2', {}, 'Tasks'), form,
    el('div', { class: 'table-wrap' }, el('table', { id: 'tasks' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Task'), el('th', {}, 'State'),
        el('th', {}, 'Result'), el('th', { class: 'opt' }, 'Node'), el('th', { class: 'opt' }, 'Started'),
        el('th', { class: 'opt' }, 'Ended'))), body)),
    el('h2', {}, 'Timeline of this page\'s tasks, per node'), lanes);
  // Paging: the pages seen so far, each a path; the last is shown.
  let pages = [];
  const firstPage = () => {
    let p = '/jobs/' + enc(jobId) + '/tasks?maxresults=' + size.value;
    if (filter.value) p += '&$filter=' + enc("state eq '" + filter.value + "'");
    return p;
  };
  let nextLink = null;
  const restart = () => { pages = [firstPage()]; poller.now(); };
  filter.addEventListener('change', () => { search.value = ''; restart(); });
  size.addEventListener('change', restart);
  form.addEventListener('submit', (e) => { e.preventDefault(); poller.now(); });
  next.addEventListener('click', () => { if (nextLink) { pages.push(nextLink); poller.now(); } });
  prev.addEventListener('click', () => { if (pages.length > 1) { pages.pop(); poller.now(); } });
  pages = [firstPage()];
  const row = (t) => el('tr', { 'data-task': t.id },
    el('td', {}, el('a', { href: '#/task/' + enc(jobId) + '/' + enc(t.id) }, t.id)),
    el('td', {}, stateBadge(t.state)),
    el('td', {}, taskResult(t)),
    el('td', { class: 'opt' }, t.nodeInfo ? t.nodeInfo.nodeId : ''),
    el('td', { class: 'opt' }, ts(t.executionInfo && t.executionInfo.startTime)),
    el('td', { class: 'opt' }, ts(t.executionInfo && t.executionInfo.endTime)));
  poller.start(async () => {
    const j = await api('GET', '/jobs/' + enc(jobId));
    head.replaceChildren(props([
      ['State', stateBadge(j.state)], ['Priority', String(j.priority ?? 0)],
      ['Pool', j.poolInfo && j.poolInfo.poolId], ['Created', ts(j.creationTime)],
      ['State changed', ts(j.stateTransitionTime)],
    ]), el('h2', {}, 'Actions'), jobActions(j));
    prep.replaceChildren(...(j.jobPreparationTask
      ? [el('h2', {}, 'Preparation and release, per node'), ...await prepRelease(jobId)] : []));
    const id = search.value.trim();
    if (id) {
      try {
        const t = await api('GET', '/jobs/' + enc(jobId) + '/tasks/' + enc(id));
        body.replaceChildren(row(t));
        lanes.replaceChildren(...timeline([t]));
      } catch (e) {
        if (e.status !== 404) throw e;
        body.replaceChildren(el('tr', {}, el('td', { colspan: 6 }, 'No task ' + id + '.')));
      }
      info.textContent = '';
      prev.disabled = next.disabled = true;
      return;
    }
    const pg = await api('GET', pages[pages.length - 1]);
    nextLink = pg['odata.nextLink'] ? localPath(pg['odata.nextLink']) : null;
    const tasks = pg.value || [];
    body.replaceChildren(...(tasks.length ? tasks.map(row) : [el('tr', {}, el('td', { colspan: 6 }, 'No tasks.'))]));
    lanes.replaceChildren(...timeline(tasks));
    info.textContent = 'page ' + pages.length;
    prev.disabled = pages.length <= 1;
    next.disabled = !nextLink;
  });
}

// Follows a file by ocp-range reads from where the last read ended: at most CHUNK a read,
// starting at the last TAIL bytes of a big file; the pane keeps the last KEEP characters.
const CHUNK = 1 << 20;
const TAIL = 256 << 10;
const KEEP = 2 << 20;
function follower(jobId, taskId, name) {
  const pre = el('pre', { class: 'log', id: 'file-' + name.replace('.', '-'), tabindex: 0, 'aria-label': name });
  const decoder = new TextDecoder();
  let offset = 0;
  let started = false;
  return {
    pre,
    // `size`: the file's length as last listed (undefined when not listed yet).
    async read(size) {
      if (!started && size !== undefined && size > TAIL) {
        offset = size - TAIL;
        pre.append('[the first ' + offset + ' bytes are not shown: download the file for all of it]\n');
      }
      started = true;
      const r = await api('GET', '/jobs/' + enc(jobId) + '/tasks/' + enc(taskId) + '/files/' + enc(name),
        { raw: true, headers: { 'ocp-range': 'bytes=' + offset + '-' + (offset + CHUNK - 1) } });
      if (r.status === 404) return;
      if (!r.ok) throw new ApiError(r.status, null, name + ': HTTP ' + r.status);
      const buf = await r.arrayBuffer();
      if (buf.byteLength === 0) return;
      offset += buf.byteLength;
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.append(decoder.decode(buf, { stream: true }));
      if (pre.textContent.length > KEEP) pre.textContent = pre.textContent.slice(-KEEP);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    },
  };
}

async function taskPage(jobId, taskId) {
  const head = el('div');
  const failure = el('div', { id: 'failure' });
  const files = el('ul', { id: 'files' });
  const out = follower(jobId, taskId, 'stdout.txt');
  const err = follower(jobId, taskId, 'stderr.txt');
  const acts = el('div', { class: 'actions', id: 'task-actions' });
  page('Task ' + taskId, el('p', {}, el('a', { href: '#/job/' + enc(jobId) }, 'Job ' + jobId)),
    head, failure, el('h2', {}, 'Actions'), acts,
    el('h2', {}, 'stdout.txt'), out.pre, el('h2', {}, 'stderr.txt'), err.pre,
    el('h2', {}, 'Files'), files);
  const path = '/jobs/' + enc(jobId) + '/tasks/' + enc(taskId);
  let lastState = null;
  let done = false;
  poller.start(async () => {
    const t = await api('GET', path);
    const x = t.executionInfo || {};
    head.replaceChildren(props([
      ['State', el('span', { id: 'task-state' }, stateBadge(t.state))],
      ['Result', t.state === 'active' ? undefined : taskResult(t)],
      ['Waiting', t.state === 'active' ? el('span', { id: 'task-pending', 'data-code': (t.berthPendingReason || {}).code },
        (t.berthPendingReason || {}).message || '-') : undefined],
      ['Command line', el('code', {}, t.commandLine || '')],
      ['Image', t.containerSettings ? t.containerSettings.imageName : undefined],
      ['Node', t.nodeInfo ? el('a', { href: '#/node/' + enc(t.nodeInfo.poolId || '-') + '/' + enc(t.nodeInfo.nodeId) }, t.nodeInfo.nodeId) : null],
      ['Created', ts(t.creationTime)], ['State changed', ts(t.stateTransitionTime)],
      ['Started', ts(x.startTime)], ['Ended', ts(x.endTime)],
      ['Exit code', x.exitCode === undefined || x.exitCode === null ? null : String(x.exitCode)],
      ['Retries', String(x.retryCount ?? 0)], ['Requeues', String(x.requeueCount ?? 0)],
      ['Last retry', x.lastRetryTime ? ts(x.lastRetryTime) : undefined],
      ['Container', x.containerInfo ? x.containerInfo.containerId : undefined],
    ]));
    const f = x.failureInfo;
    failure.replaceChildren(...(f ? [el('h2', {}, 'Failure'), el('div', { class: 'failure' }, props([
      ['Category', f.category], ['Code', f.code], ['Message', f.message],
      ...(f.details || []).map((d) => [d.name, d.value]),
    ]))] : []));
    if (t.state !== lastState) {
      lastState = t.state;
      const a = [];
      if (t.state !== 'completed') {
        a.push(actionButton('Terminate', 'Terminate task ' + taskId + '?',
          () => api('POST', path + '/terminate', { body: {} }), true));
      } else if (x.result === 'failure') {
        a.push(actionButton('Reactivate', null, () => api('POST', path + '/reactivate', { body: {} })));
      }
      a.push(actionButton('Delete', 'Delete task ' + taskId + '?', async () => {
        await api('DELETE', path);
        location.hash = '#/job/' + enc(jobId);
      }, true));
      acts.replaceChildren(...a);
    }
    if (t.state === 'running' || t.state === 'completed' || t.state === 'preparing') {
      const list = await listAll(path + '/files?recursive=true', 10000).catch(() => []);
      const size = (n) => {
        const f = list.find((e) => e.name === n);
        return f && f.properties ? f.properties.contentLength : undefined;
      };
      await out.read(size('stdout.txt'));
      await err.read(size('stderr.txt'));
      files.replaceChildren(...(list.length ? list.filter((e) => !(e.isDirectory)).map((e) =>
        el('li', {}, el('a', { href: versioned(path + '/files/' + e.name.split('/').map(enc).join('/')), download: e.name.split('/').pop() }, e.name),
          e.properties && e.properties.contentLength !== undefined ? ' (' + e.properties.contentLength + ' bytes)' : ''))
        : [el('li', { class: 'muted' }, 'No files yet.')]));
    }
    // After completion: one more read caught the tail; stop polling.
    if (t.state === 'completed') {
      if (done) return false;
      done = true;
    }
    return true;
  });
}

function bytes(n) {
  const u = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n || 0;
  while (v >= 1000 && i < u.length - 1) { v /= 1000; i++; }
  return (i ? v.toFixed(1) : String(v)) + ' ' + u[i];
}

// berth's imagePulls: each pull under way with a bar of its bytes, and the last that ended.
function imagePulls(pulls) {
  if (!(pulls || []).length) return [];
  return [el('h2', {}, 'Image pulls'), el('ul', { id: 'pulls' }, pulls.map((p) => {
    const going = p.state === 'pulling' || p.state === 'retrying';
    const what = 'layers ' + p.layersDone + '/' + p.layers + ', ' + bytes(p.bytes)
      + (p.totalBytes ? ' of ' + bytes(p.totalBytes) : '') + (p.attempt > 1 ? ', attempt ' + p.attempt : '');
    return el('li', { 'data-image': p.image, 'data-state': p.state }, el('code', {}, p.image), ' ', stateBadge(p.state), ' ', what,
      going && p.totalBytes ? el('progress', { max: p.totalBytes, value: p.bytes, 'aria-label': 'Pull of ' + p.image }) : null,
      p.endTime ? el('span', { class: 'counts' }, ' ended ', ts(p.endTime)) : null,
      p.message ? el('div', { class: 'error' }, p.message) : null);
  }))];
}

// Batch's recentTasks: the tasks running on the node, then the latest it completed.
function recentTasks(list) {
  if (!(list || []).length) {
    return [el('h2', {}, 'Running and recent tasks'), el('p', { id: 'recent-tasks', class: 'muted' }, 'No task has run here yet.')];
  }
  return [el('h2', {}, 'Running and recent tasks'), el('ul', { id: 'recent-tasks' }, list.map((t) => {
    const x = t.executionInfo || {};
    const exit = x.exitCode === undefined || x.exitCode === null ? '' : ', exit ' + x.exitCode;
    return el('li', { 'data-task': t.jobId + '/' + t.taskId, 'data-state': t.taskState },
      el('a', { href: '#/task/' + enc(t.jobId) + '/' + enc(t.taskId) }, t.jobId + ' / ' + t.taskId), ' ',
      stateBadge(t.taskState), x.result ? ' ' + x.result + exit : exit,
      x.startTime ? el('span', { class: 'counts' }, ' started ', ts(x.startTime)) : null,
      x.endTime ? el('span', { class: 'counts' }, ' ended ', ts(x.endTime)) : null,
      x.failureInfo ? el('div', { class: 'error' }, x.failureInfo.code + ': ' + x.failureInfo.message) : null);
  }))];
}

async function nodePage(poolId, nodeId) {
  const head = el('div');
  const acts = el('div', { class: 'actions', id: 'node-actions' });
  const start = el('div');
  const errors = el('div', { id: 'node-errors' });
  const extra = el('div');
  page('Node ' + nodeId, head, el('h2', {}, 'Actions'), acts, el('h2', {}, 'Start task'), start, errors, extra);
  const path = session.mode === 'agent' ? '/node' : '/pools/' + enc(poolId) + '/nodes/' + enc(nodeId);
  let built = false;
  poller.start(async () => {
    const n = await api('GET', path);
    head.replaceChildren(props([
      ['State', el('span', { id: 'node-state' }, stateBadge(n.state))],
      ['Scheduling', n.schedulingState],
      ['Pool', n.poolId || poolId],
      ['State changed', ts(n.stateTransitionTime)],
      ['Running tasks', String(n.runningTasksCount ?? 0)],
      ['Slots in use', n.runningTaskSlotsCount === undefined ? undefined : String(n.runningTaskSlotsCount)],
      ['Tasks run', n.totalTasksRun === undefined ? undefined : String(n.totalTasksRun)],
      ['GPUs', n.gpus && n.gpus.devices ? n.gpus.devices.map((g) => g.index + ': ' + g.name).join(', ') : null],
      ['Agent', n.nodeAgentInfo ? n.nodeAgentInfo.version : undefined],
    ]));
    const s = n.startTaskInfo;
    start.replaceChildren(s ? props([
      ['State', stateBadge(s.state)], ['Started', ts(s.startTime)], ['Ended', ts(s.endTime)],
      ['Exit code', s.exitCode === undefined || s.exitCode === null ? null : String(s.exitCode)],
      ['Retries', String(s.retryCount ?? 0)],
      ['Failure', s.failureInfo ? s.failureInfo.code + ': ' + s.failureInfo.message : undefined],
    ]) : el('p', { class: 'muted' }, 'No start task.'));
    errors.replaceChildren(...((n.errors || []).length ? [el('h2', {}, 'Errors'), el('ul', {},
      n.errors.map((e) => el('li', { class: 'error' }, e.code + ': ' + e.message,
        (e.errorDetails || []).length ? el('ul', {}, e.errorDetails.map((d) => el('li', {}, d.name + ': ' + d.value))) : null)))] : []));
    extra.replaceChildren(...((n.images || []).length ? [el('h2', {}, 'Images'), el('ul', {},
      n.images.map((i) => el('li', {}, i.image + ': ' + i.state + (i.message ? ' (' + i.message + ')' : ''))))] : []),
    ...imagePulls(n.imagePulls),
    ...recentTasks(n.recentTasks));
    if (!built) {
      built = true;
      if (session.mode === 'agent') {
        acts.replaceChildren(el('p', { class: 'muted' }, 'A standalone agent takes node actions from its CLI; in pool mode they are here.'));
      } else {
        const p = '/pools/' + enc(poolId);
        const opt = el('select', { 'aria-label': 'What happens to running tasks' },
          ['requeue', 'terminate', 'taskcompletion'].map((o) => el('option', { value: o }, o)));
        acts.replaceChildren(opt,
          actionButton('Disable scheduling', null, () => api('POST', p + '/nodes/' + enc(nodeId) + '/disablescheduling',
            { body: { nodeDisableSchedulingOption: opt.value } })),
          actionButton('Enable scheduling', null, () => api('POST', p + '/nodes/' + enc(nodeId) + '/enablescheduling')),
          actionButton('Remove', 'Remove node ' + nodeId + ' from pool ' + poolId + '?',
            () => api('POST', p + '/removenodes', { body: { nodeList: [nodeId], nodeDeallocationOption: opt.value } }), true));
      }
    }
  });
}

// ---- routing ----

function route() {
  const parts = (location.hash.replace(/^#\/?/, '') || 'pool').split('/').map(decodeURIComponent);
  setStatus('');
  for (const a of document.querySelectorAll('header nav a')) a.removeAttribute('aria-current');
  const nav = { pool: 'nav-pool', node: 'nav-pool', jobs: 'nav-jobs', job: 'nav-jobs', task: 'nav-jobs' }[parts[0]];
  if (nav) document.getElementById(nav).setAttribute('aria-current', 'page');
  switch (parts[0]) {
    case 'jobs': return jobsPage();
    case 'job': return jobPage(parts[1]);
    case 'task': return taskPage(parts[1], parts[2]);
    case 'node': return nodePage(parts[1], parts[2]);
    default: return poolPage();
  }
}

async function boot() {
  const r = await fetch('/ui/session', { credentials: 'same-origin', cache: 'no-store' });
  if (!r.ok) { location.href = '/ui/login'; return; }
  session = await r.json();
  document.getElementById('who').textContent =
    (session.mode === 'agent' ? 'agent' : 'service') + (session.access === 'readOnly' ? ' · read-only' : '');
  window.addEventListener('hashchange', () => { route(); main().focus(); });
  route();
}

boot();
