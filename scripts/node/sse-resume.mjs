// sse-resume.mjs: a Server-Sent Events client of fanout with nothing but
// what Node ships (the global fetch, and event-stream.mjs, a parser
// written from the WHATWG rules; no npm package), that checks GET /sse and
// its resume end to end against a running server:
//
//   a. subscribe to channels a and b; the first event is the welcome,
//      its id EPOCH:SEQ, and no "recovered";
//   b. publish to a, b and c over POST /publish: a and b arrive as events
//      whose id is EPOCH:SEQ of the message, in seq order, c does not;
//   c. stop reading and publish until the server closes the stream as a
//      slow consumer (why this way, and why it is deterministic:
//      Admin.stall in common.mjs); then read what the stream still had: a
//      gapless prefix of what was published, then the end, an unfinished
//      last event (if any) discarded as the format says;
//   d. resume with Last-Event-ID = the id of the last event parsed: the
//      welcome says recovered:true, then every message not seen, each once
//      and in seq order, then live ones;
//   e. resume with last_event_id= in the query from the current cursor:
//      recovered:true and nothing to replay;
//   f. resume with a wrong epoch: recovered:false, nothing replayed;
//      a malformed Last-Event-ID: 400 with the reason;
//   g. a ": ping" comment arrives on a quiet stream.
//
// Every wait has a deadline and the whole run another: it ends by itself,
// with status 1 and a message saying what deviated, even if the server
// hangs. Status 2: bad usage, or a Node without fetch.

import { Admin, check, errText, fail, Failure, ok, parseOptions, progress, run, withDeadline } from "./common.mjs";
import { EventStreamParser } from "./event-stream.mjs";

const usage = `usage: node scripts/node/sse-resume.mjs [options]

Checks fanout's Server-Sent Events (GET /sse) and their resume with
Last-Event-ID, with Node's fetch and an event-stream parser of its own.
Needs Node >= 18. The server needs a publish key, a history that holds a
few MB (-history-size 100000), a small outbound queue (-queue-bytes 65536),
a short -close-timeout (250ms) and a short -ping-interval (1s), e.g.

  fanout -publish-keys KEY -queue-bytes 65536 -history-size 100000 \\
         -close-timeout 250ms -ping-interval 1s

and no other client connected while it runs (step c reads the server's
counters).

options (each also from the environment):
  --sse URL      SSE endpoint, e.g. http://127.0.0.1:8080/sse        ($FANOUT_SSE_URL)
  --admin URL    admin listener, e.g. http://127.0.0.1:8081           ($FANOUT_ADMIN_URL)
                 (a bare host:port, as fanout logs it, means http://)
  --key KEY      a -publish-keys key                                  ($FANOUT_PUBLISH_KEY)
  --wait MS      deadline of each wait, ms (default 10000)            ($FANOUT_WAIT_MS)
  --timeout MS   deadline of the whole run, ms (default 30000)        ($FANOUT_TIMEOUT_MS)
  --help         this text

Prints one line per check; exits 0 when all pass, 1 on the first that
fails (saying what was expected and what came), 2 on bad usage.`;

