// The sandbox chat page: a customer's side of a WhatsApp conversation with
// voxline. Messages go out through the sandbox API (which signs them and
// POSTs them to the service's webhook) and come back by long polling the
// conversation. Beside each answered message, the turn's waterfall from the
// console's trace API. Every piece of text goes in with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const chat = $("chat");
const statusLine = $("status");

const state = {
  from: "15550001842",
  after: 0,
  epoch: 0, // bumped when the customer changes, to drop stale polls
  rows: new Map(), // inbound wamid -> {row, ticks, seq, traced}
  pendingTraces: new Map(), // wamid -> {box, tries}
  lastInbound: null,
  abort: null, // the poll in flight, cancelled when the customer changes
};

function setStatus(text) {
  statusLine.textContent = text || "";
}

function el(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function clock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    const reason = body && typeof body.error === "string" ? body.error : response.statusText;
    throw new Error(response.status + ": " + reason);
  }
  return body;
}

// ---- rendering ----------------------------------------------------------

function render(m) {
  if (m.type === "read") {
    const r = state.rows.get(m.message_id);
    if (r) {
      r.ticks.textContent = "✓✓";
      r.ticks.classList.add("read");
    }
    return;
  }
  const mine = m.direction === "inbound";
  const row = el("div", "row " + (mine ? "me" : "them"));
  const bubble = el("div", "bubble");
  if (m.type === "text") {
    bubble.appendChild(el("div", "", m.body));
  } else if (m.type === "audio") {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "metadata";
    audio.src = "/sandbox/api/media/" + encodeURIComponent(m.media_id);
    bubble.appendChild(audio);
  }
  const meta = el("div", "meta", clock(m.at_ms) + " ");
  bubble.appendChild(meta);
  row.appendChild(bubble);
  if (mine) {
    const ticks = el("span", "ticks", m.error ? "!" : "✓");
    meta.appendChild(ticks);
    if (m.error) row.appendChild(el("div", "error", "not delivered: " + m.error));
    state.rows.set(m.id, { row, ticks, seq: m.seq, traced: false });
    state.lastInbound = m.id;
  } else if (state.lastInbound) {
    // The first reply after a customer's message: its turn's trace.
    const r = state.rows.get(state.lastInbound);
    if (r && !r.traced) {
      r.traced = true;
      const box = el("div", "trace", "trace pending");
      r.row.appendChild(box);
      state.pendingTraces.set(state.lastInbound, { box, tries: 0 });
    }
  }
  const atBottom = chat.scrollHeight - chat.scrollTop - chat.clientHeight < 80;
  chat.appendChild(row);
  if (atBottom || mine) chat.scrollTop = chat.scrollHeight;
}

// ---- the turn's waterfall -----------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = { ok: "#00a884", overrun: "#f59e0b", error: "#dc2626" };

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function waterfall(trace) {
  const spans = Array.isArray(trace.spans) ? trace.spans : [];
  const total = Math.max(
    Number(trace.turn_ms) || 0,
    ...spans.map((s) => Number(s.end_ms) || 0),
    1
  );
  const width = 320, label = 62, row = 13, top = 4;
  const plot = width - label - 8;
  const height = top + spans.length * row + 16;
  const x = (ms) => label + (Math.max(0, Number(ms) || 0) / total) * plot;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  root.appendChild(svg("title", {}, `turn ${Math.round(total)} ms`));
  spans.forEach((s, i) => {
    const y = top + i * row;
    const outcome = (s.outcome && s.outcome.kind) || "ok";
    root.appendChild(svg("text", { x: 2, y: y + 9, "font-size": 9, fill: "#444" }, String(s.stage)));
    const bar = svg("rect", {
      x: x(s.start_ms),
      y: y + 1,
      width: Math.max(1.5, x(s.end_ms) - x(s.start_ms)),
      height: row - 3,
      rx: 2,
      fill: COLOURS[outcome] || COLOURS.ok,
    });
    const ms = (Number(s.end_ms) - Number(s.start_ms)).toFixed(1);
    let tip = `${s.stage}: ${ms} ms (${Number(s.start_ms).toFixed(1)} → ${Number(s.end_ms).toFixed(1)})`;
    if (s.first_ms !== undefined && s.first_ms !== null) {
      tip += `, first output at ${Number(s.first_ms).toFixed(1)}`;
    }
    if (outcome !== "ok") tip += `, ${outcome}`;
    if (s.outcome && s.outcome.reason) tip += `: ${s.outcome.reason}`;
    bar.appendChild(svg("title", {}, tip));
    root.appendChild(bar);
    if (s.first_ms !== undefined && s.first_ms !== null) {
      root.appendChild(svg("rect", { x: x(s.first_ms), y: y + 1, width: 1.5, height: row - 3, fill: "#0b4f44" }));
    }
  });
  const axis = top + spans.length * row + 2;
  root.appendChild(svg("line", { x1: label, y1: axis, x2: label + plot, y2: axis, stroke: "#999" }));
  root.appendChild(svg("text", { x: label, y: axis + 11, "font-size": 9, fill: "#666" }, "0"));
  root.appendChild(
    svg("text", { x: label + plot, y: axis + 11, "font-size": 9, fill: "#666", "text-anchor": "end" }, `${Math.round(total)} ms`)
  );
  return root;
}

