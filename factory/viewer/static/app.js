'use strict';
const $ = (sel) => document.querySelector(sel);
const FILTERS = ['source', 'verdict', 'reason', 'model', 'iteration', 'where', 'problem'];
const LIST = [...FILTERS, 'sort', 'desc', 'at'];  // what a sample page keeps of the list it was opened from
const FACETS = ['source', 'verdict', 'reason', 'model', 'iteration'];
let meta = null, metaAt = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v; else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

function route() {
  const [path, query] = (location.hash.slice(1) || '/rows').split('?');
  return { path, q: Object.fromEntries(new URLSearchParams(query || '')) };
}
function link(path, q) {
  const clean = Object.fromEntries(Object.entries(q).filter(([, v]) => v !== '' && v !== null && v !== undefined));
  return '#' + path + '?' + new URLSearchParams(clean).toString();
}
function pick(q, names) { return Object.fromEntries(names.filter(n => q[n]).map(n => [n, q[n]])); }
// This session's token (the server writes it into the page): the API and images answer only requests that
// carry it, which no other site's page can read.
const TOKEN = document.querySelector('meta[name="vlfactory-token"]').content;
async function api(path, q) {
  const res = await fetch('/api/' + path + '?' + new URLSearchParams(q).toString(),
                          { headers: { 'X-Vlfactory-Token': TOKEN } });
  const body = await res.json();
  if (!res.ok) throw new Error(body.error || res.statusText);
  return body;
}
function imageUrl(id, thumb) {
  return '/image/' + id + '?' + new URLSearchParams({ ...(thumb ? { thumb } : {}), token: TOKEN }).toString();
}
function show(value) {
  if (value === null || value === undefined) return '';
  if (Array.isArray(value)) return value.join(', ');
  if (typeof value === 'object') return JSON.stringify(value);
  if (typeof value === 'number' && !Number.isInteger(value)) return value.toFixed(3);
  return String(value);
}
function label(column) { return column === 'accepted' ? 'verdict' : column.replaceAll('_', ' '); }
function verdict(row) {
  if (row.accepted === true) return el('span', { class: 'ok', text: 'accepted' });
  if (row.accepted === false) return el('span', { class: 'bad', text: 'rejected' });
  return el('span', { class: 'none', text: 'not graded' });
}
function modelName(value) { return (meta && meta.values.model_names[value]) || value; }
function fail(e) { $('#main').replaceChildren(el('div', { class: 'error', id: 'error', text: String(e.message || e) })); }

async function loadMeta(at) {
  meta = await api('meta', at ? { at } : {});
  metaAt = at || '';
  $('#lake').textContent = meta.lake;
  $('#snapshot').textContent = 'snapshot ' + meta.snapshot;
  const versions = [['latest', 'latest (' + meta.latest + ')'], ...meta.tags.map(t => [t.name, t.name + ' (' + t.snapshot + ')'])];
  $('#version').replaceChildren(...versions.map(([v, text]) => el('option', { value: v, text })));
  $('#version').value = at || meta.at;
  const named = (name, v) => name === 'iteration' ? 'iter' + v : name === 'model' ? modelName(v) : String(v);
  for (const name of ['source', 'reason', 'model', 'iteration']) {
    const select = document.forms.filters.elements[name];
    select.replaceChildren(el('option', { value: '', text: 'any' }),
      ...meta.values[name].map(v => el('option', { value: String(v), 'data-label': named(name, v), text: named(name, v) })));
  }
  // a value of its own (index.html): the counts written into the text must not change what it selects
  for (const option of document.forms.filters.elements.verdict.options) option.dataset.label = option.value;
}

function fillForm(q) {
  const form = document.forms.filters;
  for (const name of FILTERS) if (form.elements[name]) form.elements[name].value = q[name] || '';
}

async function render() {
  const { path, q } = route();
  try {
    if (metaAt !== (q.at || '')) await loadMeta(q.at);
    if (path === '/sample') return await renderSample(q);
    if (path === '/problem') return await renderProblem(q);
    return await renderRows(q);
  } catch (e) { fail(e); }
}

