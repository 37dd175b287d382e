// cgrpo dashboard page: job list, per-job charts (uPlot), workers, events and a rollout
// viewer coloured by decoding order. Live: server-sent events from /api/jobs/{id}/stream.
// All text from Redis goes through textContent, never innerHTML.
'use strict';

const $ = (sel, el = document) => el.querySelector(sel);

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'style') el.style.cssText = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c == null) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const S = {            // what the page currently shows
  jobId: null, job: null, metrics: [], evals: [], workers: [], events: [], rollout: null,
  problems: [], skew: 0, es: null, jobsTimer: null, redisDown: false, health: null,
};
const charts = {};     // chart id -> uPlot instance (tests read u.data through this)
window.cgrpo = { charts, state: S };

const COLORS = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#ea580c', '#0891b2', '#4b5563'];
// Charts over steps; each series reads one metrics field.
const METRIC_CHARTS = [
  { id: 'loss', title: 'Loss (coupled-GRPO objective)', series: [['loss', 'loss']] },
  { id: 'kl', title: 'KL to reference (k3)', series: [['kl', 'KL']] },
  { id: 'clip', title: 'Clip fraction', series: [['clip_frac', 'clipped ratio']] },
  { id: 'ratio', title: 'Importance ratio π/π_old (per token)',
    series: [['ratio_mean', 'mean'], ['ratio_min', 'min'], ['ratio_max', 'max']] },
  { id: 'grad', title: 'Gradient norm', series: [['grad_norm', 'grad norm']] },
  { id: 'lr', title: 'Learning rate', series: [['lr', 'lr']] },
  { id: 'arness', title: 'Decoding order: AR-ness (1 = left-to-right), tokens committed in parallel',
    series: [['arness_local', 'local@1'], ['arness_global', 'global@1'], ['parallel_fraction', 'parallel']] },
  { id: 'inpaint', title: 'Share of the batch inpainted with hints (run.inpaint)',
    series: [['inpainted_frac', 'inpainted']] },
  { id: 'tokens', title: 'Rollout throughput (tokens/s)', series: [['rollout_tokens_per_s', 'tokens/s']] },
  { id: 'execs', title: 'Sandbox executions/s', series: [['sandbox_execs_per_s', 'execs/s']] },
  { id: 'learner', title: 'Learner step time (s)', series: [['learner_step_s', 'seconds']] },
  { id: 'idle', title: 'Rollout idle fraction', series: [['rollout_idle_frac', 'idle']] },
  { id: 'versions', title: 'Weight versions',
    series: [['weight_version', 'pushed to rollouts'], ['rollout_version', 'oldest in the batch']] },
];
// Steps are integers: never put a tick at step 0.5.
const STEP_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 50000];
const CHART_ORDER = ['reward', 'pass', ...METRIC_CHARTS.map(c => c.id)];

// ---------------------------------------------------------------------------- helpers

const now = () => Date.now() / 1000 + S.skew;   // server clock

function fmtAge(sec) {
  if (sec == null || !isFinite(sec)) return '—';
  sec = Math.max(0, sec);
  if (sec < 90) return `${Math.round(sec)}s`;
  if (sec < 5400) return `${Math.round(sec / 60)}m`;
  if (sec < 172800) return `${Math.floor(sec / 3600)}h ${Math.round((sec % 3600) / 60)}m`;
  return `${Math.round(sec / 86400)}d`;
}

function fmtNum(v) {
  if (v == null) return '—';
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return (+v.toPrecision(4)).toString();
}

function badge(status) { return h('span', { class: `badge ${status || ''}` }, status || 'unknown'); }

function banner(msg, bad = false) {
  const b = $('#banner');
  b.hidden = !msg;
  b.textContent = msg || '';
  b.classList.toggle('bad', bad);
}

function setConn(text, cls) { const c = $('#conn'); c.textContent = text; c.className = `conn ${cls}`; }

async function getJSON(url) {
  const res = await fetch(url, { cache: 'no-store' });
  let body = null;
  try { body = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) throw new Error((body && body.detail) || `${res.status} ${res.statusText}`);
  return body;
}

