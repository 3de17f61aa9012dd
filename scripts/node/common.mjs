// common.mjs: what sse-resume.mjs, eventsource.mjs and deflate.mjs share:
// their command line, deadlines, failures, and fanout's publish API and
// counters as the checks use them, with nothing but what Node ships
// (fetch). resume.mjs came first and keeps its own checks; it shares
// readArgs, as pusher.mjs does.

// Failure is a deviation from the protocol: the run stops with status 1.
export class Failure extends Error {}

export function fail(msg) {
  throw new Failure(msg);
}

export function check(ok, msg) {
  if (!ok) fail(msg);
}

export function ok(msg) {
  console.log(`ok   ${msg}`);
}

// withDeadline settles like p, or fails after ms saying what it waited for.
export function withDeadline(p, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`no ${what} within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

// errText is what a fetch error says, its cause included.
export function errText(e) {
  return `${e.name === "TimeoutError" ? "no answer in time" : e.message}${e.cause ? ` (${e.cause.message ?? e.cause})` : ""}`;
}

// readArgs sets opt's options (--name value, or --name=value) from argv:
// an option opt has no key for, or one without a value, is usageError's;
// --help prints usage and exits 0.
export function readArgs(argv, opt, usage, usageError) {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--help" || arg === "-h") {
      console.log(usage);
      process.exit(0);
    }
    const [name, inline] = arg.startsWith("--") ? arg.slice(2).split(/=(.*)/s, 2) : [null];
    if (name === null || !(name in opt)) usageError(`unknown argument ${JSON.stringify(arg)}`);
    const value = inline ?? argv[++i];
    if (value === undefined) usageError(`--${name} needs a value`);
    opt[name] = value;
  }
}

// parseOptions reads the command line and the environment: urls names
// the URL options ({name: [ENV, /pattern/, "what it wants"]}); --admin,
// --key, --wait and --timeout are every script's. --help prints usage
// and exits 0; a bad argument exits 2.
export function parseOptions(script, usage, urls, argv = process.argv.slice(2), env = process.env) {
  const usageError = (msg) => {
    console.error(`${script}: ${msg}\n\n${usage}`);
    process.exit(2);
  };
  const opt = {
    admin: env.FANOUT_ADMIN_URL ?? "",
    key: env.FANOUT_PUBLISH_KEY ?? "",
    wait: env.FANOUT_WAIT_MS ?? "10000",
    timeout: env.FANOUT_TIMEOUT_MS ?? "30000",
  };
  for (const [name, [envName]] of Object.entries(urls)) opt[name] = env[envName] ?? "";
  readArgs(argv, opt, usage, usageError);
  for (const name of [...Object.keys(urls), "admin", "key"]) {
    if (opt[name] === "") usageError(`--${name} is required`);
  }
  for (const [name, [, pattern, want]] of Object.entries(urls)) {
    if (!pattern.test(opt[name])) usageError(`--${name} ${JSON.stringify(opt[name])}: want ${want}`);
  }
  if (!/^https?:\/\//.test(opt.admin)) opt.admin = `http://${opt.admin}`;
  opt.admin = opt.admin.replace(/\/+$/, "");
  for (const name of ["wait", "timeout"]) {
    const ms = Number(opt[name]);
    if (!Number.isSafeInteger(ms) || ms <= 0) usageError(`--${name} ${JSON.stringify(opt[name])}: want milliseconds`);
    opt[name] = ms;
  }
  if (typeof fetch !== "function" || typeof ReadableStream !== "function") {
    console.error(`${script}: this Node (${process.version}) has no global fetch: run it on Node 18 or later`);
    process.exit(2);
  }
  return opt;
}

// progress is what the run is doing, for the messages.
export const progress = { step: "start" };

// run runs main under the run's own deadline (whatever the server does,
// the script ends) and exits: 0 when it returns, 1 on a failure.
export function run(opt, main) {
  const deadline = setTimeout(() => {
    console.error(`FAIL: the run took more than ${opt.timeout} ms (--timeout); last step: ${progress.step}`);
    process.exit(1);
  }, opt.timeout);
  main().then(
    () => {
      clearTimeout(deadline);
      process.exit(0);
    },
    (err) => {
      clearTimeout(deadline);
      console.error(err instanceof Failure
        ? `FAIL (${progress.step}): ${err.message}`
        : `FAIL (${progress.step}): unexpected error: ${err.stack}`);
      process.exit(1);
    },
  );
}

// Admin is the server's admin listener: the publish API (every publish
// checked against its receipt and recorded, in seq order) and /metrics.
export class Admin {
  constructor(opt) {
    this.opt = opt;
    this.epoch = ""; // the server's; set it from the first welcome
    this.published = []; // every publish with a receipt: {channel, seq, data}
  }

  async post(path, body, type) {
    const url = `${this.opt.admin}${path}`;
    let res, text;
    try {
      res = await fetch(url, {
        method: "POST",
        headers: { Authorization: `Bearer ${this.opt.key}`, "Content-Type": type },
        body,
        signal: AbortSignal.timeout(this.opt.wait),
      });
      text = await res.text();
    } catch (e) {
      fail(`POST ${url}: ${errText(e)}`);
    }
    return { url, status: res.status, text };
  }

  // publishBody POSTs body to channel ("" is the default channel) as
  // type and returns the receipt (202 or it fails).
  async publishBody(channel, body, type) {
    const r = await this.post(`/publish${channel ? `?channel=${encodeURIComponent(channel)}` : ""}`, body, type);
    check(r.status === 202, `POST ${r.url}: ${r.status} ${r.text.trim()}, want 202`);
    return this.json(r);
  }