function renderTabs(current, q) {
  $('#tables').replaceChildren(...Object.keys(meta.tables).map(t =>
    el('a', { href: link('/rows', { table: t, at: q.at }), class: t === current ? 'on' : null, text: t, 'data-table': t })));
}

// One cell of a list: the verdict with its reasons, a model by its short name, a text's first lines.
function cell(r, c, page) {
  if (c === 'accepted') return el('td', { class: 'verdict' }, verdict(r),
    r.reasons && r.reasons.length ? el('div', { class: 'reasons', text: r.reasons.join(', ') }) : null);
  if (c === 'model' || c === 'policy_model') return el('td', { title: r[c] || '' }, r.model_name || modelName(r[c]) || '');
  if (page.texts.includes(c)) return el('td', { class: 'text' }, el('div', { class: 'snippet', text: show(r[c]) }));
  return el('td', { class: typeof r[c] === 'number' ? 'n' : null }, show(r[c]));
}

function header(c, q, page, table) {
  const sortable = page.sortable.includes(c);
  const on = page.sort === c;
  const next = !on ? { sort: c, desc: '' } : !page.desc ? { sort: c, desc: '1' } : { sort: '', desc: '' };
  const arrow = on ? (page.desc ? ' ▼' : ' ▲') : '';
  return el('th', { 'data-col': c, class: sortable ? 'sortable' : null, title: sortable ? 'sort by ' + label(c) : null },
    sortable ? el('a', { href: link('/rows', { ...q, table, ...next, after: '', start: '' }), text: label(c) + arrow })
      : label(c));
}

async function renderRows(q) {
  const table = q.table || 'traces';
  renderTabs(table, q);
  fillForm(q);
  $('#filters').hidden = false;
  $('#status').textContent = 'loading…';
  const page = await api('rows', { ...q, table });
  facets({ ...q, table });
  const start = Number(q.start || 0);
  $('#status').textContent = page.total === 0 ? 'no rows' :
    `${table}: rows ${(start + 1).toLocaleString('en')}–${(start + page.rows.length).toLocaleString('en')} of ` +
    `${page.total.toLocaleString('en')} (snapshot ${page.snapshot})` + (q.problem ? ` · problem ${q.problem}` : '');
  const columns = page.columns.filter(c => !(c === 'reasons' && page.columns.includes('accepted')));
  const images = page.rows.some(r => r.image_id);
  const head = el('tr', {}, images ? el('th', { class: 'thumb', 'data-col': 'image' }, 'image') : null,
    columns.map(c => header(c, q, page, table)));
  const list = pick(q, LIST);
  const body = page.rows.map(r => el('tr', { 'data-id': r[page.key],
      onclick: () => { location.hash = link('/sample', { ...list, table, id: r[page.key] }); } },
    images ? el('td', { class: 'thumb' }, r.image_id ? el('img', { src: imageUrl(r.image_id, 96), loading: 'lazy',
      alt: '', width: 64 }) : null) : null,
    columns.map(c => cell(r, c, page))));
  const pager = el('div', { id: 'pager' },
    el('button', { id: 'previous', disabled: start === 0 ? 'disabled' : null, text: '← previous',
      onclick: () => history.back() }),
    ' ',
    el('button', { id: 'next', disabled: page.next ? null : 'disabled', text: 'next →',
      onclick: () => { location.hash = link('/rows', { ...q, table, after: page.next, start: start + page.rows.length }); } }));
  $('#main').replaceChildren(el('div', { class: 'scroll' },
    el('table', { class: 'rows list', id: 'rows' }, el('thead', {}, head), el('tbody', {}, body))), pager);
}

// How many rows each filter value would list, under the other filters: written into the filter menus.
async function facets(q) {
  let found;
  try { found = await api('facets', q); } catch (e) { return; }
  if (route().q.table !== q.table && (route().q.table || 'traces') !== q.table) return;  // the page moved on
  for (const name of FACETS) {
    const select = document.forms.filters.elements[name];
    const counts = found.facets[name] || {};
    for (const option of select.options) {
      if (!option.value) continue;
      const n = counts[option.value] || 0;
      const text = option.dataset.label || option.value;
      option.textContent = `${text} (${n.toLocaleString('en')})`;
      option.disabled = n === 0 && option.value !== select.value;
    }
  }
  $('#filters').dataset.facets = 'loaded';
}

