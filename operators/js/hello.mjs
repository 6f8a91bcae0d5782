#!/usr/bin/env node
// hello: an eevee command operator in JavaScript, built from docs/protocol.md and schemas/
// alone (no eeveepy). It serves `!hello [NAME]`, answering "<greeting>, <NAME or your name>!".
//
//   [operators.hello]
//   command = ["node", "operators/js/hello.mjs"]
//   settings = { greeting = "hello" }
//
// What it does, in protocol terms: connects with the EEVEE_* environment; answers `ping`
// requests on {p}.operator.ping.<id> with `pong`; serves `command.run` requests on
// {p}.command.run.hello in the queue group `cmd.hello` (a `chat.out` reply, then a
// `command.result`); publishes its `command.register` at start and on every `command.sync`;
// announces `ready` with its pid. SIGTERM/SIGINT: drain and exit 0. SIGHUP: re-read
// EEVEE_SETTINGS_FILE. Logs are JSON lines on stderr, which the supervisor relays.
// Exit codes as the eeveepy runtime: 69 bus unreachable at start, 78 invalid settings or
// environment, 1 lost connection or forced stop.

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect, Events } from "nats";

// -- logging: one JSON object per line on stderr ------------------------------------------------

function log(level, event, fields = {}) {
  const line = { timestamp: timestamp(), level, event, ...fields };
  process.stderr.write(JSON.stringify(line) + "\n");
}

// -- environment and settings -------------------------------------------------------------------

const EX_UNAVAILABLE = 69;
const EX_CONFIG = 78;
const OPERATOR_ID = /^[a-z0-9][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$/;
const PREFIX = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
const SIMPLE_TOKEN = /^[a-z0-9][a-z0-9_-]*$/;

function fail(code, event, fields = {}) {
  log("critical", event, fields);
  process.exit(code);
}

process.on("uncaughtException", (err) => fail(1, "crashed", { error: String(err?.stack ?? err) }));
process.on("unhandledRejection", (err) => fail(1, "crashed", { error: String(err?.stack ?? err) }));

const env = process.env;
const id = env.EEVEE_OPERATOR_ID ?? "";
const prefix = env.EEVEE_SUBJECT_PREFIX || "eevee";
if (!OPERATOR_ID.test(id) || id.length > 64) {
  fail(EX_CONFIG, "invalid EEVEE_OPERATOR_ID", { id });
}
if (!PREFIX.test(prefix)) fail(EX_CONFIG, "invalid EEVEE_SUBJECT_PREFIX", { prefix });
if (!env.EEVEE_NATS_URL) fail(EX_CONFIG, "EEVEE_NATS_URL is not set");
const connectTimeout = Number(env.EEVEE_CONNECT_TIMEOUT || 5);
if (!(connectTimeout > 0)) fail(EX_CONFIG, "invalid EEVEE_CONNECT_TIMEOUT");

/** Checked settings from a JSON text; throws Error naming the problem. */
function parseSettings(text) {
  const data = JSON.parse(text || "{}");
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new Error("settings must be a JSON object");
  }
  for (const key of Object.keys(data)) {
    if (key !== "greeting") throw new Error(`unknown setting '${key}'`);
  }
  const greeting = data.greeting ?? "hello";
  if (typeof greeting !== "string" || greeting.trim() === "") {
    throw new Error("greeting: must be a non-empty string");
  }
  return { greeting };
}

/** The current settings: EEVEE_SETTINGS_FILE when set (the docs prefer it), else EEVEE_SETTINGS. */
function loadSettings() {
  const file = env.EEVEE_SETTINGS_FILE;
  if (file) {
    try {
      return parseSettings(readFileSync(file, "utf8"));
    } catch (err) {
      if (err.code !== "ENOENT") throw err;
    }
  }
  return parseSettings(env.EEVEE_SETTINGS);
}

let settings;
try {
  settings = loadSettings();
} catch (err) {
  fail(EX_CONFIG, "invalid settings", { error: err.message });
}

// -- envelopes ------------------------------------------------------------------------------------

/** RFC 3339 in UTC with microseconds and Z, as the docs ask (the clock has milliseconds). */
function timestamp() {
  return new Date().toISOString().replace(/Z$/, "000Z");
}

// Ids as eeveepy writes them (any unique string would do): 10 characters of millisecond time
// in Crockford base32, 10 of per-process randomness, a 6-digit hex per-process counter.
const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RANDOM = Array.from(randomBytes(10), (b) => CROCKFORD[b & 31]).join("");
let counter = 0;

function newId() {
  let t = Date.now();
  let time = "";
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD[t % 32] + time;
    t = Math.floor(t / 32);
  }
  counter = (counter + 1) % 0x1000000;
  return time + RANDOM + counter.toString(16).padStart(6, "0");
}

const encoder = new TextEncoder();