function showTrace(box, trace) {
  box.textContent = "";
  const parts = [`turn ${Math.round(Number(trace.turn_ms) || 0)} ms`];
  if (trace.transcript) parts.push(`heard “${trace.transcript}”`);
  if (trace.intent) parts.push(`intent ${trace.intent}`);
  if (trace.end) parts.push(`sent ${trace.end}`);
  box.appendChild(el("div", "", parts.join(" · ")));
  box.appendChild(waterfall(trace));
}

// One request for all the traces still pending; the console may not exist
// (then they stay pending) and a trace may land a moment after the reply.
async function fetchTraces() {
  if (state.pendingTraces.size === 0) return;
  let turns = [];
  try {
    const response = await fetch("/console/api/turns?limit=50");
    if (response.ok) {
      const body = await response.json();
      if (body && Array.isArray(body.turns)) turns = body.turns;
    }
  } catch (_) {
    turns = [];
  }
  for (const [id, pending] of state.pendingTraces) {
    const trace = turns.find((t) => t && t.message_id === id);
    if (trace) {
      try {
        showTrace(pending.box, trace);
      } catch (_) {
        pending.box.textContent = "trace unreadable";
      }
      state.pendingTraces.delete(id);
    } else if (++pending.tries > 30) {
      state.pendingTraces.delete(id); // stays "trace pending"
    }
  }
}

// ---- polling the conversation -----------------------------------------

async function poll() {
  for (;;) {
    const epoch = state.epoch;
    state.abort = new AbortController();
    try {
      const q = new URLSearchParams({ from: state.from, after: String(state.after), wait_ms: "20000" });
      const body = await api("/sandbox/api/conversation?" + q, { signal: state.abort.signal });
      if (epoch !== state.epoch) continue;
      for (const m of body.messages) {
        if (m.seq > state.after) {
          render(m);
          state.after = m.seq;
        }
      }
    } catch (e) {
      if (epoch !== state.epoch) continue; // aborted by a change of customer
      setStatus("connection: " + e.message + "; retrying");
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

function switchCustomer(number) {
  state.from = number;
  state.after = 0;
  state.epoch += 1;
  if (state.abort) state.abort.abort();
  state.rows.clear();
  state.pendingTraces.clear();
  state.lastInbound = null;
  chat.textContent = "";
  history.replaceState(null, "", "?from=" + encodeURIComponent(number));
}

// ---- sending ------------------------------------------------------------

async function sendText() {
  const input = $("text");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  try {
    await api("/sandbox/api/text", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ from: state.from, text }),
    });
    setStatus("");
  } catch (e) {
    setStatus("not sent: " + e.message);
    input.value = text;
  }
}

async function sendAudio(blob, type, voice) {
  setStatus("sending…");
  try {
    const q = new URLSearchParams({ from: state.from, voice: String(voice) });
    await api("/sandbox/api/voice?" + q, { method: "POST", headers: { "content-type": type }, body: blob });
    setStatus("");
  } catch (e) {
    setStatus("not sent: " + e.message);
  }
}

// Chromium records audio/webm, which voxline does not decode: decode it with
// Web Audio, downmix and resample to 16 kHz mono, and send 16-bit WAV.
async function toWav(blob) {
  const data = await blob.arrayBuffer();
  const Ctx = window.AudioContext || window.webkitAudioContext;
  const ctx = new Ctx();
  let decoded;
  try {
    decoded = await ctx.decodeAudioData(data);
  } finally {
    ctx.close();
  }
  const rate = 16000;
  const frames = Math.max(1, Math.ceil(decoded.duration * rate));
  const offline = new OfflineAudioContext(1, frames, rate);
  const source = offline.createBufferSource();
  source.buffer = decoded;
  source.connect(offline.destination);
  source.start();
  const mono = (await offline.startRendering()).getChannelData(0);
  return new Blob([wav(mono, rate)], { type: "audio/wav" });
}