function field(dl, name, value) {
  if (value === null || value === undefined || value === '' || (Array.isArray(value) && !value.length)) return;
  dl.append(el('dt', { text: name }), el('dd', { 'data-field': name }, value instanceof Node ? value : show(value)));
}

function problemBlock(r, at) {
  const dl = el('dl', {});
  field(dl, 'source', [r.source, r.source_id].filter(Boolean).join(' / '));
  field(dl, 'question', r.question);
  field(dl, 'choices', r.choices);
  field(dl, 'gold answer', r.gold !== undefined ? r.gold : r.answer);
  if (r.problem_id) field(dl, 'problem', el('a', { href: link('/problem', { id: r.problem_id, at }), id: 'problem-link', text: r.problem_id }));
  const image = r.image_id ? el('img', { src: imageUrl(r.image_id), id: 'sample-image', alt: 'image ' + r.image_id }) : null;
  return el('div', {}, image, dl);
}

function versionsTable(rows, make) {
  if (!rows || !rows.length) return null;
  const cols = Object.keys(rows[rows.length - 1]).filter(c => c !== 'at');
  return el('table', { class: 'rows', id: 'versions' },
    el('thead', {}, el('tr', {}, el('th', { text: 'version' }), cols.map(c => el('th', { text: c })))),
    el('tbody', {}, rows.map(v => el('tr', {}, el('td', {}, make(v, 'at')), cols.map(c => el('td', {}, make(v, c)))))));
}

async function renderSample(q) {
  const s = await api('sample', q);
  const r = s.row;
  renderTabs(s.table, q);
  $('#filters').hidden = true;
  const list = pick(q, LIST), around = s.list || {};
  const step = (id) => id ? link('/sample', { ...list, table: s.table, id }) : null;
  $('#status').replaceChildren(
    el('a', { href: link('/rows', { ...list, table: s.table }), id: 'back', text: '↑ list' }), ' ',
    el('a', { href: step(around.previous), id: 'sample-previous', class: around.previous ? null : 'off', text: '← previous' }), ' ',
    el('a', { href: step(around.next), id: 'sample-next', class: around.next ? null : 'off', text: 'next →' }), ' ',
    `${s.table} ${r[s.key]} at snapshot ${s.snapshot}` +
      (around.position ? ` · ${around.position.toLocaleString('en')} of ${around.of.toLocaleString('en')} in the list` : ''));
  const dl = el('dl', { id: 'facts' });
  if (r.accepted !== undefined) field(dl, 'verdict', verdict(r));
  field(dl, 'reasons', r.reasons);
  field(dl, 'grade', r.grade_reason);
  field(dl, 'extracted answer', r.extracted);
  field(dl, 'answer (stored)', r.answer !== undefined && r.gold !== undefined ? r.answer : null);
  if (r.model_name && r.model_name !== (r.model || r.policy_model)) field(dl, 'model name', r.model_name);
  for (const name of ['model', 'policy_model', 'origin', 'sample_index', 'prompt_tokens', 'completion_tokens',
      'finish_reason', 'temperature', 'top_p', 'max_tokens', 'seed', 'latency_s', 'backend', 'words', 'cleaned_words',
      'cleaned_ok', 'stage', 'reason', 'detail', 'samples', 'correct', 'pass_rate', 'from_table', 'from_id',
      'verifier', 'settings_hash', 'run_id', 'created_at']) {
    if (name === 'correct' && typeof r.correct === 'boolean' && r.accepted !== undefined) continue;
    field(dl, name, r[name]);
  }
  const texts = el('div', { class: 'texts' });
  const full = r.completion !== undefined ? r.completion : (r.caption !== undefined ? r.caption : (r.prompt || r.payload));
  texts.append(el('div', {}, el('h3', { text: 'completion' }), el('pre', { id: 'completion', text: show(full) })));
  if (r.cleaned !== undefined) texts.append(el('div', {}, el('h3', { text: 'cleaned (for SFT)' }),
    el('pre', { id: 'cleaned', text: r.cleaned === null ? '(not cleaned: only accepted samples are)' : r.cleaned })));
  const left = problemBlock(r, q.at);
  if (s.caption) left.append(el('h3', { text: 'caption the reasoner saw (' + s.caption.origin + ', ' + modelName(s.caption.model) + ')' }),
    el('pre', { id: 'caption', text: s.caption.caption }));
  if (s.prompt) left.append(el('h3', { text: 'prompt template: ' + s.prompt.name }), el('pre', { text: s.prompt.text }));
  const rejected = (s.rejected || []).map(x => el('li', { text: `${x.stage}: ${show(x.reasons || x.reason)}: ${x.detail}` }));
  const versions = versionsTable(s.versions, (v, c) => c === 'at'
    ? el('a', { href: link('/sample', { table: s.table, id: r[s.key], at: v.at }), text: v.at })
    : c === 'accepted' ? verdict(v) : show(v[c]));
  $('#main').replaceChildren(el('div', { class: 'sample', id: 'sample' }, left,
    el('div', {}, dl, texts, rejected.length ? el('div', {}, el('h3', { text: 'rejected rows' }), el('ul', {}, rejected)) : null,
      el('h3', { text: 'at every version' }), versions)));
}