/** The payload of a new envelope around `body` (kind per the body table of the docs). */
function envelope(kind, body, trace) {
  return encoder.encode(
    JSON.stringify({
      v: 1,
      source: id,
      kind,
      id: newId(),
      timestamp: timestamp(),
      headers: trace ? { trace } : {},
      body,
    }),
  );
}

const isObject = (x) => x !== null && typeof x === "object" && !Array.isArray(x);
const isString = (x) => typeof x === "string";

/** The envelope in `msg`, checked as far as this operator relies on it; throws Error(reason). */
function parseEnvelope(msg, kind) {
  let data;
  try {
    data = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(msg.data));
  } catch {
    throw new Error("payload is not JSON");
  }
  if (!isObject(data)) throw new Error("payload is not a JSON object");
  if ((data.v ?? 1) !== 1) throw new Error(`v: unsupported version ${JSON.stringify(data.v)}`);
  if (data.kind !== kind) {
    throw new Error(`unexpected kind ${JSON.stringify(data.kind)} (expected '${kind}')`);
  }
  for (const field of ["id", "source", "timestamp"]) {
    if (!isString(data[field])) throw new Error(`${field}: Field required`);
  }
  if (data.id === "") throw new Error("id: must not be empty");
  if (!/(Z|[+-]\d\d:\d\d)$/i.test(data.timestamp)) throw new Error("timestamp: needs an offset");
  const headers = data.headers ?? {};
  if (!isObject(headers) || !Object.values(headers).every(isString)) {
    throw new Error("headers: must be an object of strings");
  }
  if (!isObject(data.body)) throw new Error("body: must be an object");
  return { ...data, headers, trace: headers.trace || data.id };
}

/** A chat.message body with what a reply needs; throws Error(reason). */
function checkChatMessage(m) {
  if (!isObject(m)) throw new Error("body.message: Field required");
  for (const field of ["platform", "network", "room", "text"]) {
    if (!isString(m[field])) throw new Error(`body.message.${field}: Field required`);
  }
  if (!isObject(m.user) || !isString(m.user.id) || !isString(m.user.name)) {
    throw new Error("body.message.user: needs id and name");
  }
  if (!SIMPLE_TOKEN.test(m.platform)) throw new Error("body.message.platform: not a simple token");
  return m;
}

// -- subjects -------------------------------------------------------------------------------------

const subject = (...tokens) => [prefix, ...tokens].join(".");
const SAFE = /^[A-Za-z0-9\-_#!@:+=~]$/;

/** encode_token of docs/protocol.md: chat strings as one canonical subject token. */
function encodeToken(s) {
  if (s === "") return "%";
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const ch = s[i];
    if (SAFE.test(ch)) {
      out += ch;
      continue;
    }
    // UTF-8 by hand, so a lone surrogate is encoded too (as Python's "surrogatepass").
    let cp = s.charCodeAt(i);
    const next = s.charCodeAt(i + 1);
    if (cp >= 0xd800 && cp < 0xdc00 && next >= 0xdc00 && next < 0xe000) {
      cp = 0x10000 + ((cp - 0xd800) << 10) + (next - 0xdc00);
      i++;
    }
    const bytes =
      cp < 0x80
        ? [cp]
        : cp < 0x800
          ? [0xc0 | (cp >> 6), 0x80 | (cp & 63)]
          : cp < 0x10000
            ? [0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63)]
            : [0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 63), 0x80 | ((cp >> 6) & 63),
               0x80 | (cp & 63)];
    out += bytes.map((b) => "%" + b.toString(16).toUpperCase().padStart(2, "0")).join("");
  }
  return out;
}

// -- the operator ---------------------------------------------------------------------------------

const COMMAND = "hello";
const REGISTRATION = {
  operator: id,
  name: COMMAND,
  aliases: [],
  pattern: "(?P<name>\\S+)?",
  usage: "!hello [NAME]",
  help: "Greet NAME, or you.",
  permission: null,
  rate_limit: null,
  scope: { platforms: [], networks: [], rooms: [] },
};

// -- signals (handled from the start: SIGHUP's default action would kill us) --------------------

let nc;
let runs;
let stopping = false;

async function stop(signal) {
  if (stopping) return;
  stopping = true;
  log("info", "stopping", { signal });
  if (!nc) process.exit(0); // not connected yet: nothing to finish
  setTimeout(() => fail(1, "did not stop in time"), 4000).unref();
  await runs?.drain(); // no new invocations; the current ones run synchronously, so are done
  await nc.drain(); // flushes what we published, then closes: the end of the script exits 0
}

process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));
process.on("SIGHUP", () => {
  if (!env.EEVEE_SETTINGS_FILE) return log("info", "reload: no EEVEE_SETTINGS_FILE, nothing to do");
  try {
    settings = parseSettings(readFileSync(env.EEVEE_SETTINGS_FILE, "utf8"));
    log("info", "reloaded", { greeting: settings.greeting });
  } catch (err) {
    log("error", "reload failed: keeping the old settings", { error: err.message });
  }
});

// -- the bus -------------------------------------------------------------------------------------