const opt = parseOptions("sse-resume.mjs", usage, {
  sse: ["FANOUT_SSE_URL", /^https?:\/\/[^?#]+$/, "http://HOST/PATH, no query"],
});
const admin = new Admin(opt);

// Stream is one GET /sse: a pull parser over the response body. Nothing
// is read from the socket unless next() is waiting, so a script that does
// not call it stops reading, as a stalled browser tab would (fetch applies
// backpressure: the kernel's buffers fill, then the server's queue).
class Stream {
  constructor(name, query, headers = {}) {
    this.name = name;
    this.url = `${opt.sse}?${query}`;
    this.headers = headers;
    this.parser = new EventStreamParser();
    this.decoder = new TextDecoder("utf-8", { fatal: true });
    this.abort = new AbortController();
    this.reader = null;
    this.ended = false; // the server ended the stream
    this.discarded = 0; // characters of an unfinished event at the end
    this.seen = []; // seqs of the messages taken, in order
    this.lastId = ""; // the last event id, as EventSource would resend it
    this.pings = 0;
  }

  // open sends the request and checks the answer is a stream.
  async open() {
    let res;
    try {
      res = await withDeadline(fetch(this.url, {
        headers: { Accept: "text/event-stream", ...this.headers },
        signal: this.abort.signal,
      }), opt.wait, `answer to GET ${this.url}`);
    } catch (e) {
      if (e instanceof Failure) throw e;
      fail(`${this.name}: GET ${this.url}: ${errText(e)}`);
    }
    this.status = res.status;
    this.contentType = res.headers.get("content-type") ?? "";
    if (res.status !== 200) {
      this.body = await withDeadline(res.text(), opt.wait, `body of the ${res.status} to GET ${this.url}`);
      return this;
    }
    check(/^text\/event-stream(;|$)/.test(this.contentType),
      `${this.name}: GET ${this.url}: 200 with Content-Type ${JSON.stringify(this.contentType)}, want text/event-stream`);
    this.reader = res.body.getReader();
    return this;
  }

  // read parses one more piece of the body; false at its end.
  async read() {
    if (this.ended) return false;
    let chunk;
    try {
      chunk = await this.reader.read();
    } catch (e) {
      fail(`${this.name}: reading the stream: ${errText(e)}`);
    }
    if (chunk.done) {
      let tail = "";
      try {
        tail = this.decoder.decode();
      } catch {
        fail(`${this.name}: the stream ended inside a UTF-8 sequence`);
      }
      this.parser.push(tail);
      this.discarded = this.parser.end();
      this.ended = true;
      this.take();
      return false;
    }
    let text;
    try {
      text = this.decoder.decode(chunk.value, { stream: true });
    } catch {
      fail(`${this.name}: the stream is not UTF-8`);
    }
    this.parser.push(text);
    this.take();
    return true;
  }

  take() {
    for (const c of this.parser.comments) if (c === "ping") this.pings++;
    this.parser.comments.length = 0;
  }

  // next returns the next event, or null once the stream has ended with
  // none left; it fails after the wait deadline.
  async next(what) {
    const took = (async () => {
      for (;;) {
        const ev = this.parser.events.shift();
        if (ev) {
          this.lastId = ev.id;
          return ev;
        }
        if (!(await this.read())) return null;
      }
    })();
    return withDeadline(took, opt.wait, `${what} on ${this.name}`);
  }

  // object returns the next event's data as one JSON object, checking
  // the event is a message named by its own id; null at the end.
  async object(what) {
    const ev = await this.next(what);
    if (ev === null) return null;
    check(ev.type === "message", `${this.name}: an event of type ${JSON.stringify(ev.type)}, want unnamed (message) events`);
    check(ev.ownId !== null, `${this.name}: an event without its own id: line: ${ev.data.slice(0, 200)}`);
    let f;
    try {
      f = JSON.parse(ev.data);
      if (f === null || typeof f !== "object" || Array.isArray(f)) throw new Error("not an object");
    } catch (e) {
      fail(`${this.name}: an event whose data is not one JSON object (${e.message}): ${ev.data.slice(0, 200)}`);
    }
    return { ...f, id: ev.id };
  }

  // must is object that fails at the end of the stream.
  async must(what) {
    const f = await this.object(what);
    if (f === null) fail(`${this.name}: the stream ended while waiting for ${what}`);
    return f;
  }

  // welcome reads the first event and checks what every welcome holds.
  async welcome(channels) {
    check(this.status === 200, `${this.name}: GET ${this.url}: ${this.status} ${this.body?.trim()}, want 200`);
    const w = await this.must("welcome");
    check(w.type === "welcome", `${this.name}: first event ${JSON.stringify(w)}, want {"type":"welcome",...}`);
    check(typeof w.epoch === "string" && w.epoch !== "", `${this.name}: welcome without an epoch: ${JSON.stringify(w)}`);
    check(Number.isSafeInteger(w.seq) && w.seq >= 0, `${this.name}: welcome seq ${JSON.stringify(w.seq)}, want an integer >= 0`);
    check(JSON.stringify(w.channels) === JSON.stringify(channels),
      `${this.name}: welcome channels ${JSON.stringify(w.channels)}, want ${JSON.stringify(channels)}`);
    const m = /^([^:]+):(\d+)$/.exec(w.id);
    check(m !== null && m[1] === w.epoch, `${this.name}: welcome id ${JSON.stringify(w.id)}, want ${w.epoch}:SEQ`);
    w.idSeq = Number(m[2]);
    return w;
  }

  // expect takes messages and checks they are exactly want (in seq
  // order), saying on the first deviation whether it is a gap, a
  // duplicate, a stray channel or a wrong payload.
  async expect(want, what) {
    for (const [i, m] of want.entries()) {
      const got = await this.must(`${what}: message ${i + 1} of ${want.length} (seq ${m.seq} on ${m.channel})`);
      this.match(got, m, what);
    }
  }

  // match checks one message against the one wanted and records it.
  match(got, m, what) {
    const desc = JSON.stringify(got).slice(0, 300);
    check(got.type === "message", `${this.name}, ${what}: got ${desc}, want a message`);
    if (got.seq !== m.seq) {
      let why = "";
      if (this.seen.includes(got.seq)) why = `: a duplicate, seq ${got.seq} came already`;
      else if (!["a", "b"].includes(got.channel)) why = `: a message on channel ${JSON.stringify(got.channel)}, which this stream is not on`;
      else if (got.seq > m.seq) why = `: a gap, seq ${m.seq} (and maybe more) never came before it`;
      else why = ": out of seq order, or not expected here";
      fail(`${this.name}, ${what}: got ${desc}, want seq ${m.seq} on ${m.channel}${why}`);
    }
    const id = `${admin.epoch}:${m.seq}`;
    check(got.id === id, `${this.name}, ${what}: seq ${got.seq} came with id ${JSON.stringify(got.id)}, want ${id}`);
    check(got.channel === m.channel, `${this.name}, ${what}: got ${desc}, want channel ${m.channel}`);
    check(JSON.stringify(got.data) === JSON.stringify(m.data),
      `${this.name}, ${what}: seq ${got.seq} data ${JSON.stringify(got.data).slice(0, 200)}, want ${JSON.stringify(m.data).slice(0, 200)}`);
    this.seen.push(got.seq);
  }

  // ping reads until a new ": ping" comment has come, failing on an
  // event (none is published meanwhile) or the end; it returns how many
  // pings the stream has had.
  async ping() {
    const before = this.pings;
    const came = (async () => {
      while (this.pings === before) {
        check(this.parser.events.length === 0,
          `${this.name}: an event while waiting for a ping, none published: ${this.parser.events[0]?.data.slice(0, 200)}`);
        if (!(await this.read())) fail(`${this.name}: the stream ended while waiting for a ping`);
      }
      return this.pings;
    })();
    return withDeadline(came, opt.wait, `": ping" comment on ${this.name} (the server's -ping-interval must be under --wait)`);
  }

  close() {
    this.abort.abort();
  }
}

const onAB = (m) => m.channel === "a" || m.channel === "b";
const bySeq = (x, y) => x.seq - y.seq;

async function main() {
  const channels = ["a", "b"];
  const query = "channel=a&channel=b";

  progress.step = "a: subscribe";
  const first = await new Stream("first stream", query).open();
  const w1 = await first.welcome(channels);
  check(!("recovered" in w1), `first stream: welcome without Last-Event-ID has recovered: ${JSON.stringify(w1)}`);
  check(w1.idSeq === w1.seq, `first stream: welcome id ${w1.id} for seq ${w1.seq}`);
  admin.epoch = w1.epoch;
  const epoch = w1.epoch;
  ok(`a. GET /sse?${query}: 200 ${first.contentType}; welcome id ${w1.id}, channels ["a","b"], no "recovered"`);

  progress.step = "b: publish while reading";
  const live = [];
  for (const [i, ch] of ["a", "b", "c", "a", "c", "b"].entries()) live.push(await admin.publish(ch, { step: "b", i, ch }));
  check(live[0].seq > w1.seq, `step b: first publish got seq ${live[0].seq}, not after the welcome's ${w1.seq}`);
  await first.expect(live.filter(onAB), "step b");
  ok(`b. published ${live.length} (${live.filter(onAB).length} on a/b): a/b arrived as events id ${epoch}:SEQ, ` +
    `once each in seq order (seqs ${live.filter(onAB).map((m) => m.seq).join(",")}), none from c`);

  progress.step = "c: stall until the server closes the stream";
  const { sent, base, closed } = await admin.stall(first.name, "a");
  // Now read what the stream still had: the kernel's buffers, then the
  // end (the queue was dropped at the close).
  let after = 0;
  for (const m of sent) {
    const got = await first.object(`the stalled stream's events after the close (seq ${m.seq} next)`);
    if (got === null) break;
    first.match(got, m, "step c");
    after++;
  }
  check(first.ended || (await first.next("the end of the closed stream")) === null,
    `first stream: every one of the ${sent.length} messages published while stalled arrived, and the stream did not end: ` +
    "the server never closed it");
  const cursor = first.lastId;
  const lastSeq = first.seen[first.seen.length - 1];
  check(cursor === `${epoch}:${lastSeq}`, `first stream: last event id ${cursor}, want ${epoch}:${lastSeq}`);
  const unseen = sent.slice(after);
  check(unseen.length > 0, `first stream: all ${sent.length} stalled messages arrived before the end: the close lost nothing to resume`);
  ok(`c. stopped reading; after ${sent.length} publishes on a (${(sent.length * 4 / 1024).toFixed(1)} MiB) ` +
    `the server closed the stream as a slow consumer (fanout_slow_consumer_closes_total ${base.slowCloses} -> ${closed.slowCloses}); ` +
    `read on: ${after} in order then the end, ${unseen.length} never came; ` +
    (first.discarded > 0 ? `an unfinished last event (${first.discarded} chars) discarded; ` : "it ended on an event boundary; ") +
    `last id ${cursor}`);

  progress.step = "d: resume with Last-Event-ID";
  const resumed = await new Stream("resumed stream", query, { "Last-Event-ID": cursor }).open();
  const w2 = await resumed.welcome(channels);
  check(w2.epoch === epoch, `resumed stream: welcome epoch ${w2.epoch}, want ${epoch}`);
  check(w2.recovered === true, `resumed stream: Last-Event-ID ${cursor} got ${JSON.stringify(w2)}, want "recovered":true`);
  check(w2.seq >= unseen[unseen.length - 1].seq, `resumed stream: welcome seq ${w2.seq} is before the last publish ${unseen[unseen.length - 1].seq}`);
  check(w2.idSeq >= lastSeq && w2.idSeq < unseen[0].seq,
    `resumed stream: welcome id ${w2.id}: want where the client has everything up to (${lastSeq} <= seq < ${unseen[0].seq})`);
  const liveD = [];
  for (const [i, ch] of ["b", "c", "a", "b"].entries()) liveD.push(await admin.publish(ch, { step: "d", i, ch }));
  const wantD = [...unseen, ...liveD.filter(onAB)].sort(bySeq);
  await resumed.expect(wantD, "step d");
  const got = [...first.seen, ...resumed.seen];
  const sentAB = admin.published.filter(onAB).map((m) => m.seq);
  check(got.length === new Set(got).size, "a seq was received twice over the two streams");
  check(got.length === sentAB.length && sentAB.every((s, i) => got[i] === s),
    `published on a/b: ${sentAB.length} seqs; received over the two streams: ${got.length}, not the same in the same order`);
  ok(`d. Last-Event-ID: ${cursor}: recovered:true, welcome id ${w2.id}; the ${unseen.length} unseen (seqs ${unseen[0].seq}..${unseen[unseen.length - 1].seq}) ` +
    `replayed then ${liveD.filter(onAB).length} live, in seq order, each once; all ${sentAB.length} published on a/b received exactly once over the two streams`);

  progress.step = "e: resume with last_event_id=";
  const here = resumed.lastId;
  const byQuery = await new Stream("query-resumed stream", `${query}&last_event_id=${encodeURIComponent(here)}`).open();
  const w3 = await byQuery.welcome(channels);
  const latest = admin.published[admin.published.length - 1].seq;
  check(w3.recovered === true && w3.seq === latest && w3.id === `${epoch}:${latest}`,
    `query-resumed stream: last_event_id=${here} got ${JSON.stringify(w3)}, want "recovered":true, seq and id ${epoch}:${latest} (nothing to replay)`);

  progress.step = "f: resume from another epoch";
  const wrong = `not${epoch}`.slice(0, 64);
  const stale = await new Stream("wrong-epoch stream", query, { "Last-Event-ID": `${wrong}:${w1.seq}` }).open();
  const w4 = await stale.welcome(channels);
  check(w4.recovered === false, `wrong-epoch stream: Last-Event-ID ${wrong}:${w1.seq} got ${JSON.stringify(w4)}, want "recovered":false`);
  check(w4.epoch === epoch && w4.idSeq === w4.seq, `wrong-epoch stream: welcome ${JSON.stringify(w4)}, want epoch ${epoch} and id ${epoch}:${w4.seq}`);
  const probe = await admin.publish("a", { step: "f" });
  for (const [s, w] of [[resumed, w2], [byQuery, w3], [stale, w4]]) {
    const f = await s.must("the message published after the last welcome");
    check(f.seq === probe.seq, `${s.name}: after its welcome ${JSON.stringify(w)}, the first event was ` +
      `${JSON.stringify(f).slice(0, 300)}, want seq ${probe.seq}, the only message published after the stream was opened` +
      (f.seq < probe.seq ? ` (seq ${f.seq} was published before it; the latest then was ${latest})` : ""));
    s.match(f, probe, "steps e/f");
  }
  const bad = await new Stream("bad-id stream", query, { "Last-Event-ID": "no-colon" }).open();
  check(bad.status === 400 && bad.body.startsWith("Last-Event-ID: "),
    `bad-id stream: Last-Event-ID no-colon got ${bad.status} ${JSON.stringify(bad.body ?? "")}, want 400 "Last-Event-ID: ..."`);
  ok(`e. last_event_id=${here} in the query: recovered:true, welcome id ${w3.id}, nothing replayed; seq ${probe.seq} then came live`);
  ok(`f. Last-Event-ID ${wrong}:${w1.seq}: recovered:false, welcome id ${w4.id}, nothing replayed (first message: seq ${probe.seq}, live); ` +
    `Last-Event-ID no-colon: 400 "${bad.body.trim()}"`);

  progress.step = "g: a ping comment";
  const pings = await stale.ping();
  ok(`g. a quiet stream got a ": ping" comment (${pings} on it so far), no event`);

  progress.step = "close";
  for (const s of [resumed, byQuery, stale]) s.close();
  console.log("PASS: Server-Sent Events, Last-Event-ID and the slow-consumer close behave as documented");
}

run(opt, main);