async function renderProblem(q) {
  const p = await api('problem', q);
  renderTabs('problems', q);
  $('#filters').hidden = true;
  $('#status').textContent = `problem ${p.problem.problem_id} at snapshot ${p.snapshot}`;
  const blocks = [];
  for (const [table, page] of Object.entries(p.tables)) {
    if (!page.rows.length) continue;
    const columns = page.columns.filter(c => !['question', 'source'].includes(c) && !(c === 'reasons' && page.columns.includes('accepted')));
    blocks.push(el('h2', { text: `${table} (${page.total})` }), el('div', { class: 'scroll' }, el('table', { class: 'rows list', 'data-table': table },
      el('thead', {}, el('tr', {}, columns.map(c => el('th', { 'data-col': c, text: label(c) })))),
      el('tbody', {}, page.rows.map(r => el('tr', { onclick: () => { location.hash = link('/sample', { table, id: r[page.key], at: q.at, problem: p.problem.problem_id }); } },
        columns.map(c => cell(r, c, page))))))));
  }
  const versions = versionsTable(p.versions, (v, c) => c === 'at' || c === 'snapshot' ? show(v[c])
    : el('a', { href: link('/rows', { table: c === 'accepted' ? 'grades' : c, at: v.at, problem: p.problem.problem_id,
      verdict: c === 'accepted' ? 'accepted' : null }), text: show(v[c]) }));
  $('#main').replaceChildren(el('div', { class: 'sample problem', id: 'problem' }, problemBlock(p.problem, q.at),
    el('div', {}, el('h2', { text: 'at every version' }), versions, ...blocks)));
}

document.forms.filters.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const { q } = route();
  const next = { table: q.table || 'traces', at: q.at, sort: q.sort, desc: q.desc };
  for (const name of FILTERS) { const f = document.forms.filters.elements[name]; next[name] = f ? f.value : q[name]; }
  location.hash = link('/rows', next);
});
$('#clear').addEventListener('click', () => { const { q } = route(); location.hash = link('/rows', { table: q.table, at: q.at }); });
$('#version').addEventListener('change', () => {
  const { path, q } = route();
  location.hash = link(path === '/sample' || path === '/problem' ? path : '/rows',
    { ...q, at: $('#version').value === 'latest' ? '' : $('#version').value, after: '', start: '' });
});
// On a sample: ← and → step through the list it was opened from.
document.addEventListener('keydown', (ev) => {
  if (route().path !== '/sample' || (ev.target instanceof Element && ev.target.closest('input, select, textarea'))) return;
  const target = ev.key === 'ArrowLeft' ? $('#sample-previous') : ev.key === 'ArrowRight' ? $('#sample-next') : null;
  if (target && target.getAttribute('href')) location.hash = target.getAttribute('href');
});
window.addEventListener('hashchange', render);
render();