function jobLinks(job) {
  const out = [];
  if (job.ray_dashboard_url) out.push(h('a', { href: job.ray_dashboard_url, target: '_blank', rel: 'noopener',
    onclick: e => e.stopPropagation() }, 'Ray dashboard'));
  if (job.log_path) out.push(h('a', { href: `/api/jobs/${encodeURIComponent(job.id)}/logs`, target: '_blank',
    rel: 'noopener', onclick: e => e.stopPropagation(), title: job.log_path }, 'Logs'));
  return out;
}

// ---------------------------------------------------------------------------- job list

async function refreshJobs() {
  let data;
  try {
    data = await getJSON('/api/jobs');
  } catch (e) {
    S.redisDown = true;
    banner(`Cannot read jobs: ${e.message}`, true);
    setConn('Redis unreachable', 'down');
    return;
  }
  if (S.redisDown) { S.redisDown = false; banner(healthBanner()); }
  S.skew = data.server_time - Date.now() / 1000;
  const tbody = $('#jobs tbody');
  tbody.replaceChildren(...data.jobs.map(job => {
    const step = job.step == null ? '—' : (job.total_steps ? `${job.step} / ${job.total_steps}` : `${job.step}`);
    return h('tr', { 'data-job': job.id, class: job.id === S.jobId ? 'selected' : null,
      onclick: () => selectJob(job.id, true) },
      h('td', {}, h('b', {}, job.name), job.name !== job.id ? h('div', { class: 'muted' }, job.id) : null),
      h('td', {}, badge(job.status),
        job.source === 'record' ? h('div', { class: 'muted', title: 'Redis no longer has this job' }, 'run directory') : null),
      h('td', {}, step),
      h('td', { title: job.created_at ? new Date(job.created_at * 1000).toLocaleString() : '' },
        fmtAge(job.created_at == null ? null : now() - job.created_at)),
      h('td', { class: 'cfg' }, job.config_summary || (job.config_error ? 'config unreadable' : '—')),
      h('td', { class: 'links' }, jobLinks(job)));
  }));
  $('#jobs-empty').hidden = data.jobs.length > 0;
  if (!S.jobId && data.jobs.length) {
    const fromPath = location.pathname.match(/^\/jobs\/([^/]+)$/);
    const running = data.jobs.find(j => j.status === 'running');
    selectJob(fromPath ? decodeURIComponent(fromPath[1]) : (running || data.jobs[0]).id, false);
  }
}

// ---------------------------------------------------------------------------- one job

async function selectJob(id, push) {
  if (id === S.jobId) return;
  if (S.es) { S.es.close(); S.es = null; }
  Object.assign(S, { jobId: id, job: null, metrics: [], evals: [], workers: [], events: [], rollout: null, problems: [] });
  for (const k of Object.keys(charts)) { charts[k].destroy(); delete charts[k]; }
  $('#charts').replaceChildren();
  if (push) history.pushState({}, '', `/jobs/${encodeURIComponent(id)}`);
  document.querySelectorAll('#jobs tbody tr').forEach(tr => tr.classList.toggle('selected', tr.dataset.job === id));
  $('#job').hidden = false;
  try {
    apply(await getJSON(`/api/jobs/${encodeURIComponent(id)}/snapshot`));
  } catch (e) {
    banner(`Job ${id}: ${e.message}`, true);
    return;
  }
  openStream();
}

function openStream() {
  const id = S.jobId;
  const last = S.metrics.length ? S.metrics[S.metrics.length - 1].step : null;
  const url = `/api/jobs/${encodeURIComponent(id)}/stream` + (last == null ? '' : `?after_step=${last}`);
  const es = new EventSource(url);
  S.es = es;
  es.addEventListener('open', () => setConn('live', 'live'));
  es.addEventListener('snapshot', ev => {
    if (S.jobId !== id) return;
    if (S.redisDown) { S.redisDown = false; banner(healthBanner()); }
    apply(JSON.parse(ev.data));
    setConn('live', 'live');
  });
  es.addEventListener('redis_error', ev => {
    S.redisDown = true;
    banner(`Redis unreachable: ${JSON.parse(ev.data).detail}. Showing the last state seen.`, true);
    setConn('Redis unreachable', 'down');
  });
  es.addEventListener('gone', () => { banner(`Job ${id} is no longer in Redis.`, true); es.close(); });
  es.addEventListener('error', () => setConn('reconnecting…', 'down'));  // EventSource retries by itself
}

