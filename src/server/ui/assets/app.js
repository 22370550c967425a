// hoard dashboard: polls /-/ui/api/overview (1.5 s) and /-/ui/api/series (5 s) and
// renders them; starts and cancels jobs through /-/admin/*; browses keys with ?list.
// Hand-written, no dependencies, no build step. Elements are built with the DOM API
// (no innerHTML), so nothing from a key name or a server can inject markup.
'use strict';

const OVERVIEW_MS = 1500;
const SERIES_MS = 5000;
const TOKEN_KEY = 'hoard-token';

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  overview: null,
  series: null,
  keys: { prefix: '/', kind: 'list', limit: 50, start: '', stack: [], next: '', selected: '' },
};

// ---------- small helpers ----------

const $ = (id) => document.getElementById(id);

/** Replaces the children of `el`, skipping empty ones (null, undefined, false). */
function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

/** Builds an element: h('div', {class: 'x', text: 'y', data: {a: 1}}, child, …). */
function h(tag, attrs, ...children) {
  const svg = ['svg', 'path', 'line', 'text', 'g', 'rect', 'circle'].includes(tag);
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'text') el.textContent = v;
    else if (k === 'data') for (const [dk, dv] of Object.entries(v)) el.dataset[dk] = dv;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function fmtCount(n) {
  if (n === null || n === undefined) return '—';
  if (n < 10000) return n.toLocaleString('en-US');
  const units = [['T', 1e12], ['B', 1e9], ['M', 1e6], ['k', 1e3]];
  for (const [u, d] of units) if (n >= d) return (n / d).toFixed(n / d < 100 ? 1 : 0) + u;
  return String(n);
}

function fmtBytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + ' ' + units[i];
}

function fmtDuration(s) {
  if (s === null || s === undefined || !isFinite(s)) return '—';
  s = Math.max(0, Math.round(s));
  const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (d) return `${d}d ${hr}h`;
  if (hr) return `${hr}h ${m}m`;
  if (m) return `${m}m ${sec}s`;
  return `${sec}s`;
}

function fmtAgo(ms, now) {
  if (!ms) return 'never';
  const s = Math.max(0, (now - ms) / 1000);
  return s < 10 ? `${s.toFixed(1)} s ago` : `${fmtDuration(s)} ago`;
}

function fmtRate(x) {
  if (x === null || x === undefined) return '—';
  return String(Number(x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)));
}

function fmtMs(x) {
  if (x === null || x === undefined) return '—';
  return x >= 100 ? `${x.toFixed(0)} ms` : x >= 1 ? `${Number(x.toFixed(1))} ms` : `${(x * 1000).toFixed(0)} µs`;
}

/** A key or prefix as a URL path: every segment percent-encoded, slashes kept. */
function encodePath(p) {
  if (!p.startsWith('/')) p = '/' + p;
  return p.split('/').map(encodeURIComponent).join('/');
}

// ---------- talking to the server ----------

class AuthNeeded extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers);
  if (state.token) headers.Authorization = 'Bearer ' + state.token;
  const res = await fetch(path, Object.assign({}, options, { headers, cache: 'no-store' }));
  if (res.status === 401) {
    askToken(state.token ? 'The token was refused. Enter the right one.' : 'This server needs its bearer token for this.');
    throw new AuthNeeded('authentication required');
  }
  return res;
}

async function errorText(res) {
  const body = await res.text();
  try { return JSON.parse(body).error || body; } catch (_) { return body.trim() || res.statusText; }
}

// ---------- token ----------

function askToken(why) {
  $('token-why').textContent = why;
  if (!$('token-overlay').hidden) return;
  $('token-overlay').hidden = false;
  $('token-input').value = state.token;
  $('token-input').focus();
}

function setToken(t) {
  state.token = t;
  if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
  $('token-button').textContent = t ? 'Token set' : 'Set token';
  $('token-overlay').hidden = true;
  pollOverview();
  pollSeries();
  listKeys();
}

// ---------- rendering: header and summary ----------

