// eventsource.mjs: fanout's Server-Sent Events against the npm eventsource
// package (the WHATWG EventSource for Node), a client nobody here wrote,
// which resumes by itself: when the server ends a stream it reconnects,
// sending Last-Event-ID, as a browser does. It checks against a running
// server:
//
//   a. an EventSource on channels a and b opens and gets the welcome,
//      then messages published to a and b (each event's lastEventId is
//      EPOCH:SEQ of its message);
//   b. its connection stalls (the fetch it was given stops passing bytes
//      on, as a stalled network would) until the server closes the stream
//      as a slow consumer (Admin.stall in common.mjs says why that way);
//      then the bytes flow again;
//   c. EventSource reconnects by itself with Last-Event-ID = the id of the
//      last event it dispatched, gets recovered:true, every message it had
//      not got, once each and in seq order, then live ones.
//
// Every wait has a deadline and the whole run another (EventSource waits
// 3 s before it reconnects: the server sends no retry: on a live stream).
// Status 1 on a deviation, 2 on bad usage or without the package.

import { Admin, check, fail, ok, parseOptions, progress, run, withDeadline } from "./common.mjs";

const usage = `usage: node scripts/node/eventsource.mjs [options]

Checks that the npm eventsource package (installed in scripts/node by:
cd scripts/node && npm ci) resumes a fanout SSE stream by itself after the
server closed it. Needs Node >= 20. The server needs what sse-resume.mjs
needs: a publish key, -queue-bytes 65536, -history-size 100000 and
-close-timeout 250ms, and no other client connected while it runs.

options (each also from the environment):
  --sse URL      SSE endpoint, e.g. http://127.0.0.1:8080/sse        ($FANOUT_SSE_URL)
  --admin URL    admin listener, e.g. http://127.0.0.1:8081           ($FANOUT_ADMIN_URL)
  --key KEY      a -publish-keys key                                  ($FANOUT_PUBLISH_KEY)
  --wait MS      deadline of each wait, ms (default 10000)            ($FANOUT_WAIT_MS)
  --timeout MS   deadline of the whole run, ms (default 30000)        ($FANOUT_TIMEOUT_MS)
  --help         this text`;