function mergeMetrics(incoming) {
  if (!incoming.length) return false;
  const last = S.metrics.length ? S.metrics[S.metrics.length - 1].step : -1;
  if (incoming[0].step > last) { S.metrics.push(...incoming); return true; }
  const byStep = new Map(S.metrics.map(m => [m.step, m]));
  for (const m of incoming) byStep.set(m.step, m);
  S.metrics = [...byStep.values()].sort((a, b) => a.step - b.step);
  return true;
}

function apply(snap) {
  S.skew = snap.server_time - Date.now() / 1000;
  S.job = snap.job;
  const grew = mergeMetrics(snap.metrics || []);
  const evalsChanged = JSON.stringify(snap.evals) !== JSON.stringify(S.evals);
  S.evals = snap.evals || [];
  S.workers = snap.workers || [];
  S.events = snap.events || [];
  S.problems = snap.problems || [];
  const rolloutChanged = JSON.stringify(snap.rollout) !== JSON.stringify(S.rollout);
  S.rollout = snap.rollout;
  renderHeader();
  if (grew || evalsChanged || !Object.keys(charts).length) renderCharts();
  renderWorkers();
  renderEvents();
  if (rolloutChanged || !$('#rollout').childElementCount) renderRollout();
}

function renderHeader() {
  const job = S.job;
  $('#job-name').textContent = job.name;
  $('#job-status').replaceWith(Object.assign(badge(job.status), { id: 'job-status' }));
  const parts = [];
  if (job.name !== job.id) parts.push(`id ${job.id}`);
  if (job.source === 'record') parts.push('read from its run directory (Redis no longer has this job)');
  if (job.step != null) parts.push(`step ${job.step}${job.total_steps ? ' / ' + job.total_steps : ''}`);
  if (job.weight_version != null) parts.push(`weights v${job.weight_version}`);
  if (job.created_at) parts.push(`started ${fmtAge(now() - job.created_at)} ago`);
  if (job.updated_at) parts.push(`updated ${fmtAge(now() - job.updated_at)} ago`);
  $('#job-meta').textContent = parts.join(' · ');
  $('#job-links').replaceChildren(...jobLinks(job));
  const frac = job.total_steps ? Math.min(1, (job.step || 0) / job.total_steps) : 0;
  $('#job-progress').style.width = `${(100 * frac).toFixed(1)}%`;
  $('#job-error').hidden = !job.error;
  $('#job-error').textContent = job.error ? `Error: ${job.error}` : '';
  $('#problems').hidden = !S.problems.length;
  $('#problems').textContent = S.problems.length ? `Partial data: ${S.problems.join('; ')}.` : '';
  $('#job-config pre').textContent = job.config ? JSON.stringify(job.config, null, 2)
    : (job.config_error || 'no config recorded');
  $('#controls').hidden = !(S.health && S.health.control_enabled);
}

// ---------------------------------------------------------------------------- charts

