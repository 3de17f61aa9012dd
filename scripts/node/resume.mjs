// resume.mjs: a browser-style client of fanout's channels, with nothing but
// what Node ships (the global WebSocket and fetch; no npm package), that
// checks the resume protocol end to end against a running server:
//
//   a. subscribe to channels a and b in json format and read the welcome;
//   b. publish to a, b and c over POST /publish: a and b arrive, in seq
//      order, c does not;
//   c. disconnect, and publish to a, b and c meanwhile;
//   d. resume with since=EPOCH:LASTSEQ while publishers keep firing: the
//      welcome says recovered:true, then exactly the missed a/b messages
//      and the live ones follow, in seq order, each once, no gap;
//   e. resume with a wrong epoch: recovered:false, nothing replayed;
//   f. publish from the socket itself and get the message back.
//
// Every wait has a deadline and the whole run another: it ends by itself,
// with status 1 and a message saying what deviated, even if the server
// hangs. Status 2: bad usage, or a Node without a WebSocket.

import { readArgs } from "./common.mjs";

const usage = `usage: node --experimental-websocket scripts/node/resume.mjs [options]

Checks fanout's channels, history and resume (since=EPOCH:SEQ) with Node's
built-in WebSocket and fetch. Needs Node >= 20.10 (the flag is needed on
Node 20 and 21 only). The server needs a publish key and its default
history (-history-size > 0).

options (each also from the environment):
  --ws URL       WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws   ($FANOUT_WS_URL)
  --admin URL    admin listener, e.g. http://127.0.0.1:8081        ($FANOUT_ADMIN_URL)
                 (a bare host:port, as fanout logs it, means http://)
  --key KEY      a -publish-keys key                               ($FANOUT_PUBLISH_KEY)
  --wait MS      deadline of each wait, ms (default 10000)         ($FANOUT_WAIT_MS)
  --timeout MS   deadline of the whole run, ms (default 30000)     ($FANOUT_TIMEOUT_MS)
  --help         this text

Prints one line per check; exits 0 when all pass, 1 on the first that
fails (saying what was expected and what came), 2 on bad usage.`;

// Failure is a deviation from the protocol: the run stops with status 1.
class Failure extends Error {}

function fail(msg) {
  throw new Failure(msg);
}

function check(ok, msg) {
  if (!ok) fail(msg);
}

function usageError(msg) {
  console.error(`resume.mjs: ${msg}\n\n${usage}`);
  process.exit(2);
}