  json(r) {
    try {
      return JSON.parse(r.text);
    } catch {
      fail(`POST ${r.url}: ${r.status} with a body that is not JSON: ${r.text.slice(0, 200)}`);
    }
  }

  // receipt checks one receipt against what was published and records it.
  receipt(where, channel, r, data) {
    check(r.channel === channel && Number.isSafeInteger(r.seq) && r.seq > 0 && r.epoch === this.epoch,
      `${where}: receipt ${JSON.stringify(r)}, want channel ${channel}, a seq and epoch ${this.epoch}`);
    const last = this.published[this.published.length - 1];
    check(last === undefined || r.seq > last.seq, `${where}: seq ${r.seq}, not after the previous publish's ${last?.seq}`);
    const m = { channel, seq: r.seq, data };
    this.published.push(m);
    return m;
  }

  // publish publishes data (a JSON value) to channel and returns it with
  // its seq.
  async publish(channel, data) {
    const r = await this.publishBody(channel, JSON.stringify(data), "application/json");
    return this.receipt(`POST /publish?channel=${channel}`, channel, r, data);
  }

  // publishBatch publishes items ({channel, data}) in one POST
  // /publish/batch.
  async publishBatch(items) {
    const r = await this.post("/publish/batch", JSON.stringify(items), "application/json");
    const b = this.json(r);
    check(r.status === 200 && b.failed === 0 && b.published === items.length && b.results?.length === items.length,
      `POST ${r.url} (${items.length} items): ${r.status} ${r.text.slice(0, 300)}, want 200 with every item published`);
    return items.map((it, i) => this.receipt(`POST ${r.url} item ${i}`, it.channel, b.results[i], it.data));
  }

  // metrics reads the counters the checks steer by.
  async metrics() {
    const url = `${this.opt.admin}/metrics`;
    let res, text;
    try {
      res = await fetch(url, { signal: AbortSignal.timeout(this.opt.wait) });
      text = await res.text();
    } catch (e) {
      fail(`GET ${url}: ${errText(e)}`);
    }
    check(res.status === 200, `GET ${url}: ${res.status} ${text.slice(0, 200)}`);
    const num = (name) => {
      const m = new RegExp(`^${name.replace(/[{}"]/g, "\\$&")} (\\S+)$`, "m").exec(text);
      check(m !== null, `GET ${url}: no ${name} in the metrics`);
      return Number(m[1]);
    };
    return {
      slowCloses: num("fanout_slow_consumer_closes_total"),
      slowReason: num('fanout_closes_total{reason="slow_consumer"}'),
      deliveries: num("fanout_deliveries_total"),
      queued: num("fanout_queued_bytes"),
    };
  }

  // waitMetrics polls the counters until cond holds, or fails at the
  // wait deadline: the assertion is on the server's state, never on its
  // speed.
  async waitMetrics(cond, what) {
    const deadline = Date.now() + this.opt.wait;
    for (;;) {
      const m = await this.metrics();
      if (cond(m)) return m;
      if (Date.now() > deadline) fail(`the server's counters never showed ${what} within ${this.opt.wait} ms: last ${JSON.stringify(m)}`);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }

  // stall publishes to channel while the one stream connected to the
  // server (name, for the messages) is not read, until the server closes
  // it as a slow consumer, and returns what it published and the counters
  // then.
  //
  // Why a slow consumer: it is the one close the server makes on its own
  // that a test can cause for certain, on the server's clock and nobody
  // else's (a restart would change the epoch; a token's expiry is a time
  // to wait for). Why it is deterministic: every step waits on the
  // server's own counters, never on a guessed delay. Messages of 4 KiB go
  // out 12 at a time (48 KiB, under -queue-bytes 65536) while the server
  // queues nothing (the stream's socket still takes every byte: the
  // kernel's buffers are filling, a few MB), then one at a time once its
  // queue has bytes, each batch followed by a wait until the server has
  // handed it over (fanout_deliveries_total: the stream is the only
  // connection) or has ended the stream (fanout_slow_consumer_closes_total,
  // counted at the teardown, which comes -close-timeout after the close,
  // since the stream takes nothing). So what the stream has not got when
  // it ends is at most its queue (-queue-bytes), the message that
  // overflowed it and one more: a replay that fits the resumed stream's
  // socket and queue, which one resume must then deliver whole.
  async stall(name, channel) {
    const base = await this.metrics();
    const pad = "x".repeat(4000); // about 4 KiB as an event
    const sent = [];
    let delivered = base.deliveries;
    let m = base;
    for (;;) {
      check(sent.length < 16384, `${name}: ${sent.length} messages (${(sent.length * 4 / 1024).toFixed(0)} MiB) published ` +
        "to a stream that reads nothing, and the server has not closed it: no slow-consumer close (-queue-bytes)");
      const k = m.queued > 0 ? 1 : 12;
      const items = Array.from({ length: k }, (_, i) => ({ channel, data: { step: "stall", i: sent.length + i, pad } }));
      sent.push(...(await this.publishBatch(items)));
      delivered += k;
      m = await this.waitMetrics((x) => x.deliveries >= delivered || x.slowCloses > base.slowCloses,
        `message ${sent.length} handed to ${name}, or ${name} closed`);
      if (m.slowCloses > base.slowCloses) break;
    }
    check(m.slowReason > base.slowReason,
      `fanout_slow_consumer_closes_total went up, but fanout_closes_total{reason="slow_consumer"} did not: ${JSON.stringify(m)}`);
    return { sent, base, closed: m };
  }
}
