// pusher.mjs: fanout's Pusher front door driven by the npm packages that
// Pusher apps use, unchanged: pusher-js (the client, in Node), pusher (the
// server SDK: trigger, triggerBatch, get, authorizeChannel, webhook) and
// Laravel Echo over pusher-js. Nothing here speaks the protocol by hand
// but three API requests signed with Node's crypto: an auth_timestamp an
// hour old and one an hour ahead, which the SDK cannot send, and their
// fresh twin, which shows the hand signing right.
//
// The script is the app's backend too: one HTTP server of its own is the
// auth endpoint (/auth, where the SDK's authorizeChannel signs what
// pusher-js asks for) and the webhook endpoint (/webhook, where the SDK
// verifies each POST). fanout must know the webhook URL when it starts,
// so without --ws and --admin the script listens first, prints
//   webhook endpoint: http://127.0.0.1:PORT/webhook
// and reads fanout's addresses as one JSON line on stdin:
//   {"ws":"ws://HOST:PORT/ws","admin":"HOST:PORT"}
// (what cmd/fanout's TestNodePusher does). With --ws and --admin it
// listens on --webhook-port, which fanout's -pusher-webhook-url must name.
//
// Every check waits for what it expects with a deadline (--wait) and
// fails saying what it saw instead; that something did not arrive is
// shown by a later message on the same connection that did: a
// connection gets the server's messages in the order they were
// published.

import { createHmac } from "node:crypto";
import { createServer } from "node:http";
import { isDeepStrictEqual } from "node:util";
import Pusher from "pusher-js";
import PusherServer from "pusher";
import Echo from "laravel-echo";
import { Failure, check, errText, fail, ok, progress, readArgs, run } from "./common.mjs";

const usage = `usage: node pusher.mjs [--ws ws://HOST:PORT/ws --admin HOST:PORT --webhook-port P]
         [--app-id ID] [--key KEY] [--max-payload BYTES] [--wait MS] [--timeout MS]

Checks fanout's Pusher front door with pusher-js, the pusher server SDK and
Laravel Echo. fanout runs with -pusher-app-id ID -pusher-key KEY
-pusher-secret SECRET -pusher-webhook-url http://127.0.0.1:P/webhook; the
secret comes from FANOUT_PUSHER_SECRET. Without --ws and --admin the script
listens on a free port, prints "webhook endpoint: URL" and reads
{"ws":...,"admin":...} from one line of stdin.

  --app-id, --key   the app (default node-app, node-key)
  --max-payload     fanout's -pusher-max-payload (default 10240)
  --wait            how long each expected event may take, ms (default 10000)
  --timeout         the whole run's deadline, ms (default 30000)`;

function options(argv = process.argv.slice(2), env = process.env) {
  const usageError = (msg) => {
    console.error(`pusher.mjs: ${msg}\n\n${usage}`);
    process.exit(2);
  };
  const opt = {
    ws: "", admin: "", "webhook-port": "0", "app-id": "node-app", key: "node-key",
    "max-payload": "10240", wait: "10000", timeout: "30000",
  };
  readArgs(argv, opt, usage, usageError);
  opt.secret = env.FANOUT_PUSHER_SECRET ?? "";
  if (opt.secret === "") usageError("FANOUT_PUSHER_SECRET (the app's secret, fanout's -pusher-secret) is not set");
  if ((opt.ws === "") !== (opt.admin === "")) usageError("--ws and --admin go together (or neither: read from stdin)");
  for (const name of ["webhook-port", "max-payload", "wait", "timeout"]) {
    const n = Number(opt[name]);
    if (!Number.isSafeInteger(n) || n < 0 || (n === 0 && name !== "webhook-port")) {
      usageError(`--${name} ${JSON.stringify(opt[name])}: want a whole number`);
    }
    opt[name] = n;
  }
  return opt;
}

const opt = options();

// addresses checks fanout's addresses: the ws URL of its ready line and
// its admin listener.
function addresses(ws, admin) {
  let u;
  try {
    u = new URL(ws);
  } catch {
    fail(`ws ${JSON.stringify(ws)}: want ws://HOST:PORT/PATH`);
  }
  check(u.protocol === "ws:" && u.port !== "", `ws ${JSON.stringify(ws)}: want ws://HOST:PORT/PATH`);
  const m = /^(?:https?:\/\/)?([^/:]+):(\d+)\/?$/.exec(admin);
  check(m !== null, `admin ${JSON.stringify(admin)}: want HOST:PORT`);
  return { wsHost: u.hostname, wsPort: Number(u.port), adminHost: m[1], adminPort: Number(m[2]) };
}