try {
  nc = await connect({
    servers: env.EEVEE_NATS_URL.split(","), // a cluster's seeds, comma-separated
    user: env.EEVEE_NATS_USER || undefined,
    pass: env.EEVEE_NATS_USER ? (env.EEVEE_NATS_PASSWORD ?? "") : undefined,
    name: id,
    timeout: connectTimeout * 1000,
    maxReconnectAttempts: -1, // the supervisor decides when to give up, not the client
  });
} catch (err) {
  fail(EX_UNAVAILABLE, "cannot connect to the bus", {
    url: env.EEVEE_NATS_URL, error: err.message,
  });
}

/** A payload we cannot accept: logged, dead-lettered, answered `error` if it was a request. */
function reject(msg, reason, trace) {
  log("warning", "rejected payload", { subject: msg.subject, reason });
  const data = msg.data;
  let cut = data.subarray(0, 4096);
  let text;
  let encoding = "utf-8";
  for (let drop = 0; text === undefined && drop < 4; drop++) {
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(cut.subarray(0, cut.length - drop));
    } catch {
      if (data.length <= 4096) break; // invalid for real, not just cut in the middle of a character
    }
  }
  if (text === undefined) {
    text = Buffer.from(cut).toString("base64");
    encoding = "base64";
  }
  const dlq = {
    subject: msg.subject,
    reason,
    receiver: id,
    size: data.length,
    payload: text,
    encoding,
    truncated: data.length > 4096,
  };
  nc.publish(subject("dlq", msg.subject.slice(prefix.length + 1)), envelope("dlq", dlq, trace));
  if (msg.reply) msg.respond(envelope("error", { error: "invalid", message: reason }, trace));
}

function register() {
  nc.publish(subject("command", "register", id), envelope("command.register", REGISTRATION));
}

// Pings: answered from a callback of their own, never behind other work.
nc.subscribe(subject("operator", "ping", id), {
  callback: (err, msg) => {
    if (err) return log("error", "ping subscription failed", { error: err.message });
    let ping;
    try {
      ping = parseEnvelope(msg, "ping");
    } catch (e) {
      return reject(msg, e.message);
    }
    msg.respond(envelope("pong", { operator: id, state: "running" }, ping.trace));
  },
});

nc.subscribe(subject("command", "sync"), {
  callback: (err, msg) => {
    if (err) return log("error", "sync subscription failed", { error: err.message });
    try {
      parseEnvelope(msg, "command.sync");
    } catch (e) {
      return reject(msg, e.message);
    }
    register();
  },
});

runs = nc.subscribe(subject("command", "run", encodeToken(COMMAND)), {
  queue: `cmd.${COMMAND}`,
  callback: (err, msg) => {
    if (err) return log("error", "command subscription failed", { error: err.message });
    let inv;
    try {
      inv = parseEnvelope(msg, "command.run");
      if (!isString(inv.body.command)) throw new Error("body.command: Field required");
      checkChatMessage(inv.body.message);
      const args = inv.body.args ?? {};
      if (!isObject(args) || !Object.values(args).every(isString)) {
        throw new Error("body.args: must be an object of strings");
      }
    } catch (e) {
      return reject(msg, e.message, inv?.trace);
    }
    let result;
    try {
      hello(inv);
      result = { ok: true, message: "" };
    } catch (e) {
      log("error", "hello failed", { error: e.message, trace: inv.trace });
      result = { ok: false, message: e.message };
    }
    if (msg.reply) msg.respond(envelope("command.result", result, inv.trace));
  },
});

/** The command itself: answer where the message came from, with the invocation's trace. */
function hello(inv) {
  const m = inv.body.message;
  const name = (inv.body.args?.name ?? "").trim() || m.user.name || m.user.id;
  const out = {
    platform: m.platform,
    network: m.network,
    target: m.private ? m.user.id : m.room,
    text: `${settings.greeting}, ${name}!`,
    style: "message",
    private: Boolean(m.private),
    reply_to: m.message_id ?? null,
  };
  const to = subject("chat", "out", m.platform, encodeToken(m.network));
  nc.publish(to, envelope("chat.out", out, inv.trace));
}

await nc.flush(); // the subscriptions are in place before anyone hears of us
if (!stopping) {
  register();
  const ready = { operator: id, pid: process.pid };
  nc.publish(subject("operator", "ready", id), envelope("ready", ready));
  await nc.flush();
  log("info", "ready", { command: COMMAND, pid: process.pid });
}

// A new connection after an outage: register again (harmless if the router kept it).
(async () => {
  for await (const s of nc.status()) {
    if (s.type === Events.Disconnect) log("warning", "bus disconnected");
    if (s.type === Events.Reconnect && !stopping) {
      log("info", "bus reconnected");
      register();
    }
  }
})();

const closed = await nc.closed();
if (!stopping) fail(1, "connection closed", { error: closed?.message ?? "" });
log("info", "stopped");
process.exit(0);