function chartSpecs() {
  const steps = S.metrics.map(m => m.step);
  const col = k => S.metrics.map(m => m[k]);
  const specs = [];
  // Reward: mean with a ±std band (series 1 = upper, 2 = lower).
  const mean = col('reward_mean'), std = col('reward_std');
  const hi = mean.map((m, i) => (m == null || std[i] == null ? null : m + std[i]));
  const lo = mean.map((m, i) => (m == null || std[i] == null ? null : m - std[i]));
  specs.push({ id: 'reward', title: 'Reward (mean ± std over the batch)',
    data: [steps, hi, lo, mean],
    series: [{ label: '+std', stroke: 'rgba(37,99,235,.35)', width: 1 },
             { label: '−std', stroke: 'rgba(37,99,235,.35)', width: 1 },
             { label: 'mean', stroke: COLORS[0], width: 2 }],
    bands: [{ series: [1, 2], fill: 'rgba(37,99,235,.13)' }] });
  // pass@1: train pass rate per step + every held-out (split, steps mode) at its eval steps.
  const evalKeys = [...new Set(S.evals.map(e => `${e.split}|${e.steps_mode}`))].sort();
  const xs = [...new Set([...steps, ...S.evals.map(e => e.step)])].sort((a, b) => a - b);
  const trainAt = new Map(S.metrics.map(m => [m.step, m.pass_rate]));
  const passData = [xs, xs.map(s => (trainAt.has(s) ? trainAt.get(s) : null))];
  const passSeries = [{ label: 'train (rollouts)', stroke: COLORS[0], width: 2 }];
  evalKeys.forEach((k, i) => {
    const [split, mode] = k.split('|');
    const at = new Map(S.evals.filter(e => `${e.split}|${e.steps_mode}` === k).map(e => [e.step, e.pass_at_1]));
    passData.push(xs.map(s => (at.has(s) ? at.get(s) : null)));
    passSeries.push({ label: `${split} (${mode} steps)`, stroke: COLORS[(i + 1) % COLORS.length], width: 2,
      dash: mode === 'half' ? [6, 4] : undefined, spanGaps: true, points: { show: true, size: 6 } });
  });
  specs.push({ id: 'pass', title: 'pass@1 (train and held-out)',
    data: passData, series: passSeries, range: [0, 1] });
  for (const c of METRIC_CHARTS) {
    specs.push({ id: c.id, title: c.title, data: [steps, ...c.series.map(([k]) => col(k))],
      series: c.series.map(([, label], i) => ({ label, stroke: COLORS[i], width: 2 })),
      range: c.id === 'arness' || c.id === 'idle' || c.id === 'clip' ? [0, 1] : null });
  }
  return specs;
}

function chartWidth(card) { return Math.max(280, card.clientWidth - 34); }

function renderCharts() {
  $('#no-metrics').hidden = S.metrics.length > 0 || S.evals.length > 0;
  if (typeof uPlot === 'undefined') return;   // the banner already explains
  const box = $('#charts');
  for (const spec of chartSpecs()) {
    let card = box.querySelector(`[data-chart="${spec.id}"]`);
    if (!card) {
      card = h('div', { class: 'card', 'data-chart': spec.id }, h('div', { class: 'chart-empty' }, 'no data yet'));
      box.append(card);
      [...box.children].sort((a, b) => CHART_ORDER.indexOf(a.dataset.chart) - CHART_ORDER.indexOf(b.dataset.chart))
        .forEach(c => box.append(c));
    }
    const hasData = spec.data.slice(1).some(col => col.some(v => v != null));
    card.querySelector('.chart-empty').hidden = hasData;
    const sig = spec.series.map(s => s.label).join('|');
    let u = charts[spec.id];
    if (u && u._cgrpoSig !== sig) { u.destroy(); u = null; }
    if (u) { u.setData(spec.data); continue; }
    const yRange = spec.range ? (self, mn, mx) => [Math.min(spec.range[0], mn ?? 0), Math.max(spec.range[1], mx ?? 1)] : undefined;
    u = new uPlot({
      title: spec.title, width: chartWidth(card), height: 210,
      scales: { x: { time: false }, y: yRange ? { range: yRange } : {} },
      series: [{ label: 'step', value: (self, v) => (v == null ? '—' : v) },
        ...spec.series.map(s => ({ spanGaps: false, points: { show: false }, ...s,
          value: (self, v) => fmtNum(v) }))],
      bands: spec.bands,
      axes: [{ label: 'step', labelSize: 18, size: 36, incrs: STEP_INCRS },
        { size: 66, values: (self, ticks) => ticks.map(fmtNum) }],
      cursor: { drag: { x: true, y: false } },
    }, spec.data, card);
    u._cgrpoSig = sig;
    charts[spec.id] = u;
  }
}

window.addEventListener('resize', () => {
  for (const u of Object.values(charts)) u.setSize({ width: chartWidth(u.root.parentElement), height: 210 });
});

// ---------------------------------------------------------------------------- workers, events