// readLine is the first line of stdin.
function readLine() {
  return new Promise((resolve, reject) => {
    let buf = "";
    process.stdin.setEncoding("utf8");
    process.stdin.on("data", (s) => {
      buf += s;
      const i = buf.indexOf("\n");
      if (i >= 0) {
        process.stdin.pause();
        resolve(buf.slice(0, i));
      }
    });
    process.stdin.on("end", () => reject(new Failure(`stdin ended before a line of fanout's addresses (got ${JSON.stringify(buf)})`)));
  });
}

// Log is what arrived somewhere, in order; wait returns the first item a
// predicate accepts, now or when it comes, or fails at the deadline with
// what did come.
class Log {
  constructor(name) {
    this.name = name;
    this.items = [];
    this.waiters = new Set();
  }

  push(item) {
    this.items.push(item);
    for (const w of this.waiters) {
      if (w.pred(item)) {
        this.waiters.delete(w);
        w.resolve(item);
      }
    }
  }

  // wait looks at the items from index from on (default: all).
  wait(pred, what, from = 0) {
    const hit = this.items.slice(from).find(pred);
    if (hit !== undefined) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const w = { pred, resolve };
      const timer = setTimeout(() => {
        this.waiters.delete(w);
        const last = this.items.slice(-6).map((x) => JSON.stringify(x).slice(0, 300));
        reject(new Failure(`no ${what} within ${opt.wait} ms; ${this.name} had ${this.items.length}` +
          (last.length ? `, the last: ${last.join(" | ")}` : "")));
      }, opt.wait);
      w.resolve = (item) => {
        clearTimeout(timer);
        resolve(item);
      };
      this.waiters.add(w);
    });
  }

  filter(pred) {
    return this.items.filter(pred);
  }
}

const show = (v) => JSON.stringify(v);

function same(got, want, what) {
  check(isDeepStrictEqual(got, want), `${what}: ${show(got)}, want ${show(want)}`);
}

// The backend: the auth endpoint and the webhook endpoint.

let api; // the SDK at fanout's API, once its address is known
const forger = new PusherServer({ appId: opt["app-id"], key: opt.key, secret: `${opt.secret}-but-not-the-app's`, host: "127.0.0.1" });
const forged = new Set(); // socket_ids whose subscriptions the endpoint signs with the wrong secret
const authRequests = new Log("the auth endpoint's requests");
const webhooks = new Log("the webhook endpoint's POSTs"); // {headers, rawBody, valid, events}
const hookEvents = new Log("the webhook events"); // every verified event, in order

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

// authorize is what a Pusher app's auth endpoint does: pusher-js POSTs
// socket_id and channel_name (and the params it was given: here who the
// user is), the SDK signs. user_num: the user id as a number, as Laravel
// sends it.
function authorize(form) {
  const socketId = form.get("socket_id") ?? "";
  const channel = form.get("channel_name") ?? "";
  const signer = forged.has(socketId) ? forger : api;
  if (!channel.startsWith("presence-")) return signer.authorizeChannel(socketId, channel);
  const id = form.get("user_num") ? Number(form.get("user_num")) : form.get("user_id");
  return signer.authorizeChannel(socketId, channel, { user_id: id, user_info: { name: form.get("user_name") } });
}

const backend = createServer(async (req, res) => {
  const body = await readBody(req);
  const reply = (status, type, text) => {
    res.writeHead(status, { "Content-Type": type });
    res.end(text);
  };
  try {
    if (req.method === "POST" && req.url === "/auth") {
      const form = new URLSearchParams(body);
      authRequests.push({ socket_id: form.get("socket_id"), channel_name: form.get("channel_name"), type: req.headers["content-type"] });
      reply(200, "application/json", JSON.stringify(authorize(form)));
    } else if (req.method === "POST" && req.url === "/webhook") {
      const hook = api.webhook({ headers: req.headers, rawBody: body });
      const valid = hook.isValid();
      const got = { headers: req.headers, rawBody: body, valid, events: valid ? hook.getEvents() : [] };
      webhooks.push(got);
      for (const ev of got.events) hookEvents.push(ev);
      reply(200, "text/plain", "ok");
    } else {
      reply(404, "text/plain", "not here");
    }
  } catch (e) {
    console.error(`backend: ${req.method} ${req.url}: ${e.stack}`);
    reply(500, "text/plain", String(e));
  }
});

// Clients.

let addr; // fanout's, from addresses()
let backendURL; // the auth and webhook endpoints' server
const clients = [];