function parseArgs(argv, env) {
  const opt = {
    ws: env.FANOUT_WS_URL ?? "",
    admin: env.FANOUT_ADMIN_URL ?? "",
    key: env.FANOUT_PUBLISH_KEY ?? "",
    wait: env.FANOUT_WAIT_MS ?? "10000",
    timeout: env.FANOUT_TIMEOUT_MS ?? "30000",
  };
  readArgs(argv, opt, usage, usageError);
  for (const name of ["ws", "admin", "key"]) {
    if (opt[name] === "") usageError(`--${name} is required`);
  }
  if (!/^wss?:\/\//.test(opt.ws)) usageError(`--ws ${JSON.stringify(opt.ws)}: want ws://HOST/PATH`);
  if (!/^https?:\/\//.test(opt.admin)) opt.admin = `http://${opt.admin}`;
  opt.admin = opt.admin.replace(/\/+$/, "");
  for (const name of ["wait", "timeout"]) {
    const ms = Number(opt[name]);
    if (!Number.isSafeInteger(ms) || ms <= 0) usageError(`--${name} ${JSON.stringify(opt[name])}: want milliseconds`);
    opt[name] = ms;
  }
  return opt;
}

const opt = parseArgs(process.argv.slice(2), process.env);

if (typeof WebSocket !== "function" || typeof fetch !== "function") {
  console.error(`resume.mjs: this Node (${process.version}) has no global WebSocket: ` +
    "run it with node --experimental-websocket, on Node 20.10 or later");
  process.exit(2);
}

let step = "start"; // what the run is doing, for the messages

// The run's own deadline: whatever the server does (accepts and never
// answers, stalls a socket), the script ends.
const runDeadline = setTimeout(() => {
  console.error(`FAIL: the run took more than ${opt.timeout} ms (--timeout); last step: ${step}`);
  process.exit(1);
}, opt.timeout);

function ok(msg) {
  console.log(`ok   ${msg}`);
}

// withDeadline settles like p, or fails after ms saying what it waited for.
function withDeadline(p, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`no ${what} within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

// Socket is one json-format connection: every frame it receives is
// parsed and queued, and next() takes them in order.
class Socket {
  constructor(name, query) {
    this.name = name;
    this.url = `${opt.ws}?${query}`;
    this.frames = [];
    this.waiter = null; // the next() waiting for a frame
    this.closeEvent = null;
    this.failure = null; // the error event's message
    this.error = null; // a frame that is not one JSON object in a text frame
    this.seen = []; // seqs of the messages taken, in order
    this.ws = new WebSocket(this.url);
    this.closed = new Promise((resolve) => {
      this.ws.addEventListener("close", (ev) => {
        this.closeEvent = { code: ev.code, reason: ev.reason };
        resolve(this.closeEvent);
        this.wake();
      });
    });
    // A refused handshake is an error event with no close event after it
    // (undici, Node 20): terminal too.
    this.ws.addEventListener("error", (ev) => {
      this.failure ??= ev.message || "error event";
      this.wake();
    });
    this.ws.addEventListener("message", (ev) => {
      if (typeof ev.data !== "string") {
        this.error ??= `a binary frame (${ev.data?.constructor?.name}): json format sends text frames only`;
      } else {
        try {
          const f = JSON.parse(ev.data);
          if (f === null || typeof f !== "object" || Array.isArray(f)) throw new Error("not an object");
          this.frames.push(f);
        } catch (e) {
          this.error ??= `a frame that is not one JSON object (${e.message}): ${ev.data.slice(0, 200)}`;
        }
      }
      this.wake();
    });
  }

  wake() {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  // next returns the next frame, or fails after the wait deadline, or
  // once the socket has closed with nothing left to read.
  async next(what) {
    const took = (async () => {
      for (;;) {
        if (this.error) fail(`${this.name}: got ${this.error}`);
        if (this.frames.length > 0) return this.frames.shift();
        if (this.failure) {
          fail(`${this.name}: the connection failed ("${this.failure}") while waiting for ${what}: ` +
            `a refused handshake or a broken connection (check ${this.url} with curl -i)`);
        }
        if (this.closeEvent) {
          const { code, reason } = this.closeEvent;
          fail(`${this.name}: the connection closed (code ${code}${reason ? `, "${reason}"` : ""}) while waiting for ${what}`);
        }
        await new Promise((resolve) => { this.waiter = resolve; });
      }
    })();
    return withDeadline(took, opt.wait, `${what} on ${this.name}`);
  }

  // welcome reads the first frame and checks what every welcome holds.
  async welcome(channels) {
    const w = await this.next("welcome");
    check(w.type === "welcome", `${this.name}: first frame ${JSON.stringify(w)}, want {"type":"welcome",...}`);
    check(typeof w.epoch === "string" && w.epoch !== "", `${this.name}: welcome without an epoch: ${JSON.stringify(w)}`);
    check(Number.isSafeInteger(w.seq) && w.seq >= 0, `${this.name}: welcome seq ${JSON.stringify(w.seq)}, want an integer >= 0`);
    check(JSON.stringify(w.channels) === JSON.stringify(channels),
      `${this.name}: welcome channels ${JSON.stringify(w.channels)}, want ${JSON.stringify(channels)}`);
    return w;
  }

  // expect takes messages and checks they are exactly want (in seq
  // order), saying on the first deviation whether it is a gap, a
  // duplicate, a stray channel or a wrong payload.
  async expect(want, what) {
    const wantSeqs = new Set(want.map((m) => m.seq));
    for (const [i, m] of want.entries()) {
      const got = await this.next(`${what}: message ${i + 1} of ${want.length} (seq ${m.seq} on ${m.channel})`);
      const desc = JSON.stringify(got);
      check(got.type === "message", `${this.name}, ${what}: got ${desc}, want a message`);
      if (got.seq !== m.seq) {
        let why = "";
        if (this.seen.includes(got.seq)) why = `: a duplicate, seq ${got.seq} came already`;
        else if (!["a", "b"].includes(got.channel)) why = `: a message on channel ${JSON.stringify(got.channel)}, which this socket is not on`;
        else if (got.seq > m.seq) why = `: a gap, seq ${m.seq} (and maybe more) never came before it`;
        else if (!wantSeqs.has(got.seq)) why = `: a message not expected here (seq <= the resume cursor, or not published by this run)`;
        else why = `: out of seq order`;
        fail(`${this.name}, ${what}: got ${desc}, want seq ${m.seq} on ${m.channel}${why}`);
      }
      check(got.channel === m.channel, `${this.name}, ${what}: got ${desc}, want channel ${m.channel}`);
      check(JSON.stringify(got.data) === JSON.stringify(m.data),
        `${this.name}, ${what}: seq ${got.seq} data ${JSON.stringify(got.data)}, want ${JSON.stringify(m.data)}`);
      this.seen.push(got.seq);
    }
  }

  async close() {
    this.ws.close(1000, "done");
    await withDeadline(this.closed, opt.wait, `close of ${this.name}`);
  }
}

let epoch = ""; // the server's, from the first welcome
const published = []; // every publish of the run: {channel, seq, data}

// publish POSTs data (a JSON value) to channel and returns what it
// published, checked against the server's receipt.
async function publish(channel, data) {
  const url = `${opt.admin}/publish?channel=${encodeURIComponent(channel)}`;
  let res, body;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: { Authorization: `Bearer ${opt.key}`, "Content-Type": "application/json" },
      body: JSON.stringify(data),
      signal: AbortSignal.timeout(opt.wait),
    });
    body = await res.text();
  } catch (e) {
    fail(`POST ${url}: ${e.name === "TimeoutError" ? `no answer within ${opt.wait} ms` : e.message}${e.cause ? ` (${e.cause.message ?? e.cause})` : ""}`);
  }
  check(res.status === 202, `POST ${url}: ${res.status} ${body.trim()}, want 202`);
  let r;
  try {
    r = JSON.parse(body);
  } catch {
    fail(`POST ${url}: 202 with a body that is not JSON: ${body.slice(0, 200)}`);
  }
  check(r.channel === channel && Number.isSafeInteger(r.seq) && r.seq > 0 && r.epoch === epoch,
    `POST ${url}: receipt ${body.trim()}, want channel ${channel}, a seq and epoch ${epoch}`);
  check(!published.some((p) => p.seq === r.seq), `POST ${url}: seq ${r.seq} was given to an earlier publish too`);
  const m = { channel, seq: r.seq, data };
  published.push(m);
  return m;
}

// publishInOrder publishes one message per channel of channels, one
// after the other, and checks their seqs increase.
async function publishInOrder(tag, channels) {
  const out = [];
  for (const [i, ch] of channels.entries()) {
    const m = await publish(ch, { step: tag, i, ch });
    check(out.length === 0 || m.seq > out[out.length - 1].seq,
      `step ${tag}: publish ${i} got seq ${m.seq}, not after the previous one's ${out[out.length - 1]?.seq}`);
    out.push(m);
  }
  return out;
}

const onAB = (m) => m.channel === "a" || m.channel === "b";
const bySeq = (x, y) => x.seq - y.seq;

async function main() {
  const channels = ["a", "b"];
  const query = "channel=a&channel=b&format=json";

  step = "a: subscribe";
  const first = new Socket("first socket", query);
  const w1 = await first.welcome(channels);
  check(!("recovered" in w1), `first socket: welcome without since= has recovered: ${JSON.stringify(w1)}`);
  epoch = w1.epoch;
  ok(`a. subscribed to a and b: welcome epoch ${epoch}, seq ${w1.seq}, channels ["a","b"], no "recovered"`);

  step = "b: publish while connected";
  const live = await publishInOrder("b", ["a", "b", "c", "a", "c", "b", "a", "c", "b", "a"]);
  check(live[0].seq > w1.seq, `step b: first publish got seq ${live[0].seq}, not after the welcome's ${w1.seq}`);
  await first.expect(live.filter(onAB), "step b");
  ok(`b. published ${live.length} (${live.filter(onAB).length} on a/b, ${live.length - live.filter(onAB).length} on c): ` +
    `a/b arrived once each in seq order (seqs ${live.filter(onAB).map((m) => m.seq).join(",")}), none from c`);

  step = "c: disconnect";
  const lastSeq = first.seen[first.seen.length - 1];
  const closed = await first.close().then(() => first.closeEvent);
  // Frames the server sent before its close frame came before the close
  // event: nothing was published since step b's last, so none is due.
  check(first.frames.length === 0, `first socket: after step b's messages, before its close, got ${JSON.stringify(first.frames)}`);
  const missed = await publishInOrder("c", ["b", "c", "a", "a", "c", "b", "c", "a"]);
  ok(`c. closed (code ${closed.code}) after seq ${lastSeq}; published ${missed.length} while away ` +
    `(a/b seqs ${missed.filter(onAB).map((m) => m.seq).join(",")})`);

  step = "d: resume while publishing";
  // Publishers fire from the moment the socket is created, without waiting
  // for it, and keep going until some publishes are answered after the
  // welcome: some land before the subscription (replayed), some after
  // (live), and the switch between the two is crossed under load.
  const resumed = new Socket("resumed socket", `${query}&since=${encodeURIComponent(`${epoch}:${lastSeq}`)}`);
  let welcomed = false;
  const pumped = [];
  const pumpers = [0, 1, 2, 3].map(async (w) => {
    const cycle = ["a", "b", "c"];
    let after = 0; // publishes answered after the welcome
    for (let i = 0; after < 3 && i < 100; i++) {
      const m = await publish(cycle[(w + i) % 3], { step: "d", w, i });
      pumped.push(m);
      if (welcomed) after++;
    }
  });
  const pumping = Promise.all(pumpers);
  pumping.catch(() => {}); // handled where it is awaited, below
  const w2 = await resumed.welcome(channels).finally(() => { welcomed = true; });
  check(w2.epoch === epoch, `resumed socket: welcome epoch ${w2.epoch}, want ${epoch}`);
  check(w2.recovered === true, `resumed socket: since=${epoch}:${lastSeq} got ${JSON.stringify(w2)}, want "recovered":true`);
  check(w2.seq >= lastSeq, `resumed socket: welcome seq ${w2.seq} is before the cursor ${lastSeq} yet recovered`);
  await withDeadline(pumping, opt.wait, "answers to the concurrent publishes");
  const sentinel = await publish("b", { step: "d", sentinel: true });
  const wantD = [...missed.filter(onAB), ...pumped.filter(onAB), sentinel].sort(bySeq);
  await resumed.expect(wantD, "step d");
  const replayed = wantD.filter((m) => m.seq <= w2.seq);
  const pumpedAB = pumped.filter(onAB);
  const pumpedBefore = pumpedAB.filter((m) => m.seq <= w2.seq).length;
  ok(`d. resumed from ${epoch}:${lastSeq}: recovered:true, welcome seq ${w2.seq}; ` +
    `${replayed.length} replayed then ${wantD.length - replayed.length} live, in seq order, no gap, no duplicate, none from c ` +
    `(${pumped.length} published concurrently, ${pumpedAB.length} on a/b: ${pumpedBefore} replayed, ${pumpedAB.length - pumpedBefore} live)`);

  const sent = published.filter(onAB).map((m) => m.seq);
  const got = [...first.seen, ...resumed.seen];
  check(got.length === new Set(got).size, `a seq was received twice over the two sockets: ${got.join(",")}`);
  check(sent.every((s) => got.includes(s)) && got.every((s) => sent.includes(s)),
    `published on a/b: ${sent.sort((x, y) => x - y).join(",")}; received: ${got.join(",")}`);
  ok(`   every one of the ${sent.length} messages published on a/b was received exactly once over the two sockets`);

  step = "e: resume from another epoch";
  const wrong = `not${epoch}`.slice(0, 64);
  const stale = new Socket("wrong-epoch socket", `${query}&since=${encodeURIComponent(`${wrong}:${w1.seq}`)}`);
  const w3 = await stale.welcome(channels);
  check(w3.recovered === false, `wrong-epoch socket: since=${wrong}:${w1.seq} got ${JSON.stringify(w3)}, want "recovered":false`);
  check(w3.epoch === epoch, `wrong-epoch socket: welcome epoch ${w3.epoch}, want the server's ${epoch}`);

  step = "f: publish from the socket";
  // The message the resumed socket sends is the first published after
  // the wrong-epoch socket's welcome: a replay would come before it.
  resumed.ws.send(JSON.stringify({ channel: "a", data: { x: 1 } }));
  const echo = await resumed.next("the socket's own message back");
  check(echo.type === "message" && echo.channel === "a" && JSON.stringify(echo.data) === '{"x":1}' && echo.seq > sentinel.seq,
    `resumed socket: sent {"channel":"a","data":{"x":1}}, got ${JSON.stringify(echo)}, want it back after seq ${sentinel.seq}`);
  const firstOnStale = await stale.next("the socket-published message");
  check(firstOnStale.type === "message" && firstOnStale.seq > w3.seq,
    `wrong-epoch socket: after a recovered:false welcome (seq ${w3.seq}) got ${JSON.stringify(firstOnStale)}: a replayed message`);
  check(firstOnStale.seq === echo.seq && JSON.stringify(firstOnStale.data) === '{"x":1}',
    `wrong-epoch socket: first message ${JSON.stringify(firstOnStale)}, want seq ${echo.seq} with data {"x":1}`);
  ok(`e. resumed from epoch ${wrong}: recovered:false, welcome epoch ${epoch}, nothing replayed (first message: seq ${firstOnStale.seq}, live)`);
  ok(`f. the socket sent {"channel":"a","data":{"x":1}}: it came back as seq ${echo.seq} with data {"x":1}, to both sockets`);

  step = "close";
  await Promise.all([resumed.close(), stale.close()]);
  console.log("PASS: channels, history and resume behave as documented");
}

main().then(
  () => {
    clearTimeout(runDeadline);
    process.exit(0);
  },
  (err) => {
    clearTimeout(runDeadline);
    console.error(err instanceof Failure ? `FAIL (${step}): ${err.message}` : `FAIL (${step}): unexpected error: ${err.stack}`);
    process.exit(1);
  },
);