function renderWorkers() {
  const jobVersion = S.job ? S.job.weight_version : null;
  $('#workers tbody').replaceChildren(...S.workers.map(w => {
    const age = w.last_heartbeat == null ? null : now() - w.last_heartbeat;
    const behind = jobVersion != null && w.weight_version != null && w.weight_version < jobVersion;
    return h('tr', {},
      h('td', {}, w.id, w.pid ? h('div', { class: 'muted' }, `pid ${w.pid}`) : null),
      h('td', {}, w.role), h('td', {}, w.node || '—'), h('td', {}, w.device || '—'),
      h('td', { class: behind ? 'behind' : null, title: behind ? `job is at v${jobVersion}` : null },
        w.weight_version == null ? '—' : `v${w.weight_version}`),
      h('td', { class: age != null && age > 30 ? 'stale' : null, 'data-hb': w.last_heartbeat ?? '' },
        age == null ? '—' : `${fmtAge(age)} ago`),
      h('td', { class: w.restarts ? 'behind' : null }, w.restarts),
      h('td', {}, w.state || '—'));
  }));
  $('#workers-empty').hidden = S.workers.length > 0;
}

function renderEvents() {
  $('#events').replaceChildren(...[...S.events].reverse().map(e => h('li', { class: e.level },
    h('span', { class: 't' }, e.time ? new Date(e.time * 1000).toLocaleTimeString() : ''), e.message)));
  $('#events-empty').hidden = S.events.length > 0;
}

setInterval(() => {   // heartbeat ages tick without new data
  document.querySelectorAll('#workers td[data-hb]').forEach(td => {
    const hb = parseFloat(td.dataset.hb);
    if (!isFinite(hb)) return;
    td.textContent = `${fmtAge(now() - hb)} ago`;
    td.classList.toggle('stale', now() - hb > 30);
  });
}, 1000);

// ---------------------------------------------------------------------------- rollout viewer

// viridis, dark (committed early) to yellow (committed late)
const VIRIDIS = ['#440154', '#482878', '#3e4989', '#31688e', '#26828e', '#1f9e89', '#35b779', '#6ece58', '#b5de2b', '#fde725'];

function orderColor(frac) {
  const x = Math.min(1, Math.max(0, frac)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x)), t = x - i;
  const a = VIRIDIS[i], b = VIRIDIS[i + 1];
  const ch = (c, k) => parseInt(c.slice(1 + 2 * k, 3 + 2 * k), 16);
  const rgb = [0, 1, 2].map(k => Math.round(ch(a, k) + t * (ch(b, k) - ch(a, k))));
  return { bg: `rgb(${rgb.join(',')})`, fg: frac < 0.55 ? '#fff' : '#111' };
}

let replayTimer = null;

function renderRollout() {
  const box = $('#rollout');
  const ro = S.rollout;
  if (replayTimer) { clearInterval(replayTimer); replayTimer = null; }
  if (!ro) {
    $('#rollout-sub').textContent = '';
    box.replaceChildren(h('p', { class: 'empty' }, 'No rollout sample yet.'));
    return;
  }
  $('#rollout-sub').textContent = ro.step != null ? `from step ${ro.step}` : '';
  const known = ro.order.filter(o => o != null);
  const maxStep = known.length ? Math.max(...known) : 0;
  const tokens = ro.tokens.map((tok, i) => {
    const o = ro.order[i];
    const c = o == null ? { bg: '#e5e7eb', fg: '#111' } : orderColor(maxStep ? o / maxStep : 0);
    const text = tok.includes('\n') ? tok.replace(/\n/g, '↵\n') : tok;
    return h('span', { class: 'tok', 'data-order': o ?? '', style: `background:${c.bg};color:${c.fg}`,
      title: `token ${i}: ${JSON.stringify(tok)}, committed at step ${o ?? '?'}` }, text);
  });
  const tokBox = h('div', { class: 'tokens', id: 'rollout-tokens' }, tokens);
  const label = h('span', {}, '');
  const slider = h('input', { type: 'range', min: 0, max: maxStep, value: maxStep, step: 1 });
  const showUpTo = k => {
    tokens.forEach(t => t.classList.toggle('masked', t.dataset.order !== '' && +t.dataset.order > k));
    label.textContent = `tokens committed by step ${k} of ${maxStep}`;
  };
  slider.addEventListener('input', () => showUpTo(+slider.value));
  const play = h('button', { type: 'button', onclick: () => {
    if (replayTimer) { clearInterval(replayTimer); replayTimer = null; return; }
    let k = 0; showUpTo(0); slider.value = 0;
    replayTimer = setInterval(() => {
      k += 1; slider.value = k; showUpTo(k);
      if (k >= maxStep) { clearInterval(replayTimer); replayTimer = null; }
    }, Math.max(30, 3000 / Math.max(1, maxStep)));
  } }, '▶ replay decoding');
  showUpTo(maxStep);
  const gradient = `linear-gradient(to right, ${VIRIDIS.join(',')})`;
  const mid = Math.round(maxStep / 2);
  box.replaceChildren(
    h('div', { class: 'ro-head' },
      h('span', {}, 'task ', h('b', {}, ro.task_id || '—')),
      h('span', {}, 'reward ', h('b', {}, fmtNum(ro.reward))),
      ro.status ? badge(ro.status) : null,
      h('span', { class: 'muted' }, `${ro.tokens.length} tokens, ${maxStep + 1} decoding steps`)),
    h('div', { class: 'legend', id: 'rollout-legend' },
      h('span', {}, 'committed at step'),
      h('div', {}, h('div', { class: 'bar', style: `background:${gradient}` }),
        h('div', { class: 'ticks' }, h('span', {}, '0 (first)'), h('span', {}, mid), h('span', {}, `${maxStep} (last)`))),
      h('span', {}, 'a left-to-right decoder would go smoothly from dark to yellow; patches show the order the model chose')),
    h('div', { class: 'replay' }, play, slider, label),
    tokBox,
    ro.prompt ? h('details', {}, h('summary', {}, 'Prompt'), h('pre', {}, ro.prompt)) : null,
    h('details', { open: true }, h('summary', {}, 'Test report'), testReport(ro.test_report)));
}