function wav(samples, rate) {
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const v = new DataView(buffer);
  const text = (at, s) => [...s].forEach((c, i) => v.setUint8(at + i, c.charCodeAt(0)));
  text(0, "RIFF");
  v.setUint32(4, 36 + samples.length * 2, true);
  text(8, "WAVE");
  text(12, "fmt ");
  v.setUint32(16, 16, true); // fmt chunk size
  v.setUint16(20, 1, true); // PCM
  v.setUint16(22, 1, true); // mono
  v.setUint32(24, rate, true);
  v.setUint32(28, rate * 2, true); // bytes per second
  v.setUint16(32, 2, true); // block align
  v.setUint16(34, 16, true); // bits per sample
  text(36, "data");
  v.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    v.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return buffer;
}

const recording = { recorder: null, chunks: [], started: 0, timer: null };

async function toggleRecording() {
  const button = $("record");
  if (recording.recorder) {
    recording.recorder.stop();
    return;
  }
  if (!navigator.mediaDevices || !window.MediaRecorder) {
    setStatus("this browser cannot record here (it needs http://127.0.0.1 or localhost)");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) {
    setStatus("no microphone: " + e.message);
    return;
  }
  const recorder = new MediaRecorder(stream);
  recording.recorder = recorder;
  recording.chunks = [];
  recording.started = Date.now();
  recorder.ondataavailable = (e) => {
    if (e.data && e.data.size) recording.chunks.push(e.data);
  };
  recorder.onstop = async () => {
    clearInterval(recording.timer);
    stream.getTracks().forEach((t) => t.stop());
    recording.recorder = null;
    button.classList.remove("rec");
    button.textContent = "Record";
    const blob = new Blob(recording.chunks, { type: recorder.mimeType || "audio/webm" });
    try {
      setStatus("converting…");
      await sendAudio(await toWav(blob), "audio/wav", true);
    } catch (e) {
      setStatus("could not convert the recording: " + e.message);
    }
  };
  recorder.start();
  button.classList.add("rec");
  button.textContent = "Stop";
  recording.timer = setInterval(() => {
    setStatus("recording " + Math.round((Date.now() - recording.started) / 1000) + " s — Stop sends it");
  }, 250);
}

// Types voxline decodes as they are; anything else is converted to WAV.
const DECODED = ["audio/ogg", "audio/mpeg", "audio/mp3", "audio/mp4", "audio/x-m4a", "audio/m4a", "audio/aac", "audio/wav", "audio/x-wav", "audio/wave", "audio/flac", "audio/x-flac"];

async function sendFile(file) {
  if (!file) return;
  const type = (file.type || "").split(";")[0].trim().toLowerCase();
  if (DECODED.includes(type)) {
    await sendAudio(file, file.type, false);
    return;
  }
  try {
    setStatus("converting…");
    await sendAudio(await toWav(file), "audio/wav", false);
  } catch (e) {
    setStatus("cannot read that file as audio: " + e.message);
  }
}

// ---- start --------------------------------------------------------------

async function start() {
  const params = new URLSearchParams(location.search);
  const from = $("from");
  try {
    const info = await api("/sandbox/api/info");
    $("business").textContent = "business number +" + info.business_number;
    state.from = params.get("from") || info.default_customer;
  } catch (_) {
    state.from = params.get("from") || state.from;
  }
  from.value = state.from;
  from.addEventListener("change", () => {
    const n = from.value.replace(/[\s+-]/g, "");
    if (/^\d{6,15}$/.test(n)) {
      switchCustomer(n);
      setStatus("");
    } else {
      setStatus("a number is 6 to 15 digits");
    }
  });
  $("send").addEventListener("click", sendText);
  $("text").addEventListener("keydown", (e) => {
    if (e.key === "Enter") sendText();
  });
  $("record").addEventListener("click", toggleRecording);
  $("attach").addEventListener("click", () => $("file").click());
  $("file").addEventListener("change", (e) => {
    sendFile(e.target.files[0]);
    e.target.value = "";
  });
  setInterval(fetchTraces, 2000);
  poll();
}

start();