// Client is one pusher-js connection and what it got: every message as
// pusher-js decoded it ({event, channel, data, user_id}), its errors and
// its states.
class Client {
  constructor(name, { key = opt.key, params = {} } = {}) {
    this.name = name;
    this.messages = new Log(`${name}'s messages`);
    this.errors = new Log(`${name}'s errors`);
    this.states = new Log(`${name}'s states`);
    this.pusher = new Pusher(key, {
      cluster: "mt1", wsHost: addr.wsHost, wsPort: addr.wsPort, forceTLS: false, enabledTransports: ["ws"],
      channelAuthorization: { endpoint: `${backendURL}/auth`, transport: "ajax", params },
    });
    this.pusher.connection.bind("message", (m) => this.messages.push(m));
    this.pusher.connection.bind("error", (e) => this.errors.push(e));
    this.pusher.connection.bind("state_change", (s) => this.states.push(s.current));
    clients.push(this);
  }

  async connected() {
    await this.states.wait((s) => s === "connected", `${this.name}: state "connected"`);
    this.socketId = this.pusher.connection.socket_id;
    check(/^\d+\.\d+$/.test(this.socketId ?? ""), `${this.name}: socket_id ${show(this.socketId)}, want digits.digits`);
    return this;
  }

  // subscribe subscribes to name and returns the channel once pusher-js
  // says it succeeded; a pusher:subscription_error fails, with its data.
  async subscribe(name) {
    const [channel, outcome] = this.subscribing(name);
    const r = await outcome;
    check(r.ok, `${this.name}: subscribing to ${name}: pusher:subscription_error ${show(r.data)}`);
    check(channel.subscribed, `${this.name}: ${name}: subscription_succeeded, but pusher-js does not count it subscribed`);
    return channel;
  }

  // subscribing starts a subscription: the channel, and the promise of
  // its outcome ({ok, data}).
  subscribing(name) {
    const channel = this.pusher.subscribe(name);
    const outcome = new Log(`${this.name}'s outcome of ${name}`);
    channel.bind("pusher:subscription_succeeded", (data) => outcome.push({ ok: true, data }));
    channel.bind("pusher:subscription_error", (data) => outcome.push({ ok: false, data }));
    return [channel, outcome.wait(() => true, `${this.name}: pusher:subscription_succeeded or _error on ${name}`)];
  }

  // event waits for event on channel; its message.
  event(channel, event, what = `${event} on ${channel}`, pred = () => true) {
    return this.messages.wait((m) => m.channel === channel && m.event === event && pred(m), `${this.name}: ${what}`);
  }

  // got is every message of event on channel so far.
  got(channel, event) {
    return this.messages.filter((m) => m.channel === channel && m.event === event);
  }

  async disconnect() {
    const from = this.states.items.length;
    this.pusher.disconnect();
    await this.states.wait((s) => s === "disconnected", `${this.name}: state "disconnected"`, from);
  }
}

// The API, as the SDK calls it.

async function rejects(p, status, what) {
  try {
    await p;
  } catch (e) {
    check(e.status === status, `${what}: ${e.status ?? errText(e)} ${e.body ?? ""}, want ${status}`);
    ok(`${what}: ${status} ${String(e.body).trim().slice(0, 120)}`);
    return e;
  }
  fail(`${what}: accepted, want ${status}`);
}

async function getJSON(path, params) {
  let res;
  try {
    res = await api.get({ path, params });
  } catch (e) {
    fail(`GET ${path} ${show(params ?? {})}: ${e.status ?? errText(e)} ${e.body ?? ""}`);
  }
  return res.json();
}

// until polls the API until cond holds of what get returns, or fails at
// the deadline with the last answer.
async function until(get, cond, what) {
  const deadline = Date.now() + opt.wait;
  for (;;) {
    const v = await get();
    if (cond(v)) return v;
    if (Date.now() > deadline) fail(`${what} never held within ${opt.wait} ms: last ${show(v)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

// signed is a request signed by hand the way the SDK does it (sorted
// query, unescaped; HMAC-SHA256 of METHOD\nPATH\nQUERY), at timestamp ts.
function signed(method, path, params, ts) {
  const q = { auth_key: opt.key, auth_timestamp: ts, auth_version: "1.0", ...params };
  const query = Object.keys(q).sort().map((k) => `${k}=${q[k]}`).join("&");
  const sig = createHmac("sha256", opt.secret).update(`${method}\n${path}\n${query}`).digest("hex");
  return `http://${addr.adminHost}:${addr.adminPort}${path}?${query}&auth_signature=${sig}`;
}

async function fetchStatus(url) {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(opt.wait) });
    return { status: res.status, text: (await res.text()).trim() };
  } catch (e) {
    fail(`GET ${url}: ${errText(e)}`);
  }
}

