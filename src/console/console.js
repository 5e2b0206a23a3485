'use strict';
// The operator console's script. Everything it puts into the page goes
// through textContent or setAttribute, never innerHTML: transcripts, replies
// and numbers come from customers.
(() => {
  const params = new URLSearchParams(location.search);
  const token = params.get('token');
  const TURNS_LIMIT = 50;
  const STATS_LAST = Math.max(1, Number(params.get('last')) || 200);
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const state = {
    turns: [],
    turnsKey: '',
    selected: null, // a message id the operator clicked; null follows the newest
    budgets: {}, // stage name -> ms, in force
    tick: 0,
    intents: null, // what a turn can be labelled with; [] when nothing can be taught
    labelFor: null, // the message id the label control was last set for
  };

  // ---- DOM helpers -------------------------------------------------------

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    return fill(e, attrs, children);
  }

  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG_NS, tag);
    return fill(e, attrs, children);
  }

  function fill(e, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false) e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  function $(id) { return document.getElementById(id); }

  function ms(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '—';
    if (v >= 100) return Math.round(v).toLocaleString('en-US');
    if (v >= 10) return v.toFixed(1);
    return v.toFixed(2);
  }

  function pad2(n) { return String(n).padStart(2, '0'); }

  function clock(unixMs) {
    const d = new Date(unixMs);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  function dateTime(unixMs) {
    const d = new Date(unixMs);
    return `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  }

  function waited(fromMs) {
    const s = Math.max(0, (Date.now() - fromMs) / 1000);
    if (s < 90) return `${Math.round(s)} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
    return `${Math.round(s / 86400)} d`;
  }

  function emptyRow(cols, text) {
    return el('tr', { class: 'empty' }, el('td', { colspan: cols }, text));
  }

  // ---- API ---------------------------------------------------------------

  class HttpError extends Error {
    constructor(status, text) {
      super(`${status}: ${text.trim()}`);
      this.status = status;
    }
  }

  async function api(path, body) {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const init = { headers, cache: 'no-store' };
    if (body !== undefined) {
      init.method = 'POST';
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    if (!res.ok) throw new HttpError(res.status, await res.text());
    return res.json();
  }

  function alertBox(message) {
    const box = $('alert');
    if (message) {
      box.textContent = message;
      box.hidden = false;
    } else {
      box.hidden = true;
      box.textContent = '';
    }
  }

  // ---- turns -------------------------------------------------------------

  function overrunsOf(turn) {
    return turn.spans
      .filter((s) => s.outcome && s.outcome.kind === 'overrun')
      .map((s) => `${s.outcome.budget} → ${s.outcome.action}`);
  }

  function errorsOf(turn) {
    return turn.spans
      .filter((s) => s.outcome && s.outcome.kind === 'error')
      .map((s) => `${s.stage}: ${s.outcome.reason}`);
  }

  function pathOf(turn) {
    if (turn.fast_path === true) return 'fast';
    if (turn.fast_path === false) return 'LLM';
    return '—';
  }

  function renderTurns() {
    const body = $('turns').tBodies[0];
    const rows = state.turns.map((t) => {
      const overruns = overrunsOf(t);
      const tr = el('tr', {
        'data-message-id': t.message_id,
        'data-end': t.end,
        tabindex: 0,
        title: t.message_id,
      },
      el('td', { class: 'num' }, clock(t.started_unix_ms)),
      el('td', {}, t.from),
      el('td', {}, t.kind),
      el('td', {}, t.intent || '—'),
      el('td', {}, pathOf(t)),
      el('td', {}, el('span', { class: `end end-${t.end}` }, t.end)),
      el('td', { class: 'num' }, ms(t.turn_ms)),
      el('td', { class: overruns.length ? 'over wrap' : 'wrap' }, overruns.join(', ') || '—'));
      tr.addEventListener('click', () => select(t.message_id));
      tr.addEventListener('keydown', (e) => {
        if (e.key === 'Enter' || e.key === ' ') {
          e.preventDefault();
          select(t.message_id);
        }
      });
      return tr;
    });
    body.replaceChildren(...(rows.length ? rows : [emptyRow(8, 'No turns yet.')]));
    markSelected();
  }

  function current() {
    if (state.selected) {
      const t = state.turns.find((x) => x.message_id === state.selected);
      if (t) return t;
    }
    return state.turns[0] || null;
  }

  function markSelected() {
    const shown = current();
    for (const tr of $('turns').tBodies[0].rows) {
      const on = shown !== null && tr.dataset.messageId === shown.message_id;
      tr.classList.toggle('selected', on);
      tr.setAttribute('aria-selected', on ? 'true' : 'false');
    }
    $('follow').hidden = state.selected === null;
  }

  function select(id) {
    state.selected = id;
    markSelected();
    renderTurn();
  }

  // ---- one turn: figures, waterfall, detail ------------------------------

  // The budget lines drawn on a stage's row: [budget name, ms from the
  // turn's zero]. Each budget is measured from its stage's start, except
  // encode's, which counts from the last audio (the end of speech).
  function budgetLines(span, turn, budgetOf) {
    const from = (name, start) => {
      const b = budgetOf(name);
      return b === undefined ? [] : [[name, start + b, b]];
    };
    switch (span.stage) {
      case 'ack': return from('ack', span.start_ms);
      case 'fetch': return from('fetch', span.start_ms);
      case 'decode': return from('decode', span.start_ms);
      case 'stt': return from('stt', span.start_ms);
      case 'dialog': return [...from('dialog_first_token', span.start_ms), ...from('dialog_total', span.start_ms)];
      case 'tts': return [...from('tts_first_audio', span.start_ms), ...from('tts_total', span.start_ms)];
      case 'encode': {
        const tts = turn.spans.filter((s) => s.stage === 'tts').pop();
        return from('encode', tts ? tts.end_ms : span.start_ms);
      }
      case 'upload': return from('upload', span.start_ms);
      case 'send': return from('send', span.start_ms);
      default: return [];
    }
  }

  const SHORT = {
    dialog_first_token: 'first', dialog_total: 'total',
    tts_first_audio: 'first', tts_total: 'total',
  };

  function tickLabel(t, step) {
    return step >= 1 ? Math.round(t).toLocaleString('en-US') : String(Number(t.toFixed(3)));
  }

  function niceStep(range) {
    const raw = range / 6;
    const mag = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  function renderWaterfall(turn) {
    const box = $('waterfall');
    box.setAttribute('data-message-id', turn.message_id);
    const budgetOf = (name) => {
      const own = turn.budgets_ms && turn.budgets_ms[name];
      return own !== undefined ? own : state.budgets[name];
    };
    const spans = [...turn.spans].sort((a, b) => a.start_ms - b.start_ms);
    const lastEnd = Math.max(turn.turn_ms || 0, ...spans.map((s) => s.end_ms));
    const turnBudget = budgetOf('turn');
    // The turn budget sets the axis only when it is near the turn, so a
    // fast turn is not squeezed into a corner by a far deadline.
    const reach = turnBudget !== undefined && turnBudget <= lastEnd * 2.5 ? turnBudget : 0;
    const step = niceStep(Math.max(lastEnd, reach, 1) * 1.04);
    const axisMax = Math.ceil((Math.max(lastEnd, reach, 1) * 1.04) / step) * step;

    // Drawn at the box's own width, one unit a pixel, so text keeps its size.
    const W = Math.max(640, Math.round(box.clientWidth || 900));
    const LABEL = 70, RIGHT = 190, GAP = 28, TOP = 22, ROW = 24, BOTTOM = 22;
    const plotW = W - LABEL - RIGHT - GAP;
    const H = TOP + ROW * spans.length + BOTTOM;
    const x = (t) => LABEL + (Math.min(Math.max(t, 0), axisMax) / axisMax) * plotW;

    const root = svg('svg', {
      viewBox: `0 0 ${W} ${H}`,
      width: W,
      height: H,
      role: 'img',
      'aria-label': `Waterfall of turn ${turn.message_id}`,
    });

    const axis = svg('g', { class: 'axis' });
    for (let t = 0; t <= axisMax + 1e-9; t += step) {
      axis.append(
        svg('line', { class: 'grid', x1: x(t), x2: x(t), y1: TOP - 4, y2: TOP + ROW * spans.length }),
        svg('text', { x: x(t), y: TOP - 8, 'text-anchor': t === 0 ? 'start' : 'middle' }, tickLabel(t, step)),
      );
    }
    axis.append(svg('text', { x: LABEL - 6, y: TOP - 8, 'text-anchor': 'end' }, 'ms'));
    axis.append(svg('text', { x: W - RIGHT + 4, y: TOP - 8 }, 'budget ms'));
    root.append(axis);

    spans.forEach((s, i) => {
      const y = TOP + i * ROW;
      const kind = (s.outcome && s.outcome.kind) || 'ok';
      const g = svg('g', {
        'data-stage': s.stage,
        'data-outcome': kind,
        'data-testid': `span-${s.stage}`,
      });
      if (i % 2 === 0) g.append(svg('rect', { class: 'stripe', x: 0, y, width: W, height: ROW }));
      g.append(svg('text', { x: LABEL - 6, y: y + 16, 'text-anchor': 'end' }, s.stage));
      const x0 = x(s.start_ms), x1 = x(s.end_ms);
      let tip = `${s.stage}: ${ms(s.start_ms)} → ${ms(s.end_ms)} ms (${ms(s.end_ms - s.start_ms)} ms)`;
      if (s.first_ms !== undefined && s.first_ms !== null) tip += `, first output at +${ms(s.first_ms - s.start_ms)} ms`;
      if (kind === 'overrun') tip += `, over ${s.outcome.budget} → ${s.outcome.action}`;
      if (kind === 'error') tip += `, error: ${s.outcome.reason}`;
      g.append(svg('rect', {
        class: `bar bar-${kind}`, x: x0, y: y + 6, width: Math.max(1.5, x1 - x0), height: ROW - 12, rx: 2,
      }, svg('title', {}, tip)));
      if (s.first_ms !== undefined && s.first_ms !== null) {
        const xf = x(s.first_ms);
        g.append(svg('line', { class: 'first-mark', x1: xf, x2: xf, y1: y + 3, y2: y + ROW - 3 },
          svg('title', {}, `first output at ${ms(s.first_ms)} ms`)));
      }
      const dur = svg('text', { x: x1 + 4, y: y + 16 }, `${ms(s.end_ms - s.start_ms)}`);
      g.append(dur);

      const lines = budgetLines(s, turn, budgetOf);
      for (const [name, at, b] of lines) {
        if (at > axisMax) continue;
        const xb = x(at);
        g.append(svg('line', { class: 'budget-line', x1: xb, x2: xb, y1: y + 2, y2: y + ROW - 2 },
          svg('title', {}, `${name} budget ${b} ms`)));
        if (SHORT[name]) g.append(svg('text', { class: 'budget-label', x: xb + 2, y: y + 8 }, SHORT[name]));
      }
      if (lines.length) {
        const label = lines.map(([name, , b]) => (SHORT[name] ? `${SHORT[name]} ${ms(b)}` : ms(b))).join(' · ');
        const off = lines.some(([, at]) => at > axisMax) ? ' ›' : '';
        g.append(svg('text', { class: 'budget-text', x: W - RIGHT + 4, y: y + 16 }, label + off));
      }
      root.append(g);
    });

    const yEnd = TOP + ROW * spans.length;
    if (turn.turn_ms) {
      const xs = x(turn.turn_ms);
      root.append(svg('g', { 'data-testid': 'turn-sent' },
        svg('line', { class: 'sent-line', x1: xs, x2: xs, y1: TOP - 2, y2: yEnd + 4 }),
        svg('text', { class: 'sent-label', x: xs, y: yEnd + 16, 'text-anchor': 'middle' },
          `turn ${ms(turn.turn_ms)} ms`)));
    }
    if (turnBudget !== undefined) {
      const g = svg('g', { 'data-testid': 'turn-budget' });
      if (turnBudget <= axisMax) {
        const xt = x(turnBudget);
        g.append(
          svg('line', { class: 'turn-budget', x1: xt, x2: xt, y1: TOP - 4, y2: yEnd + 4 }),
          svg('text', { class: 'budget-label', x: xt - 3, y: yEnd + 16, 'text-anchor': 'end' }, `turn budget ${ms(turnBudget)}`),
        );
      } else {
        g.append(svg('text', { class: 'budget-label', x: W - RIGHT + 4, y: yEnd + 16 }, `turn budget ${ms(turnBudget)} ›`));
      }
      root.append(g);
    }
    box.replaceChildren(root);
  }

  function figure(value, label, attrs) {
    return el('div', attrs || {}, el('b', {}, value), ' ', el('span', {}, label));
  }

  function renderTurn() {
    const turn = current();
    const title = $('turn-title');
    if (!turn) {
      title.textContent = 'no turn yet';
      $('turn-figures').replaceChildren();
      $('waterfall').replaceChildren();
      $('waterfall').removeAttribute('data-message-id');
      $('turn-detail').replaceChildren();
      return;
    }
    title.textContent = `${turn.message_id} · ${turn.from} · ${dateTime(turn.started_unix_ms)}${state.selected ? '' : ' (newest)'}`;
    const saved = turn.sequential_ms - turn.turn_ms;
    const figs = [
      figure(`${ms(turn.turn_ms)} ms`, 'turn', { 'data-testid': 'turn-ms' }),
      figure(`${ms(turn.sequential_ms)} ms`, 'sequential sum', { 'data-testid': 'sequential-ms' }),
    ];
    if (saved > 0) figs.push(figure(`${ms(saved)} ms`, 'saved by overlap'));
    if (turn.audio_ms) figs.push(figure(`${(turn.audio_ms / 1000).toFixed(1)} s`, 'voice note'));
    const stt = turn.spans.filter((s) => s.stage === 'stt').pop();
    if (stt && turn.audio_ms) figs.push(figure(`×${((stt.end_ms - stt.start_ms) / turn.audio_ms).toFixed(2)}`, 'STT real time'));
    if (turn.reply_bytes) figs.push(figure(`${(turn.reply_bytes / 1024).toFixed(1)} KB`, 'reply note'));
    $('turn-figures').replaceChildren(...figs);
    renderWaterfall(turn);

    const detail = [];
    const row = (k, v) => { if (v !== null && v !== undefined && v !== '') detail.push(el('dt', {}, k), el('dd', {}, String(v))); };
    row('end', turn.end);
    row('kind', turn.kind);
    row('transcript', turn.transcript);
    row('language', turn.language);
    row('intent', turn.intent);
    row('path', pathOf(turn));
    row('reply', turn.reply_text);
    row('overruns', overrunsOf(turn).join(', '));
    row('errors', errorsOf(turn).join('; '));
    row('note', turn.note);
    $('turn-detail').replaceChildren(...detail);
    renderLabel(turn);
  }

  // ---- teaching the classifier a turn's intent ---------------------------

  // Shown for turns with something to learn from (a text or a transcript)
  // when the service has intents; reset only when another turn is shown, so
  // the refresh every second does not undo the operator's choice.
  function renderLabel(turn) {
    const box = $('label-box');
    const teachable = state.intents && state.intents.length > 0 && turn.intent;
    box.hidden = !teachable;
    if (!teachable || state.labelFor === turn.message_id) return;
    state.labelFor = turn.message_id;
    const select = $('label-intent');
    select.replaceChildren(...state.intents.map((i) => el('option', { value: i }, i)));
    select.value = turn.intent;
    $('label-status').textContent = '';
  }

  $('label-save').addEventListener('click', async () => {
    const turn = current();
    if (!turn) return;
    const intent = $('label-intent').value;
    const status = $('label-status');
    status.textContent = 'saving…';
    try {
      const done = await api('/console/api/label', { message_id: turn.message_id, intent });
      status.textContent = `learned: “${done.text}” (${done.lang}) is ${done.intent}`;
    } catch (e) {
      let reason = e.message;
      try { reason = JSON.parse(reason.replace(/^\d+: /, '')).error || reason; } catch (_) { /* plain text */ }
      status.textContent = `not saved: ${reason}`;
    }
  });

  // ---- stats -------------------------------------------------------------

  function chart(r, scaleMax, budget) {
    const W = 300, H = 16;
    const top = Math.max(scaleMax, 1);
    const x = (v) => (Math.min(v, top) / top) * W;
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img',
      'aria-label': `${r.stage}: p50 ${ms(r.p50)}, p95 ${ms(r.p95)}, p99 ${ms(r.p99)} ms` });
    for (const [p, y, h] of [['p99', 1, 14], ['p95', 3, 10], ['p50', 5, 6]]) {
      const v = r[p];
      if (v === null || v === undefined) continue;
      const over = budget !== undefined && v > budget;
      root.append(svg('rect', { class: `${p}${over ? ' over-budget' : ''}`, x: 0, y, width: Math.max(1, x(v)), height: h },
        svg('title', {}, `${p} ${ms(v)} ms`)));
    }
    if (budget !== undefined) {
      const xb = Math.min(x(budget), W - 1);
      root.append(svg('line', { class: 'tick', x1: xb, x2: xb, y1: 0, y2: H }, svg('title', {}, `budget ${budget} ms`)));
    }
    return root;
  }

  function renderStats(s) {
    $('stats-title').textContent = `over the last ${s.turns} turn${s.turns === 1 ? '' : 's'}, percentiles by ${s.percentile_method}`;
    const budgeted = [el('tr', { class: 'group' }, el('td', { colspan: 9 }, 'budgeted stages (each row scaled to its budget)'))];
    for (const r of s.budgets) {
      const top = Math.max(r.p99 || 0, r.budget_ms) * 1.08;
      const over = (v) => (v !== null && v !== undefined && v > r.budget_ms ? 'num bad' : 'num');
      budgeted.push(el('tr', { 'data-stage': r.stage, 'data-kind': 'budget' },
        el('td', {}, r.stage),
        el('td', { class: 'num' }, r.count),
        el('td', { class: over(r.p50) }, ms(r.p50)),
        el('td', { class: over(r.p95) }, ms(r.p95)),
        el('td', { class: over(r.p99) }, ms(r.p99)),
        el('td', { class: 'num' }, ms(r.budget_ms)),
        el('td', {}, r.action),
        el('td', { class: r.over_budget ? 'num bad' : 'num' }, r.over_budget),
        el('td', { class: 'chart' }, r.count ? chart(r, top, r.budget_ms) : '')));
    }
    $('stats-budgets').replaceChildren(...budgeted);

    const spans = [el('tr', { class: 'group' }, el('td', { colspan: 9 }, 'time in each span stage (one scale)'))];
    const top = Math.max(1, ...s.spans.map((r) => r.p99 || 0)) * 1.04;
    for (const r of s.spans) {
      spans.push(el('tr', { 'data-stage': r.stage, 'data-kind': 'span' },
        el('td', {}, r.stage),
        el('td', { class: 'num' }, r.count),
        el('td', { class: 'num' }, ms(r.p50)),
        el('td', { class: 'num' }, ms(r.p95)),
        el('td', { class: 'num' }, ms(r.p99)),
        el('td', { class: 'num' }, ''),
        el('td', {}, ''),
        el('td', { class: 'num' }, ''),
        el('td', { class: 'chart' }, chart(r, top, undefined))));
    }
    if (s.spans.length === 0) spans.push(emptyRow(9, 'No spans yet.'));
    $('stats-spans').replaceChildren(...spans);

    const overruns = s.overruns.map((o) => el('tr', { 'data-stage': o.stage, 'data-action': o.action },
      el('td', {}, o.stage), el('td', {}, o.action), el('td', { class: 'num' }, o.count)));
    for (const e of s.errors) {
      overruns.push(el('tr', { 'data-stage': e.stage, 'data-action': 'error' },
        el('td', {}, e.stage), el('td', { class: 'bad' }, 'error'), el('td', { class: 'num' }, e.count)));
    }
    $('overruns').tBodies[0].replaceChildren(...(overruns.length ? overruns
      : [emptyRow(3, `No overruns or errors in the last ${s.turns} turns.`)]));

    const outcomes = [];
    const fp = s.fast_path;
    outcomes.push(figure(fp.share === null ? '—' : `${Math.round(fp.share * 100)} %`,
      `fast path (${fp.fast} of ${fp.fast + fp.llm} answered; ${fp.llm} by the LLM)`, { 'data-testid': 'fast-path' }));
    for (const end of ['voice', 'text', 'silent', 'failed']) {
      outcomes.push(figure(String(s.ends[end] || 0), end, end === 'failed' && s.ends[end] ? { class: 'bad' } : {}));
    }
    $('outcomes').replaceChildren(...outcomes);
  }

  // ---- budgets and hand-offs ---------------------------------------------

  function renderBudgets(b) {
    state.budgets = Object.fromEntries(b.stages.map((s) => [s.stage, s.ms]));
    $('budgets').tBodies[0].replaceChildren(...b.stages.map((s) => el('tr', { 'data-stage': s.stage },
      el('td', {}, s.stage), el('td', { class: 'num' }, ms(s.ms) + (s.per_audio_s_ms ? ' + ' + s.per_audio_s_ms + ' ms per audio s' : '')), el('td', {}, s.action))));
    const r = b.reload;
    const reload = $('reload');
    reload.replaceChildren(`Reloads: ${r.applied} applied, ${r.rejected} rejected.`);
    if (r.last_error) {
      reload.append(' Last rejected: ', el('span', { class: 'bad' }, r.last_error), ' (the budgets above stayed in force).');
    }
    $('holding').textContent = `Holding message: “${b.holding_message}”`;
  }

  function renderHandoffs(rows) {
    const body = $('handoffs').tBodies[0];
    if (!rows.length) {
      body.replaceChildren(emptyRow(4, 'No one is waiting for a person.'));
      return;
    }
    body.replaceChildren(...rows.map((h) => el('tr', { 'data-number': h.number },
      el('td', {}, h.number),
      el('td', {}, dateTime(h.since_unix_ms)),
      el('td', { class: 'num' }, waited(h.since_unix_ms)),
      el('td', { class: 'wrap' }, h.reason))));
  }

  function renderOutbox(view) {
    const paused = $('paused');
    paused.hidden = !view.paused;
    paused.textContent = view.paused
      ? `Sending is paused: the access token was rejected (${view.paused}). Load a new token (edit [whatsapp] access_token or send SIGHUP); nothing is lost meanwhile.`
      : '';
    const body = $('outbox').tBodies[0];
    if (!view.waiting.length) {
      body.replaceChildren(emptyRow(6, 'Nothing waits: every reply went out.'));
      return;
    }
    const now = Date.now();
    body.replaceChildren(...view.waiting.map((w) => el('tr', { 'data-message': w.message_id },
      el('td', {}, w.message_id),
      el('td', {}, w.customer),
      el('td', { class: 'num' }, String(w.attempts)),
      el('td', { class: 'num' }, waited(w.received_unix_ms)),
      el('td', { class: 'num' }, w.retry_at_unix_ms ? `${Math.max(0, Math.round((w.retry_at_unix_ms - now) / 1000))} s` : '–'),
      el('td', { class: 'wrap' }, w.reason))));
  }

  // ---- polling -----------------------------------------------------------

  async function refreshTurns() {
    const turns = await api(`/console/api/turns?limit=${TURNS_LIMIT}`);
    const key = JSON.stringify(turns);
    if (key === state.turnsKey) return false;
    state.turnsKey = key;
    state.turns = turns;
    // A pinned turn that has scrolled out of the list: follow the newest.
    if (state.selected && !turns.some((t) => t.message_id === state.selected)) state.selected = null;
    renderTurns();
    renderTurn();
    return true;
  }

  async function refreshSlow() {
    const [stats, budgets, handoffs, outbox] = await Promise.all([
      api(`/console/api/stats?last=${STATS_LAST}`),
      api('/console/api/budgets'),
      api('/console/api/handoffs'),
      api('/console/api/outbox'),
    ]);
    renderBudgets(budgets);
    renderStats(stats);
    renderHandoffs(handoffs);
    renderOutbox(outbox);
  }

  async function poll() {
    try {
      if (state.intents === null) state.intents = await api('/console/api/intents');
      // Budgets first on the first round, so the first waterfall has them.
      if (state.tick === 0) await refreshSlow();
      const changed = await refreshTurns();
      if (state.tick > 0 && (changed || state.tick % 5 === 0)) await refreshSlow();
      if (state.tick === 0) renderTurn();
      alertBox(null);
      $('status').textContent = `updated ${clock(Date.now())} · ${state.turns.length} turn${state.turns.length === 1 ? '' : 's'} shown`;
    } catch (e) {
      if (e instanceof HttpError && e.status === 401) {
        alertBox('This console needs the operator token: open /console?token=<operator token>.');
      } else if (e instanceof HttpError && e.status === 403) {
        alertBox(e.message);
      } else {
        alertBox(`Cannot reach the service (${e.message}); retrying every second.`);
      }
      $('status').textContent = `last try ${clock(Date.now())} failed`;
    }
    state.tick += 1;
    setTimeout(poll, 1000);
  }

  $('follow').addEventListener('click', () => select(null));
  let resizing = null;
  window.addEventListener('resize', () => {
    clearTimeout(resizing);
    resizing = setTimeout(renderTurn, 150);
  });
  poll();
})();
