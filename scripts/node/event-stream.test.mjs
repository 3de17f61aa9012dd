// event-stream.test.mjs: the event-stream parser (event-stream.mjs)
// against the WHATWG rules, on input fanout never sends but a server may
// (CR and CRLF line ends, a BOM, multi-line data, id-only blocks, retry,
// unknown fields), and split at every place: any split of the input
// parses the same. Run: node --test scripts/node/event-stream.test.mjs

import assert from "node:assert/strict";
import { test } from "node:test";

import { EventStreamParser } from "./event-stream.mjs";

// parse feeds pieces and ends the stream; it returns what came out.
function parse(...pieces) {
  const p = new EventStreamParser();
  for (const piece of pieces) p.push(piece);
  const discarded = p.end();
  return { events: p.events, comments: p.comments, lastEventId: p.lastEventId, retry: p.retry, discarded };
}

const cases = [
  {
    name: "fanout's own: id and one data line, LF",
    in: "id: E:0\ndata: {\"type\":\"welcome\"}\n\nid: E:1\ndata: {\"seq\":1}\n\n: ping\n\n",
    events: [{ type: "message", data: '{"type":"welcome"}', id: "E:0", ownId: "E:0" }, { type: "message", data: '{"seq":1}', id: "E:1", ownId: "E:1" }],
    comments: ["ping"],
  },
  {
    name: "CRLF and CR line ends, a leading BOM",
    in: "\ufeffid: 1\r\ndata: a\r\n\r\nid: 2\rdata: b\r\r",
    events: [{ type: "message", data: "a", id: "1", ownId: "1" }, { type: "message", data: "b", id: "2", ownId: "2" }],
  },
  {
    name: "multi-line data, no space after the colon, an empty data line",
    in: "data:one\ndata: two\ndata\n\ndata:\n\n",
    events: [{ type: "message", data: "one\ntwo\n", id: "", ownId: null }, { type: "message", data: "", id: "", ownId: null }],
  },
  {
    name: "the last id carries over; an id-only block sets it without an event",
    in: "id: 7\ndata: x\n\ndata: y\n\nid: 9\n\ndata: z\n\n",
    events: [{ type: "message", data: "x", id: "7", ownId: "7" }, { type: "message", data: "y", id: "7", ownId: null },
      { type: "message", data: "z", id: "9", ownId: null }],
    lastEventId: "9",
  },
  {
    name: "event type, retry digits only, unknown fields and an id with NUL ignored",
    in: "event: tick\nretry: 1500\nretry: 2s\nfoo: bar\nid: a\0b\ndata: t\n\n",
    events: [{ type: "tick", data: "t", id: "", ownId: null }],
    retry: 1500,
  },
  {
    name: "an unfinished event at the end is discarded, and counted",
    in: "id: 1\ndata: done\n\nid: 2\ndata: cut sho",
    events: [{ type: "message", data: "done", id: "1", ownId: "1" }],
    lastEventId: "2",
    discarded: "id: 2\ndata: cut sho".length,
  },
];

for (const c of cases) {
  test(c.name, () => {
    const whole = parse(c.in);
    assert.deepEqual(whole.events, c.events);
    assert.deepEqual(whole.comments, c.comments ?? []);
    if ("lastEventId" in c) assert.equal(whole.lastEventId, c.lastEventId);
    if ("retry" in c) assert.equal(whole.retry, c.retry);
    assert.equal(whole.discarded, c.discarded ?? 0);
    // Any split parses the same: in two at every place, and one
    // character at a time.
    for (let i = 0; i <= c.in.length; i++) {
      assert.deepEqual(parse(c.in.slice(0, i), c.in.slice(i)), whole, `split at ${i}`);
    }
    assert.deepEqual(parse(...c.in), whole, "one character at a time");
  });
}