async function metric(line) {
  const url = `http://${addr.adminHost}:${addr.adminPort}/metrics`;
  const { status, text } = await fetchStatus(url);
  check(status === 200, `GET ${url}: ${status}`);
  const m = new RegExp(`^${line.replace(/[{}"]/g, "\\$&")} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

async function main() {
  await new Promise((resolve) => backend.listen(opt["webhook-port"], "127.0.0.1", resolve));
  backendURL = `http://127.0.0.1:${backend.address().port}`;
  console.log(`webhook endpoint: ${backendURL}/webhook`);
  let ws = opt.ws, admin = opt.admin;
  if (ws === "") {
    progress.step = "reading fanout's addresses from stdin";
    const line = await readLine();
    let v;
    try {
      v = JSON.parse(line);
    } catch {
      fail(`stdin: ${JSON.stringify(line)}: want {"ws":"ws://HOST:PORT/ws","admin":"HOST:PORT"}`);
    }
    ({ ws, admin } = v);
  }
  addr = addresses(ws ?? "", admin ?? "");
  api = new PusherServer({
    appId: opt["app-id"], key: opt.key, secret: opt.secret, host: addr.adminHost, port: addr.adminPort, useTLS: false, timeout: opt.wait,
  });
  const apiWith = (o) => new PusherServer({
    appId: opt["app-id"], key: opt.key, secret: opt.secret, host: addr.adminHost, port: addr.adminPort, useTLS: false, timeout: opt.wait, ...o,
  });

  // A key fanout does not know: 4001 (pusher:error, then the close), which
  // pusher-js takes as refused: it stops, with no reconnect. That it
  // stays stopped is checked at the end, after everything else ran.
  progress.step = "unknown app key";
  const ghost = new Client("ghost", { key: "no-such-key" });
  const refusal = await ghost.errors.wait((e) => e.error?.data?.code === 4001, "ghost: an error with code 4001");
  await ghost.states.wait((s) => s === "disconnected" || s === "failed", 'ghost: state "disconnected" or "failed"');
  const ghostStates = ghost.states.items.length;
  ok(`unknown app key: pusher-js got ${refusal.error.type} 4001 ${show(refusal.error.data.message)} and stopped (${ghost.states.items.join(" → ")})`);

  // Public channels: the SDK's trigger with an object (sent as its JSON
  // text, received parsed) and with a string (received as it is).
  progress.step = "public subscribe and receive";
  const a = await new Client("a").connected();
  const b = await new Client("b").connected();
  await a.subscribe("public-news");
  const obj = { text: "héllo ✓", n: 1, list: [1, 2, { deep: null }] };
  await api.trigger("public-news", "greeting", obj);
  same((await a.event("public-news", "greeting")).data, obj, "a: greeting's data (the SDK's trigger with an object)");
  await api.trigger("public-news", "note", "plain text, not JSON");
  same((await a.event("public-news", "note")).data, "plain text, not JSON", "a: note's data (trigger with a string)");
  ok("public channel: trigger with an object arrives parsed, with a string as the string");

  // Private channels: pusher-js asks the auth endpoint (ajax: pusher-js's
  // own XMLHttpRequest for Node), which signs with the SDK.
  progress.step = "private channel through the auth endpoint";
  await a.subscribe("private-orders");
  const asked = authRequests.filter((r) => r.socket_id === a.socketId && r.channel_name === "private-orders");
  check(asked.length === 1, `the auth endpoint had ${asked.length} requests for a's private-orders, want 1: ${show(authRequests.items)}`);
  await api.trigger("private-orders", "order-placed", { id: 42 });
  same((await a.event("private-orders", "order-placed")).data, { id: 42 }, "a: order-placed on private-orders");
  ok(`private channel: pusher-js POSTed ${asked[0].type} to the auth endpoint, authorizeChannel signed, subscribed, received`);

  // A wrong secret: a subscription signed with another secret gets
  // pusher:subscription_error AuthError 401, and none of the channel's
  // events; an event published to the channel and then to a public one
  // the client is on shows it: the public copy arrives, the private one
  // did not come before it.
  progress.step = "a wrong secret";
  const bad = await new Client("bad").connected();
  await bad.subscribe("public-bad");
  forged.add(bad.socketId);
  const [badChannel, badOutcome] = bad.subscribing("private-orders");
  const refused = await badOutcome;
  check(!refused.ok, `bad: a subscription signed with the wrong secret succeeded: ${show(refused.data)}`);
  check(refused.data?.type === "AuthError" && refused.data?.status === 401,
    `bad: pusher:subscription_error ${show(refused.data)}, want type AuthError and status 401`);
  check(!badChannel.subscribed, "bad: pusher-js counts the refused channel subscribed");
  const ordersInfo = await getJSON("/channels/private-orders", { info: "subscription_count" });
  same(ordersInfo, { occupied: true, subscription_count: 1 }, "GET /channels/private-orders?info=subscription_count after the refusal (a alone)");
  await api.trigger(["private-orders", "public-bad"], "after-refusal", { i: 1 });
  await a.event("private-orders", "after-refusal");
  await bad.event("public-bad", "after-refusal");
  const leaked = bad.messages.filter((m) => m.channel === "private-orders" && m.event !== "pusher:subscription_error");
  check(leaked.length === 0, `bad: got private-orders messages after its refusal: ${show(leaked)}`);
  ok(`wrong secret: pusher:subscription_error ${refused.data.type} ${refused.data.status}, no data (${show(String(refused.data.error).slice(0, 90))})`);

  await rejects(apiWith({ secret: "not-the-secret" }).trigger("public-news", "forged", { x: 1 }), 401, "trigger signed with a wrong secret");
  await rejects(apiWith({ secret: "not-the-secret" }).get({ path: "/channels" }), 401, "GET /channels signed with a wrong secret");
  await rejects(apiWith({ appId: "no-such-app" }).trigger("public-news", "lost", { x: 1 }), 404, "trigger to an unknown app id");
  const path = `/apps/${opt["app-id"]}/channels`;
  const now = Math.floor(Date.now() / 1000);
  const fresh = await fetchStatus(signed("GET", path, {}, now));
  check(fresh.status === 200, `GET ${path} signed by hand, fresh: ${fresh.status} ${fresh.text}, want 200 (the hand signing is wrong?)`);
  for (const [what, ts] of [["an hour old", now - 3600], ["an hour ahead", now + 3600]]) {
    const r = await fetchStatus(signed("GET", path, {}, ts));
    check(r.status === 401, `GET ${path} with auth_timestamp ${what}: ${r.status} ${r.text}, want 401`);
    ok(`auth_timestamp ${what}: 401 ${r.text} (the same request fresh: 200)`);
  }

  // Client events between two clients on a private channel: the other
  // gets it, the sender does not (an API event after it reaches the
  // sender, and nothing came before); and back.
  progress.step = "client events";
  await b.subscribe("private-orders");
  const aOrders = a.pusher.channel("private-orders");
  check(aOrders.trigger("client-typing", { who: "a" }), "a: pusher-js refused to send client-typing");
  const typing = await b.event("private-orders", "client-typing");
  same(typing.data, { who: "a" }, "b: client-typing's data");
  check(typing.user_id === undefined, `b: client-typing on a private channel has user_id ${show(typing.user_id)}`);
  await api.trigger("private-orders", "after-typing", {});
  await a.event("private-orders", "after-typing");
  check(a.got("private-orders", "client-typing").length === 0, "a: its own client-typing was echoed back to it");
  check(b.pusher.channel("private-orders").trigger("client-reply", { who: "b" }), "b: pusher-js refused to send client-reply");
  same((await a.event("private-orders", "client-reply")).data, { who: "b" }, "a: client-reply's data");
  ok("client events: a → b and b → a on private-orders, not echoed to the sender");

  await b.subscribe("public-news");
  const errorsBefore = a.errors.items.length;
  a.pusher.channel("public-news").trigger("client-shout", { loud: true });
  const shoutError = await a.errors.wait((e) => e.type === "PusherError" && e.data?.code === 4301, "a: pusher:error 4301 for a client event on a public channel");
  check(a.pusher.connection.state === "connected", `a: state ${a.pusher.connection.state} after the refused client event, want connected`);
  await api.trigger("public-news", "after-shout", {});
  await b.event("public-news", "after-shout");
  check(b.got("public-news", "client-shout").length === 0, "b: got the client event refused on a public channel");
  check(a.errors.items.length === errorsBefore + 1, `a: ${a.errors.items.length - errorsBefore} errors for one refused client event`);
  ok(`client event on a public channel: pusher:error 4301 ${show(shoutError.data.message)}, not delivered, still connected`);

  // A batch: events on two channels arrive, in order on each; an item
  // with a's socket_id skips a alone.
  progress.step = "batch";
  await a.subscribe("public-b1");
  await a.subscribe("public-b2");
  await b.subscribe("public-b1");
  const batch = [];
  for (let i = 0; i < 8; i++) batch.push({ channel: i % 2 ? "public-b2" : "public-b1", name: "item", data: { i } });
  batch.splice(3, 0, { channel: "public-b1", name: "item-not-for-a", data: { i: "x" }, socket_id: a.socketId });
  const batchRes = await api.triggerBatch(batch);
  check(batchRes.status === 200, `triggerBatch: ${batchRes.status}`);
  await a.event("public-b1", "item", "the last item on public-b1", (m) => m.data.i === 6);
  await a.event("public-b2", "item", "the last item on public-b2", (m) => m.data.i === 7);
  same(a.got("public-b1", "item").map((m) => m.data.i), [0, 2, 4, 6], "a: items on public-b1, in order");
  same(a.got("public-b2", "item").map((m) => m.data.i), [1, 3, 5, 7], "a: items on public-b2, in order");
  await b.event("public-b1", "item", "the last item on public-b1", (m) => m.data.i === 6);
  same(b.got("public-b1", "item-not-for-a").length, 1, "b: item-not-for-a (excluded: a's socket_id) count");
  same(b.got("public-b1", "item").map((m) => m.data.i), [0, 2, 4, 6], "b: items on public-b1");
  check(a.got("public-b1", "item-not-for-a").length === 0, "a: got the batch item sent with its own socket_id");
  ok(`batch: ${batch.length} events in one triggerBatch, each channel's in order; the item with a's socket_id skipped a`);

  // One event to several channels.
  progress.step = "trigger to several channels";
  const everywhere = ["public-b1", "public-b2", "private-orders"];
  await api.trigger(everywhere, "everywhere", { k: "v" });
  for (const ch of everywhere) same((await a.event(ch, "everywhere")).data, { k: "v" }, `a: everywhere on ${ch}`);
  await api.trigger(everywhere, "after-everywhere", {});
  for (const ch of everywhere) {
    await a.event(ch, "after-everywhere");
    same(a.got(ch, "everywhere").length, 1, `a: copies of everywhere on ${ch}`);
  }
  ok(`trigger to ${everywhere.length} channels: one copy on each`);

  // socket_id: the client named gets nothing, the other gets it.
  progress.step = "socket_id exclusion";
  await api.trigger("public-news", "not-for-a", { x: 1 }, { socket_id: a.socketId });
  same((await b.event("public-news", "not-for-a")).data, { x: 1 }, "b: not-for-a");
  await api.trigger("public-news", "for-all", {});
  await a.event("public-news", "for-all");
  check(a.got("public-news", "not-for-a").length === 0, "a: got the event triggered with its own socket_id");
  ok("socket_id exclusion: b got it, a did not (a got the next event)");

  // Presence: users "1" (a number, as Laravel sends it) and "2", who has
  // two connections and counts once.
  progress.step = "presence";
  const room = "presence-room";
  const p1 = await new Client("p1", { params: { user_num: "1", user_name: "Ada" } }).connected();
  const p2 = await new Client("p2", { params: { user_id: "2", user_name: "Bob" } }).connected();
  const p2b = await new Client("p2b", { params: { user_id: "2", user_name: "Bob" } }).connected();
  const r1 = await p1.subscribe(room);
  same([r1.members.count, r1.members.me], [1, { id: 1, info: { name: "Ada" } }], "p1: members.count and me after subscribing alone");
  const r2 = await p2.subscribe(room);
  const seen = [];
  r2.members.each((m) => seen.push(m));
  same([r2.members.count, r2.members.me.id, seen.sort((x, y) => (x.id < y.id ? -1 : 1))],
    [2, "2", [{ id: "1", info: { name: "Ada" } }, { id: "2", info: { name: "Bob" } }]], "p2: members.count, me.id and members");
  const added = await p1.event(room, "pusher_internal:member_added", "member_added of user 2");
  same(added.data, { user_id: "2", user_info: { name: "Bob" } }, "p1: member_added's data");
  same(r1.members.count, 2, "p1: members.count after user 2 joined");
  check(r2.trigger("client-typing", { who: "2" }), "p2: pusher-js refused client-typing");
  const typed = await p1.event(room, "client-typing");
  same([typed.data, typed.user_id], [{ who: "2" }, "2"], "p1: client-typing on presence-room: data and user_id");
  const r2b = await p2b.subscribe(room);
  same([r2b.members.count, r2b.members.me.id], [2, "2"], "p2b (user 2 again): members.count and me.id");
  same(await getJSON(`/channels/${room}`, { info: "subscription_count,user_count" }),
    { occupied: true, subscription_count: 3, user_count: 2 }, `GET /channels/${room}?info=subscription_count,user_count`);
  same(await getJSON(`/channels/${room}/users`), { users: [{ id: "1" }, { id: "2" }] }, `GET /channels/${room}/users`);
  same(await getJSON("/channels", { filter_by_prefix: "presence-", info: "user_count" }),
    { channels: { [room]: { user_count: 2 } } }, "GET /channels?filter_by_prefix=presence-&info=user_count");
  await p2b.disconnect();
  await until(() => getJSON(`/channels/${room}`, { info: "subscription_count,user_count" }),
    (v) => v.subscription_count === 2, `GET /channels/${room}: subscription_count 2 after p2b left`);
  same(await getJSON(`/channels/${room}/users`), { users: [{ id: "1" }, { id: "2" }] }, `GET /channels/${room}/users after p2b (user 2's second connection) left`);
  await p2.disconnect();
  const removed = await p1.event(room, "pusher_internal:member_removed", "member_removed of user 2");
  same(removed.data, { user_id: "2" }, "p1: member_removed's data");
  same(r1.members.count, 1, "p1: members.count after user 2's last connection left");
  await api.trigger(room, "after-leave", {});
  await p1.event(room, "after-leave");
  same(p1.messages.filter((m) => m.channel === room && m.event.startsWith("pusher_internal:member_")).map((m) => [m.event, m.data.user_id]),
    [["pusher_internal:member_added", "2"], ["pusher_internal:member_removed", "2"]], "p1: member events (user 2's second connection counts once)");
  ok("presence: member_added, members.count and me; user 2 with two connections is one member, removed when its last leaves");

  // Channel info.
  progress.step = "channel info";
  const all = await getJSON("/channels");
  for (const ch of ["public-news", "private-orders", "public-b1", "public-b2", "public-bad", room]) {
    check(ch in (all.channels ?? {}), `GET /channels: ${ch} missing: ${show(all)}`);
  }
  same(await getJSON("/channels", { filter_by_prefix: "private-" }), { channels: { "private-orders": {} } }, "GET /channels?filter_by_prefix=private-");
  same(await getJSON("/channels/public-news", { info: "subscription_count" }), { occupied: true, subscription_count: 2 },
    "GET /channels/public-news?info=subscription_count (a and b)");
  same(await getJSON("/channels/public-nobody"), { occupied: false }, "GET /channels/public-nobody");
  await rejects(api.get({ path: "/channels/public-news/users" }), 400, "GET /channels/public-news/users (not a presence channel)");
  ok(`channel info: /channels (${Object.keys(all.channels).length} occupied), filter_by_prefix, info=user_count, /channels/NAME, /channels/NAME/users`);

  // Limits.
  progress.step = "limits";
  const max = opt["max-payload"];
  await api.trigger("public-news", "biggest", "x".repeat(max));
  check((await a.event("public-news", "biggest")).data.length === max, "a: the biggest event's data is not whole");
  await rejects(api.trigger("public-news", "too-big", "x".repeat(max + 1)), 413, `trigger with ${max + 1} bytes of data`);
  ok(`payload: ${max} bytes delivered, ${max + 1} refused`);

  // Laravel Echo over pusher-js: a public channel's .listen('.name')
  // and a private channel's namespaced event (App\Events\...), its auth
  // through Echo's authEndpoint.
  progress.step = "Laravel Echo";
  const echo = new Echo({
    broadcaster: "pusher", key: opt.key, cluster: "mt1", wsHost: addr.wsHost, wsPort: addr.wsPort, forceTLS: false,
    enabledTransports: ["ws"], authEndpoint: `${backendURL}/auth`, Pusher,
  });
  const echoLog = new Log("Echo's callbacks");
  echo.channel("orders").subscribed(() => echoLog.push({ subscribed: "orders" }))
    .error((e) => echoLog.push({ error: e })).listen(".order.shipped", (data) => echoLog.push({ shipped: data }));
  echo.private("orders.7").subscribed(() => echoLog.push({ subscribed: "private-orders.7" }))
    .error((e) => echoLog.push({ error: e })).listen("OrderShipped", (data) => echoLog.push({ namespaced: data }));
  for (const ch of ["orders", "private-orders.7"]) {
    const r = await echoLog.wait((x) => x.subscribed === ch || x.error, `Echo: ${ch} subscribed`);
    check(!r.error, `Echo: ${ch}: ${show(r.error)}`);
  }
  await api.trigger("orders", "order.shipped", { id: 7 });
  same((await echoLog.wait((x) => x.shipped, "Echo: .order.shipped")).shipped, { id: 7 }, "Echo: .order.shipped's data");
  await api.trigger("private-orders.7", "App\\Events\\OrderShipped", { id: 7, status: "shipped" });
  same((await echoLog.wait((x) => x.namespaced, "Echo: OrderShipped")).namespaced, { id: 7, status: "shipped" }, "Echo: OrderShipped's data");
  echo.disconnect();
  ok("Laravel Echo: channel('orders').listen('.order.shipped') and private('orders.7').listen('OrderShipped') received");

  // Webhooks: everyone leaves; each channel's events arrive verified, in
  // the order they happened.
  progress.step = "webhooks";
  a.pusher.unsubscribe("public-b2");
  await p1.disconnect();
  for (const c of [a, b, bad]) await c.disconnect();
  for (const ch of [room, "private-orders", "public-news", "public-b2", "orders", "private-orders.7"]) {
    await hookEvents.wait((e) => e.name === "channel_vacated" && e.channel === ch, `webhook channel_vacated of ${ch}`);
  }
  const bad_hooks = webhooks.filter((h) => !h.valid);
  check(bad_hooks.length === 0, `webhooks the SDK did not verify: ${show(bad_hooks.map((h) => [h.headers, h.rawBody]))}`);
  const on = (ch) => hookEvents.filter((e) => e.channel === ch).map(({ name, channel, ...rest }) => ({ name, ...rest }));
  // Each channel's sequence is its own check: all are compared, and the
  // mismatches fail together at the end, after the other checks ran.
  const mismatches = [];
  const sameSeq = (got, want, what) => {
    if (!isDeepStrictEqual(got, want)) mismatches.push(`${what}: ${show(got)}, want ${show(want)}`);
  };
  sameSeq(on(room), [
    { name: "channel_occupied" },
    { name: "member_added", user_id: "1" },
    { name: "member_added", user_id: "2" },
    { name: "client_event", event: "client-typing", data: show({ who: "2" }), socket_id: p2.socketId, user_id: "2" },
    { name: "member_removed", user_id: "2" },
    { name: "member_removed", user_id: "1" },
    { name: "channel_vacated" },
  ], `webhook events of ${room}`);
  sameSeq(on("private-orders"), [
    { name: "channel_occupied" },
    { name: "client_event", event: "client-typing", data: show({ who: "a" }), socket_id: a.socketId },
    { name: "client_event", event: "client-reply", data: show({ who: "b" }), socket_id: b.socketId },
    { name: "channel_vacated" },
  ], "webhook events of private-orders");
  sameSeq(on("public-news"), [{ name: "channel_occupied" }, { name: "channel_vacated" }], "webhook events of public-news (the refused client event is not one)");
  sameSeq(on("public-b2"), [{ name: "channel_occupied" }, { name: "channel_vacated" }], "webhook events of public-b2 (a unsubscribed)");
  const sample = webhooks.items[0];
  same([sample.headers["content-type"], sample.headers["x-pusher-key"]], ["application/json", opt.key], "a webhook's Content-Type and X-Pusher-Key");
  check(/^[0-9a-f]{64}$/.test(sample.headers["x-pusher-signature"] ?? ""), `X-Pusher-Signature ${show(sample.headers["x-pusher-signature"])}`);
  const tampered = sample.rawBody.replace('"events":[', '"events":[{"name":"channel_occupied","channel":"forged"},');
  check(tampered !== sample.rawBody, `webhook body without "events":[ : ${sample.rawBody}`);
  check(!api.webhook({ headers: sample.headers, rawBody: tampered }).isValid(), "the SDK takes a webhook with a tampered body as valid");
  check(api.webhook({ headers: sample.headers, rawBody: sample.rawBody }).isValid(), "the SDK no longer takes the untampered webhook");
  ok(`webhooks: ${webhooks.items.length} POSTs, ${hookEvents.items.length} events, all verified by the SDK; a tampered body is invalid`);

  // The unknown key's client, all this while: refused once, never back.
  progress.step = "unknown app key, at the end";
  const after = ghost.states.items.slice(ghostStates);
  check(after.length === 0, `ghost: states after its refusal: ${after.join(", ")} (a reconnect)`);
  const refusals = await metric('fanout_pusher_connection_refusals_total{reason="unknown_app"}');
  check(refusals === 1, `fanout_pusher_connection_refusals_total{reason="unknown_app"} is ${refusals}: pusher-js reconnected after 4001`);
  ok("unknown app key: one connection, refused once, no reconnect during the whole run");

  progress.step = "webhooks, in order";
  check(mismatches.length === 0, `webhook events not in the order they happened:\n  ${mismatches.join("\n  ")}`);
  ok("webhooks: each channel's events in the order they happened (occupied, member_added, client_event, member_removed, vacated)");

  console.log("PASS: pusher-js, the pusher SDK and Laravel Echo against fanout's Pusher front door");
}

run(opt, async () => {
  try {
    await main();
  } finally {
    for (const c of clients) c.pusher.disconnect();
    backend.close();
  }
});