const opt = parseOptions("eventsource.mjs", usage, {
  sse: ["FANOUT_SSE_URL", /^https?:\/\/[^?#]+$/, "http://HOST/PATH, no query"],
});
const admin = new Admin(opt);

let EventSource;
try {
  ({ EventSource } = await import("eventsource"));
} catch (e) {
  console.error(`eventsource.mjs: the npm eventsource package is not installed next to this script (${e.code ?? e.message}): ` +
    "run (cd scripts/node && npm ci)");
  process.exit(2);
}

// Valve is the network between EventSource and the server: a fetch that
// passes the response's bytes on only while it is open, so that closing
// it stalls the client as a slow network would (fetch then stops reading
// the socket, the server's queue fills). It records each request's
// Last-Event-ID.
class Valve {
  constructor() {
    this.shut = null; // {promise, resolve} while closed
    this.requests = []; // the Last-Event-ID of each request, null for none
    this.fetch = this.fetch.bind(this);
  }

  close() {
    let resolve;
    const promise = new Promise((r) => { resolve = r; });
    this.shut = { promise, resolve };
  }

  open() {
    this.shut?.resolve();
    this.shut = null;
  }

  async fetch(url, init) {
    this.requests.push(new Headers(init?.headers).get("last-event-id"));
    const res = await fetch(url, init);
    if (!res.body) return res;
    const reader = res.body.getReader();
    const valve = this;
    const body = new ReadableStream({
      async pull(controller) {
        while (valve.shut) await valve.shut.promise;
        try {
          const { value, done } = await reader.read();
          if (done) controller.close();
          else controller.enqueue(value);
        } catch (e) {
          controller.error(e);
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    }, { highWaterMark: 0 });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  }
}

// Source is the EventSource with its events queued: next() takes them in
// order; opens and errors (a reconnect is an error event, then an open)
// are counted.
class Source {
  constructor(url, valve) {
    this.name = "EventSource";
    this.events = [];
    this.waiter = null;
    this.opens = 0;
    this.errors = [];
    this.es = new EventSource(url, { fetch: valve.fetch });
    this.es.addEventListener("open", () => { this.opens++; this.wake(); });
    this.es.addEventListener("error", (ev) => { this.errors.push(ev.message ?? "error"); this.wake(); });
    this.es.addEventListener("message", (ev) => {
      let f;
      try {
        f = JSON.parse(ev.data);
      } catch (e) {
        f = { unparsable: ev.data.slice(0, 200), error: e.message };
      }
      this.events.push({ ...f, id: ev.lastEventId });
      this.wake();
    });
  }

  wake() {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  async until(cond, what) {
    const came = (async () => {
      for (;;) {
        if (this.es.readyState === EventSource.CLOSED) fail(`EventSource gave up (CLOSED) while waiting for ${what}: errors ${JSON.stringify(this.errors)}`);
        const v = cond();
        if (v) return v;
        await new Promise((resolve) => { this.waiter = resolve; });
      }
    })();
    return withDeadline(came, opt.wait + 3000, `${what} on the EventSource`);
  }

  async next(what) {
    const ev = await this.until(() => this.events.shift(), what);
    check(!("unparsable" in ev), `EventSource: an event whose data is not JSON (${ev.error}): ${ev.unparsable}`);
    return ev;
  }

  async welcome(what) {
    const w = await this.next(what);
    check(w.type === "welcome" && w.epoch && JSON.stringify(w.channels) === '["a","b"]' && w.id === `${w.epoch}:${w.id.split(":")[1]}`,
      `EventSource: ${what}: ${JSON.stringify(w)}, want a welcome on ["a","b"] with its id EPOCH:SEQ`);
    return w;
  }

  // expect takes messages and checks they are exactly want, in order.
  async expect(want, what) {
    for (const [i, m] of want.entries()) {
      const got = await this.next(`${what}: message ${i + 1} of ${want.length} (seq ${m.seq})`);
      check(got.type === "message" && got.seq === m.seq && got.channel === m.channel && got.id === `${admin.epoch}:${m.seq}` &&
        JSON.stringify(got.data) === JSON.stringify(m.data),
      `EventSource, ${what}: got ${JSON.stringify(got).slice(0, 300)}, want seq ${m.seq} on ${m.channel} with id ${admin.epoch}:${m.seq}` +
        (got.seq > m.seq ? ": a gap" : got.seq < m.seq ? ": a duplicate or out of order" : ""));
    }
  }
}

const onAB = (m) => m.channel === "a" || m.channel === "b";

async function main() {
  progress.step = "a: open";
  const valve = new Valve();
  const src = new Source(`${opt.sse}?channel=a&channel=b`, valve);
  const w1 = await src.welcome("the first welcome");
  check(!("recovered" in w1), `EventSource: first welcome ${JSON.stringify(w1)} has "recovered"`);
  admin.epoch = w1.epoch;
  const live = [];
  for (const ch of ["a", "c", "b"]) live.push(await admin.publish(ch, { step: "a", ch }));
  await src.expect(live.filter(onAB), "step a");
  ok(`a. EventSource open (readyState ${src.es.readyState}); welcome id ${w1.id}; ${live.filter(onAB).length} messages, lastEventId EPOCH:SEQ each`);

  progress.step = "b: stall until the server closes the stream";
  valve.close();
  const { sent, base, closed } = await admin.stall("the EventSource's stream", "a");
  valve.open();
  ok(`b. stalled: after ${sent.length} publishes the server closed the stream as a slow consumer ` +
    `(fanout_slow_consumer_closes_total ${base.slowCloses} -> ${closed.slowCloses})`);

  progress.step = "c: EventSource reconnects by itself";
  // What came before the end, then (after EventSource's reconnection
  // delay) the welcome of the new stream, then the rest.
  let got = 0;
  for (;;) {
    const ev = await src.next(`events of the closed stream, or the welcome of the new one (${got} of ${sent.length} so far)`);
    if (ev.type === "welcome") {
      check(ev.recovered === true && ev.epoch === admin.epoch,
        `EventSource: reconnected after ${got} of the ${sent.length} stalled messages: welcome ${JSON.stringify(ev)}, want "recovered":true`);
      check(got < sent.length, `EventSource: all ${sent.length} stalled messages came before the reconnect: the close lost nothing`);
      const lastId = got > 0 ? `${admin.epoch}:${sent[got - 1].seq}` : `${admin.epoch}:${live.filter(onAB).at(-1).seq}`;
      check(valve.requests.length === 2 && valve.requests[0] === null && valve.requests[1] === lastId,
        `EventSource's requests sent Last-Event-ID ${JSON.stringify(valve.requests)}, want [null, "${lastId}"]`);
      check(src.errors.length === 1 && src.opens === 2, `EventSource: ${src.opens} opens and errors ${JSON.stringify(src.errors)}, want 2 and one`);
      progress.step = "c: the replay and live messages";
      const liveC = [];
      for (const ch of ["b", "c", "a"]) liveC.push(await admin.publish(ch, { step: "c", ch }));
      await src.expect([...sent.slice(got), ...liveC.filter(onAB)], "after the reconnect");
      ok(`c. the stream ended after ${got} of the ${sent.length}; EventSource reconnected by itself with Last-Event-ID: ${lastId}: ` +
        `recovered:true, welcome id ${ev.id}, the ${sent.length - got} it had not got then ${liveC.filter(onAB).length} live, in seq order, each once`);
      break;
    }
    check(ev.type === "message" && ev.seq === sent[got]?.seq && ev.id === `${admin.epoch}:${ev.seq}`,
      `EventSource, before the reconnect: got ${JSON.stringify(ev).slice(0, 300)}, want seq ${sent[got]?.seq}`);
    got++;
  }

  progress.step = "close";
  src.es.close();
  console.log("PASS: EventSource resumes a closed fanout stream by itself, with nothing lost or repeated");
}

run(opt, main);