function renderHeader(o) {
  const down = o.volumes.filter((v) => !v.up).length;
  const up = o.volumes.length - down;
  const pill = $('health-pill');
  if (up < o.replicas) {
    pill.className = 'pill pill-bad';
    pill.textContent = `unavailable · ${down} volume${down === 1 ? '' : 's'} down`;
  } else if (down > 0) {
    pill.className = 'pill pill-warn';
    pill.textContent = `degraded · ${down} volume${down === 1 ? '' : 's'} down`;
  } else {
    pill.className = 'pill pill-ok';
    pill.textContent = 'healthy';
  }
  const nodes = o.cluster.nodes.length;
  $('meta').textContent = `v${o.version} · up ${fmtDuration(o.uptime_s)} · ${o.cluster.mode === 'single' ? 'single index server' : `${nodes} index nodes`} · auth ${o.auth_mode}`;
  $('token-button').hidden = o.auth_mode === 'none' && !state.token;
}

function tile(label, value, sub, bad) {
  return h('div', { class: bad ? 'stat bad' : 'stat' },
    h('div', { class: 'label', text: label }),
    h('div', { class: 'value', text: value }),
    h('div', { class: 'sub', text: sub || '\u00a0' }));
}

function renderStats(o) {
  const k = o.keys;
  const samples = (state.series && state.series.samples) || [];
  const last = samples[samples.length - 1];
  const up = o.volumes.filter((v) => v.up).length;
  $('stats').replaceChildren(
    tile('Live keys', fmtCount(k.live), `${fmtCount(k.deleting)} deleting`),
    tile('Unlinked', fmtCount(k.unlinked), 'virtually deleted'),
    tile('Writing', fmtCount(k.writing), `${o.writes_in_flight} writes in flight`),
    tile('Stored', fmtBytes(k.bytes), `one copy · ×${o.replicas} replicas`),
    tile('Volumes up', `${up} / ${o.volumes.length}`, up < o.volumes.length ? `${o.volumes.length - up} down` : 'all answering', up < o.volumes.length),
    tile('Requests', last ? `${fmtRate(last.req_per_s)}/s` : '—', last ? `p99 ${fmtMs(last.p99_ms)}` : 'collecting…'),
    scrubTile(o),
  );
}

// The scrubber: the pass under way, or when the last one ended.
function scrubTile(o) {
  const s = o.scrub;
  if (!s) return tile('Scrub', 'off', '--scrub-interval 0');
  const found = `${fmtCount(s.corrupt)} bad · ${fmtCount(s.repaired)} repaired`;
  if (s.cursor !== null && s.cursor !== undefined) {
    return tile('Scrub', `pass ${s.passes + 1}`, `${fmtCount(s.objects)} replicas read · ${found}`, s.corrupt > s.repaired);
  }
  const last = s.last_pass_ms ? `last pass ${fmtAgo(s.last_pass_ms, o.now_ms)}` : 'no pass yet';
  return tile('Scrub', `${fmtCount(s.passes)} passes`, `${last} · ${found}`, s.corrupt > s.repaired);
}

// ---------- volumes ----------

function renderVolumes(o) {
  const down = o.volumes.filter((v) => !v.up).length;
  const zones = new Set(o.volumes.map((v) => v.zone).filter(Boolean));
  const zoneNote = zones.size ? ` · ${zones.size} zones` : '';
  $('volumes-note').textContent = `${o.volumes.length} servers${zoneNote} · ${down ? `${down} down` : 'all up'} · replicas ${o.replicas}`;
  // With zones, the cards are grouped by zone (stable: servers keep their order inside).
  const shown = zones.size ? [...o.volumes].sort((a, b) => (a.zone || '').localeCompare(b.zone || '')) : o.volumes;
  $('volumes').replaceChildren(...shown.map((v) => volumeCard(v, o.now_ms)));
}