// The sandbox's report: which tests failed and why (the judge's words, e.g. "got 4,
// expected 5"), then the rest of the report as it came. Plain text stays plain text.
function testReport(text) {
  let rep = null;
  try { rep = JSON.parse(text); } catch (e) { /* not JSON: shown as it is */ }
  if (!rep || typeof rep !== 'object' || !Array.isArray(rep.failures) || !rep.failures.length) {
    return h('pre', {}, text || 'no test report');
  }
  const { failures, ...rest } = rep;
  return h('div', { class: 'test-report' },
    h('ul', { class: 'failures' }, failures.map(f => h('li', {},
      h('code', {}, String((f && f.test) || '?')), ' — ', String((f && f.why) || '')))),
    h('pre', {}, JSON.stringify(rest, null, 2)));
}

// ---------------------------------------------------------------------------- control

async function control(path, body) {
  const token = $('#ctl-token').value;
  sessionStorage.setItem('cgrpo-token', token);
  const res = await fetch(`/api/jobs/${encodeURIComponent(S.jobId)}/${path}`, {
    method: 'POST', headers: { 'Authorization': `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : null });
  let detail = '';
  try { const j = await res.json(); detail = res.ok ? `queued ${JSON.stringify(j.queued)}` : j.detail; } catch (e) { /* empty */ }
  $('#ctl-result').textContent = `${res.status}: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`;
}

// ---------------------------------------------------------------------------- start

function healthBanner() {
  const hl = S.health;
  if (typeof uPlot === 'undefined') {
    return 'Charts unavailable: the charting library (uPlot) is not installed. Run ' +
      '`bash scripts/setup.sh` or `python -m dashboard.vendor`, then reload.';
  }
  if (hl && !hl.redis_ok) return `Redis at ${hl.redis_url} is unreachable: ${hl.redis_error}`;
  return '';
}

async function start() {
  $('#ctl-token').value = sessionStorage.getItem('cgrpo-token') || '';
  $('#ctl-stop').addEventListener('click', () => control('stop'));
  $('#ctl-scale').addEventListener('click', () => control('scale', { rollout_actors: +$('#ctl-actors').value }));
  try { S.health = await getJSON('/api/health'); } catch (e) { S.health = null; }
  banner(healthBanner(), typeof uPlot === 'undefined' || (S.health && !S.health.redis_ok));
  if (S.health && !S.health.redis_ok) setConn('Redis unreachable', 'down');
  await refreshJobs();
  if (!S.es) setConn(S.redisDown ? 'Redis unreachable' : 'idle', S.redisDown ? 'down' : '');
  S.jobsTimer = setInterval(refreshJobs, 5000);
  window.addEventListener('popstate', () => {
    const m = location.pathname.match(/^\/jobs\/([^/]+)$/);
    if (m) selectJob(decodeURIComponent(m[1]), false);
  });
}

start();