function volumeCard(v, now) {
  const cls = ['volume'];
  if (!v.up) cls.push('down');
  if (!v.in_placement) cls.push('left');
  const badge = v.up ? h('span', { class: 'pill pill-ok', text: 'up' }) : h('span', { class: 'pill pill-bad', text: 'down' });
  const seen = v.up
    ? `last seen ${fmtAgo(v.last_seen_ms, now)}`
    : `down — last seen ${fmtAgo(v.last_seen_ms, now)}`;
  let disk;
  if (v.disk_total_bytes) {
    const used = v.disk_total_bytes - (v.disk_free_bytes || 0);
    const pct = Math.min(100, Math.max(0, (used / v.disk_total_bytes) * 100));
    const bar = h('div', { class: 'bar' + (pct > 95 ? ' full' : pct > 85 ? ' hot' : ''), role: 'meter', 'aria-valuenow': pct.toFixed(0), 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-label': 'disk used' }, h('span'));
    bar.firstChild.style.width = pct.toFixed(1) + '%';
    disk = [
      bar,
      h('div', { class: 'disk' },
        h('span', { text: `${pct.toFixed(0)}% used`, title: `${fmtBytes(used)} used` }),
        h('span', { text: `${fmtBytes(v.disk_free_bytes)} free of ${fmtBytes(v.disk_total_bytes)}` })),
    ];
  } else {
    disk = h('div', { class: 'disk' }, h('span', { text: 'disk space not reported (not a hoard volume)' }));
  }
  const extra = [];
  if (v.zone) extra.push(`zone ${v.zone}`);
  if (v.keys !== null && v.keys !== undefined) extra.push(`${fmtCount(v.keys)} keys`);
  if (v.bytes !== null && v.bytes !== undefined) extra.push(fmtBytes(v.bytes));
  if (!v.in_placement) extra.push('left the placement: keys move off at the next rebalance');
  return h('article', { class: cls.join(' '), data: { volume: v.server, state: v.up ? 'up' : 'down', ...(v.zone ? { zone: v.zone } : {}) } },
    h('div', { class: 'volume-head' }, h('span', { class: 'volume-name', title: v.server, text: v.server }), badge),
    h('div', { class: 'seen', text: seen }),
    disk,
    extra.length ? h('div', { class: 'extra', text: extra.join(' · ') }) : null);
}

// ---------- index nodes ----------

function renderNodes(o) {
  const c = o.cluster;
  $('nodes-note').textContent = c.mode === 'single' ? 'one server, no replication' : `term ${c.term}`;
  fill($('nodes'), ...c.nodes.map((n) => {
    const role = n.role + (n.leader && n.role !== 'leader' ? ' · leader' : '');
    const facts = [`term ${n.term}`, `applied ${n.last_applied === null ? '—' : fmtCount(n.last_applied)}`,
      `lag ${n.lag === null ? '—' : n.lag}`, `up ${n.uptime_s === null ? '—' : fmtDuration(n.uptime_s)}`];
    return h('li', { class: n.reachable ? 'node' : 'node down', data: { node: n.id, role: n.role } },
      h('div', { class: 'node-head' },
        h('span', { class: 'node-id', title: n.addr }, n.id, n.is_self ? h('span', { class: 'muted', text: ' (this)' }) : null),
        h('span', { class: 'pill ' + (!n.reachable ? 'pill-bad' : n.leader ? 'pill-accent' : 'pill-muted'), text: n.reachable ? role : 'unreachable' })),
      h('div', { class: 'node-facts', text: facts.join(' · ') }));
  }));
  const k = o.keys;
  const fact = (t, v) => [h('dt', { text: t }), h('dd', { text: v })];
  $('index-facts').replaceChildren(
    ...fact('Version', o.version),
    ...fact('Keys (all states)', fmtCount(k.live + k.unlinked + k.writing + k.deleting)),
    ...fact('Deleting', fmtCount(k.deleting)),
    ...fact('Authentication', o.auth_mode));
}

// ---------- jobs ----------

const KEY_COUNTERS = ['total', 'scanned', 'bytes'];
const BAD_COUNTERS = ['failed', 'missing', 'corrupt', 'conflicts', 'unreachable', 'busy', 'cleanup_failed'];

function counterChips(counts) {
  return h('div', { class: 'chips' }, ...Object.entries(counts)
    .filter(([k, v]) => !KEY_COUNTERS.includes(k) && v > 0)
    .map(([k, v]) => h('span', { class: BAD_COUNTERS.includes(k) ? 'chip bad' : 'chip', text: `${k.replace(/_/g, ' ')} ${fmtCount(v)}` })));
}

/**
 * Keys a job has finished with. A rebalance reads keys a chunk at a time (its `scanned`
 * jumps ahead of the work), so its progress is the keys with an outcome.
 */
function jobDone(job) {
  const c = job.counts;
  const done = job.kind === 'rebalance' ? c.ok + c.skipped + c.moved + c.failed : c.scanned;
  return c.total > 0 ? Math.min(done, c.total) : done;
}

function renderJobs(o) {
  const run = o.jobs.running;
  const cur = $('job-current');
  if (run) {
    const c = run.counts;
    const done = jobDone(run);
    const pct = c.total > 0 ? Math.min(100, (done / c.total) * 100) : 0;
    const rate = run.elapsed_s >= 1 ? done / run.elapsed_s : null;
    const eta = c.total > 0 && rate > 0 ? (c.total - done) / rate : null;
    const perS = run.elapsed_s >= 1;
    const bar = h('div', { class: 'bar', role: 'progressbar', 'aria-valuenow': pct.toFixed(0), 'aria-valuemin': 0, 'aria-valuemax': 100 }, h('span'));
    bar.firstChild.style.width = pct.toFixed(1) + '%';
    cur.replaceChildren(h('div', { class: 'job running', id: 'job-running', data: { kind: run.kind, state: run.state, done, total: c.total } },
      h('div', { class: 'job-title' }, h('span', { text: `${cap(run.kind)} #${run.id}` }), h('span', { class: 'pill pill-accent', text: run.state })),
      bar,
      h('div', { class: 'job-line' },
        h('span', { id: 'job-progress-text', text: `${fmtCount(done)} / ${c.total ? fmtCount(c.total) : '?'} keys (${pct.toFixed(0)}%)` }),
        h('span', { text: `${fmtRate(rate)} keys/s` }),
        h('span', { text: perS ? `${fmtBytes(run.bytes_per_s)}/s` : '— B/s' }),
        h('span', { text: `ETA ${eta === null ? '—' : fmtDuration(eta)}` }),
        h('span', { text: `elapsed ${fmtDuration(run.elapsed_s)}` })),
      counterChips(c)));
  } else {
    cur.replaceChildren(h('p', { class: 'job-idle', text: 'No job running. Start one below; progress appears here.' }));
  }
  const adminOk = o.auth_mode === 'none' || state.token;
  for (const id of ['start-rebalance', 'start-verify', 'start-repair']) {
    $(id).disabled = Boolean(run);
    $(id).title = adminOk ? '' : 'needs the token (you will be asked)';
  }
  $('cancel-job').disabled = !run;
  const last = o.jobs.last;
  const lastEl = $('job-last');
  if (last) {
    const when = fmtAgo(last.started_ms + last.elapsed_s * 1000, o.now_ms);
    const cls = last.state === 'done' ? 'pill-ok' : last.state === 'cancelled' ? 'pill-muted' : 'pill-bad';
    fill(lastEl,
      h('div', { id: 'job-last-summary', data: { kind: last.kind, state: last.state } },
        h('span', { class: 'muted', text: 'Last: ' }),
        h('b', { text: `${cap(last.kind)} #${last.id} ` }),
        h('span', { class: 'pill ' + cls, text: last.state }),
        h('span', { class: 'muted', text: ` ${when}, took ${fmtDuration(last.elapsed_s)}, ${fmtCount(last.counts.scanned)} keys` })),
      last.error ? h('div', { class: 'message bad', text: last.error }) : null,
      counterChips(last.counts));
  } else {
    fill(lastEl,h('span', { class: 'muted', text: 'No job has finished since the server started.' }));
  }
  const u = o.upkeep;
  fill($('upkeep'),
    h('span', { class: 'muted', text: 'Upkeep (completes degraded writes, removes stale copies): ' }),
    h('span', { class: 'pill ' + (u.running ? 'pill-ok' : 'pill-bad'), text: u.running ? 'running' : 'stopped' }),
    u.queued === null ? null : h('span', { class: 'muted', text: ` · ${fmtCount(u.queued)} queued` }));
}

function cap(s) { return s.charAt(0).toUpperCase() + s.slice(1); }

async function admin(path, what) {
  const msg = $('job-message');
  msg.className = 'message';
  msg.textContent = `${what}…`;
  try {
    const res = await api(path, { method: 'POST' });
    if (!res.ok) throw new Error(`${res.status}: ${await errorText(res)}`);
    msg.className = 'message ok';
    msg.textContent = `${what}: accepted`;
  } catch (e) {
    msg.className = 'message bad';
    msg.textContent = e instanceof AuthNeeded ? `${what}: needs the token` : `${what} failed — ${e.message}`;
  }
  pollOverview();
}

function startJob(kind, extra) {
  const params = new URLSearchParams(extra);
  const rate = $('max-rate').value.trim();
  if (rate) params.set('max_rate', rate);
  const q = params.toString();
  const label = kind === 'verify' && extra.repair ? 'Verify + repair' : cap(kind);
  admin(`/-/admin/${kind}${q ? '?' + q : ''}`, label);
}

// ---------- charts ----------

const WINDOW_MS = 15 * 60 * 1000;
const MIN_WINDOW_MS = 60 * 1000;

/** The time span shown: from the first sample (at least a minute) up to 15 minutes. */
function chartWindow(times, now) {
  const since = times.length ? now - times[0] + 5000 : 0;
  return Math.min(WINDOW_MS, Math.max(MIN_WINDOW_MS, since));
}

/** Tick offsets (ms before now) and labels for a window. */
function timeTicks(span) {
  const step = [15e3, 30e3, 60e3, 120e3, 300e3].find((st) => span / st <= 4) || 300e3;
  const ticks = [];
  for (let off = 0; off <= span + 1; off += step) {
    const label = off === 0 ? 'now' : off < 60e3 ? `−${off / 1000}s` : `−${off / 60e3} min`;
    ticks.push([off, label]);
  }
  return ticks;
}

function niceMax(x) {
  if (!(x > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 2, 2.5, 5, 10]) if (x <= m * p) return m * p;
  return 10 * p;
}

/** A line chart of `lines` ([{name, color, values}]) over `times` (unix ms). */
function lineChart(id, title, lines, times, fmt, now) {
  const span = chartWindow(times, now);
  const fig = $(id);
  const width = Math.max(200, fig.clientWidth || 300);
  const height = 130, left = 44, right = 6, top = 8, bottom = 18;
  const w = width - left - right, hgt = height - top - bottom;
  const latest = (vals) => { for (let i = vals.length - 1; i >= 0; i--) if (vals[i] !== null) return vals[i]; return null; };
  const legend = h('div', { class: 'legend' }, ...lines.map((l) => h('span', null,
    h('span', { class: 'swatch', data: { color: l.color } }), `${l.name} `, h('b', { text: fmt(latest(l.values)) }))));
  for (const s of legend.querySelectorAll('.swatch')) s.style.background = s.dataset.color;
  const svg = h('svg', { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': title });
  const max = niceMax(Math.max(0, ...lines.flatMap((l) => l.values.filter((v) => v !== null))));
  const x = (t) => left + ((t - (now - span)) / span) * w;
  const y = (v) => top + hgt - (v / max) * hgt;
  const grid = h('g', { class: 'grid' });
  const axis = h('g', { class: 'axis' });
  for (const f of [0, 0.5, 1]) {
    grid.append(h('line', { x1: left, x2: left + w, y1: y(max * f), y2: y(max * f) }));
    axis.append(h('text', { x: left - 6, y: y(max * f) + 3, 'text-anchor': 'end', text: f === 0 ? '0' : fmt(max * f) }));
  }
  for (const [off, label] of timeTicks(span)) {
    const anchor = off === 0 ? 'end' : off + 1 >= span ? 'start' : 'middle';
    axis.append(h('text', { x: x(now - off), y: height - 4, 'text-anchor': anchor, text: label }));
  }
  svg.append(grid, axis);
  if (times.length === 0) {
    svg.append(h('text', { class: 'empty', x: left + w / 2, y: top + hgt / 2, 'text-anchor': 'middle', text: 'collecting — a sample every 5 s' }));
  }
  for (const l of lines) {
    let d = '', pen = false, points = 0;
    l.values.forEach((v, i) => {
      if (v === null || times[i] < now - span) { pen = false; return; }
      d += `${pen ? 'L' : 'M'}${x(times[i]).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
      points++;
    });
    if (points === 1) {
      const i = l.values.findIndex((v) => v !== null);
      svg.append(h('circle', { cx: x(times[i]), cy: y(l.values[i]), r: 2.5, fill: l.color }));
    } else if (d) {
      svg.append(h('path', { d, fill: 'none', stroke: l.color, 'stroke-width': 1.8, 'stroke-linejoin': 'round', 'stroke-linecap': 'round' }));
    }
  }
  fig.replaceChildren(h('div', { class: 'chart-head' }, h('span', { class: 'chart-title', text: title }), legend), svg);
}

function renderCharts() {
  const s = state.series;
  if (!s) return;
  const samples = s.samples;
  const t = samples.map((x) => x.t_ms);
  const now = Math.max(Date.now(), t.length ? t[t.length - 1] : 0);
  const perS = (v) => (v === null ? '—' : `${fmtRate(v)}/s`);
  lineChart('chart-rate', 'Requests', [{ name: 'req', color: '#3d5afe', values: samples.map((x) => x.req_per_s) }], t, perS, now);
  lineChart('chart-errors', 'Server errors (5xx)', [{ name: 'err', color: '#c62828', values: samples.map((x) => x.err_per_s) }], t, perS, now);
  lineChart('chart-latency', 'Latency', [
    { name: 'p50', color: '#22a37a', values: samples.map((x) => x.p50_ms) },
    { name: 'p95', color: '#f08c00', values: samples.map((x) => x.p95_ms) },
    { name: 'p99', color: '#c62828', values: samples.map((x) => x.p99_ms) },
  ], t, fmtMs, now);
}

// ---------- key browser ----------

async function listKeys() {
  const k = state.keys;
  const list = $('key-list-items');
  const params = `${k.kind}&limit=${k.limit}${k.start ? '&start=' + encodeURIComponent(k.start) : ''}`;
  try {
    const res = await api(`${encodePath(k.prefix)}?${params}`);
    if (!res.ok) throw new Error(`${res.status}: ${await errorText(res)}`);
    const body = await res.json();
    k.next = body.next || '';
    list.replaceChildren(...(body.keys.length ? body.keys.map((key) => h('li', null,
      h('button', { type: 'button', class: key === k.selected ? 'selected' : null, title: key, data: { key }, onclick: () => showKey(key), text: key })))
      : [h('li', { class: 'empty', text: k.next ? 'No keys on this page; there are more — press Next.' : 'No keys with this prefix.' })]));
    $('key-page').textContent = `page ${k.stack.length + 1} · ${body.keys.length} key${body.keys.length === 1 ? '' : 's'}`;
  } catch (e) {
    list.replaceChildren(h('li', { class: 'empty', text: e instanceof AuthNeeded ? 'Listing needs the token.' : `Listing failed — ${e.message}` }));
    k.next = '';
  }
  $('key-prev').disabled = k.stack.length === 0;
  $('key-next').disabled = !k.next;
}

async function showKey(key) {
  state.keys.selected = key;
  for (const b of document.querySelectorAll('#key-list-items button')) b.classList.toggle('selected', b.dataset.key === key);
  const panel = $('key-record');
  try {
    const res = await api(`/-/ui/api/key?path=${encodePath(key)}`);
    if (!res.ok) throw new Error(`${res.status}: ${await errorText(res)}`);
    const r = await res.json();
    const row = (t, v) => [h('dt', { text: t }), h('dd', null, v)];
    const stateCls = r.state === 'live' ? 'pill-ok' : r.state === 'unlinked' ? 'pill-muted' : 'pill-warn';
    const replicas = h('ul', { class: 'replicas' }, ...r.replicas.map((p) => h('li', null,
      h('span', { class: 'dot' + (!p.up ? ' down' : !p.holds ? ' missing' : '') }),
      p.location, !p.up ? ' (down)' : !p.holds ? ' (missing)' : '')));
    fill(panel,
      h('div', { class: 'record-key', id: 'record-key', text: r.key }),
      h('dl', { id: 'record-fields' },
        ...row('State', h('span', { class: 'pill ' + stateCls, text: r.state })),
        ...row('Size', `${fmtBytes(r.size)} (${r.size.toLocaleString('en-US')} bytes)`),
        ...row('MD5', h('span', { class: 'mono', text: r.md5 || 'unknown' })),
        ...row('Changed', new Date(r.changed_ms).toLocaleString()),
        ...row('Balance', h('span', { class: 'pill ' + (r.balance === 'balanced' ? 'pill-ok' : 'pill-warn'), text: r.balance })),
        ...row(`Replicas (${r.replicas.length})`, replicas),
        ...(r.balance === 'balanced' ? [] : row('Placement', h('span', { class: 'mono', text: r.placement.join(', ') }))),
        ...(r.stale.length ? row('Stale copies', h('span', { class: 'mono', text: r.stale.join(', ') })) : [])),
      r.download ? h('a', { class: 'btn btn-primary', href: r.download, download: r.key.split('/').pop() || 'value', text: 'Download' }) : null);
  } catch (e) {
    fill(panel,h('p', { class: 'message bad', text: e instanceof AuthNeeded ? 'Needs the token.' : `Cannot read the record — ${e.message}` }));
  }
}

// ---------- polling ----------

let overviewTimer = 0;
let seriesTimer = 0;

function setLive(ok, why) {
  const live = $('live');
  live.className = ok ? 'live ok' : 'live bad';
  live.textContent = ok ? 'live' : 'offline';
  const banner = $('banner');
  banner.hidden = ok;
  if (!ok) banner.textContent = why;
}

async function pollOverview() {
  clearTimeout(overviewTimer);
  try {
    const res = await api('/-/ui/api/overview');
    if (!res.ok) throw new Error(`${res.status}: ${await errorText(res)}`);
    const o = await res.json();
    state.overview = o;
    renderHeader(o);
    renderStats(o);
    renderVolumes(o);
    renderNodes(o);
    renderJobs(o);
    setLive(true);
  } catch (e) {
    if (e instanceof AuthNeeded) {
      $('health-pill').className = 'pill pill-muted';
      $('health-pill').textContent = 'token needed';
      setLive(false, 'This server needs its bearer token to show anything (auth mode all).');
    }
    else setLive(false, `Cannot reach the index server — ${e.message}. Retrying…`);
  }
  overviewTimer = setTimeout(pollOverview, OVERVIEW_MS);
}

async function pollSeries() {
  clearTimeout(seriesTimer);
  try {
    const res = await api('/-/ui/api/series');
    if (res.ok) {
      state.series = await res.json();
      renderCharts();
      if (state.overview) renderStats(state.overview);
    }
  } catch (_) { /* pollOverview reports the connection */ }
  seriesTimer = setTimeout(pollSeries, SERIES_MS);
}

// ---------- wiring ----------

function init() {
  $('token-button').textContent = state.token ? 'Token set' : 'Set token';
  $('token-button').addEventListener('click', () => askToken('Sent with every request from this page.'));
  $('token-cancel').addEventListener('click', () => { $('token-overlay').hidden = true; });
  $('token-forget').addEventListener('click', () => setToken(''));
  $('token-form').addEventListener('submit', (e) => { e.preventDefault(); setToken($('token-input').value.trim()); });

  $('start-rebalance').addEventListener('click', () => startJob('rebalance', {}));
  $('start-verify').addEventListener('click', () => startJob('verify', $('verify-deep').checked ? { deep: 1 } : {}));
  $('start-repair').addEventListener('click', () => startJob('verify', Object.assign({ repair: 1 }, $('verify-deep').checked ? { deep: 1 } : {})));
  $('cancel-job').addEventListener('click', () => admin('/-/admin/cancel', 'Cancel'));

  $('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const k = state.keys;
    k.prefix = $('key-prefix').value.trim() || '/';
    k.kind = $('key-kind').value;
    k.limit = Number($('key-limit').value) || 50;
    k.start = '';
    k.stack = [];
    listKeys();
  });
  $('key-next').addEventListener('click', () => {
    const k = state.keys;
    if (!k.next) return;
    k.stack.push(k.start);
    k.start = k.next;
    listKeys();
  });
  $('key-prev').addEventListener('click', () => {
    const k = state.keys;
    if (!k.stack.length) return;
    k.start = k.stack.pop();
    listKeys();
  });
  // Charts are drawn at their box's width: redraw when it changes (window resized, a
  // scroll bar appeared).
  let width = 0;
  new ResizeObserver((entries) => {
    const w = Math.round(entries[0].contentRect.width);
    if (w !== width) { width = w; renderCharts(); }
  }).observe(document.querySelector('.charts'));

  pollOverview();
  pollSeries();
  listKeys();
}

document.addEventListener('DOMContentLoaded', init);
