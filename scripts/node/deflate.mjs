// deflate.mjs: fanout's permessage-deflate (RFC 7692) against the npm ws
// package, a client nobody here wrote, with Node's fetch for the publish
// API. It checks end to end against a running server, on the default
// channel (raw frames; a client's own messages come back to it too):
//
//   a. two ws clients that offer permessage-deflate (ws's default offer,
//      and one asking for no context takeover both ways) and one that
//      offers nothing: the first two get it with server_no_context_takeover
//      and client_no_context_takeover, the third none;
//   b. a ~2 KiB compressible JSON message published over POST /publish
//      reaches all three intact: compressed on the wire to the deflate
//      clients (far fewer bytes read than the message holds), whole to the
//      plain one; published three times, it costs the same bytes each
//      time (no context carried from one message to the next);
//   c. a compressible binary message, the same;
//   d. a message under -compress-min-bytes goes out uncompressed to all;
//   e. ws clients send compressed messages (text and binary; ws's default
//      threshold and threshold 0, even for a tiny one): fewer bytes
//      written than the message holds, and the server sends each back
//      to all three, the plain one getting the very same bytes;
//   f. a compressed message that inflates past -max-message (a "zip
//      bomb" of a few KB on the wire) closes its sender with 1009, and
//      the other clients carry on;
//   g. the json format (channel d) is compressed the same way: one
//      envelope, the same bytes to a deflate and a plain client.
//
// Every wait has a deadline and the whole run another: it ends by itself,
// with status 1 and a message saying what deviated, even if the server
// hangs. Status 2: bad usage, or ws not installed.

import { Admin, check, fail, Failure, ok, parseOptions, progress, run, withDeadline } from "./common.mjs";

const usage = `usage: node scripts/node/deflate.mjs [options]

Checks fanout's permessage-deflate with the npm ws package (installed in
scripts/node by: cd scripts/node && npm ci) and Node's fetch. Needs Node
>= 18. The server needs a publish key, client publishing on (the default),
-compression on, -compress-min-bytes 256 and -max-message 65536 (the
defaults), e.g. fanout -publish-keys KEY; and no other client on the
default channel while it runs.

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

const opt = parseOptions("deflate.mjs", usage, {
  ws: ["FANOUT_WS_URL", /^wss?:\/\/[^?#]+$/, "ws://HOST/PATH, no query (the default channel)"],
});
const admin = new Admin(opt);

let WebSocket;
try {
  ({ default: WebSocket } = await import("ws"));
} catch (e) {
  console.error(`deflate.mjs: the npm ws package is not installed next to this script (${e.code ?? e.message}): ` +
    "run (cd scripts/node && npm ci)");
  process.exit(2);
}

// Client is one ws connection to the default channel: every message it
// receives is queued with the socket's byte counters at that moment, and
// next() takes them in order. The counters are the TCP socket's (the
// upgrade response's socket, Node's net.Socket): what went over the wire,
// before ws inflates or after it deflates.
class Client {
  constructor(name, perMessageDeflate, query = "") {
    this.name = name;
    this.messages = [];
    this.waiter = null;
    this.closeEvent = null;
    this.failure = null;
    this.socket = null;
    this.offered = perMessageDeflate;
    this.ws = new WebSocket(query ? `${opt.ws}?${query}` : opt.ws, { perMessageDeflate, handshakeTimeout: opt.wait });
    this.ws.on("upgrade", (res) => {
      this.socket = res.socket;
      this.answered = res.headers["sec-websocket-extensions"] ?? "";
    });
    this.opened = new Promise((resolve) => this.ws.once("open", resolve));
    this.closed = new Promise((resolve) => {
      this.ws.on("close", (code, reason) => {
        this.closeEvent = { code, reason: reason.toString() };
        resolve(this.closeEvent);
        this.wake();
      });
    });
    this.ws.on("error", (err) => {
      this.failure ??= err.message;
      this.wake();
    });
    this.ws.on("message", (data, isBinary) => {
      this.messages.push({ data, isBinary, read: this.socket.bytesRead });
      this.wake();
    });
  }

  wake() {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  async open() {
    const up = (async () => {
      for (;;) {
        if (this.ws.readyState === WebSocket.OPEN) return;
        if (this.failure) fail(`${this.name}: the handshake to ${opt.ws} failed: ${this.failure}`);
        if (this.closeEvent) fail(`${this.name}: closed (${this.closeEvent.code}) before it opened`);
        await Promise.race([this.opened, new Promise((resolve) => { this.waiter = resolve; })]);
      }
    })();
    await withDeadline(up, opt.wait, `open of ${this.name}`);
    this.mark();
    return this;
  }

  // mark notes the socket's byte counters: the next message's cost on
  // the wire is counted from here.
  mark() {
    this.readMark = this.socket.bytesRead;
    this.writeMark = this.socket.bytesWritten;
  }

  // next returns the next message with the bytes read for it since the
  // last mark, or fails after the wait deadline or on a close.
  async next(what) {
    const took = (async () => {
      for (;;) {
        const m = this.messages.shift();
        if (m) {
          m.wire = m.read - this.readMark;
          this.readMark = m.read;
          return m;
        }
        if (this.failure) fail(`${this.name}: the connection failed ("${this.failure}") while waiting for ${what}`);
        if (this.closeEvent) {
          const { code, reason } = this.closeEvent;
          fail(`${this.name}: the connection closed (code ${code}${reason ? `, "${reason}"` : ""}) while waiting for ${what}`);
        }
        await new Promise((resolve) => { this.waiter = resolve; });
      }
    })();
    return withDeadline(took, opt.wait, `${what} on ${this.name}`);
  }

  // send sends data and returns the bytes it took on the wire (what the
  // socket wrote once ws's callback says it is out).
  async send(data, options) {
    const before = this.socket.bytesWritten;
    await withDeadline(new Promise((resolve, reject) => {
      this.ws.send(data, options, (err) => (err ? reject(new Failure(`${this.name}: send: ${err.message}`)) : resolve()));
    }), opt.wait, `end of a send on ${this.name}`);
    return this.socket.bytesWritten - before;
  }

  async close() {
    this.ws.close(1000, "done");
    await withDeadline(this.closed, opt.wait, `close of ${this.name}`);
  }
}

// publish POSTs body to channel ("": the default channel) as type.
const publish = (body, type, channel = "") => admin.publishBody(channel, body, type);

// A compressible JSON document of about n bytes: the same few keys and
// words over and over, as real feeds are.
function document(n, tag) {
  const rows = [];
  for (let i = 0; JSON.stringify(rows).length < n - 64; i++) {
    rows.push({ id: i, team: ["home", "away"][i % 2], event: "goal", minute: 10 + (i % 80), player: "A. Player" });
  }
  return JSON.stringify({ tag, rows });
}

const describe = (b) => `${b.length} bytes (${JSON.stringify(b.subarray(0, 60).toString("latin1"))}...)`;

// receiveAll takes the next message on every client and checks each is
// exactly want (text or binary as said), returning the bytes each read.
async function receiveAll(clients, want, binary, what) {
  const wire = {};
  for (const c of clients) {
    const m = await c.next(what);
    check(m.isBinary === binary, `${c.name}, ${what}: a ${m.isBinary ? "binary" : "text"} message, want ${binary ? "binary" : "text"}`);
    check(Buffer.compare(m.data, want) === 0, `${c.name}, ${what}: got ${describe(m.data)}, want ${describe(want)}`);
    wire[c.name] = m.wire;
  }
  return wire;
}

// compressed checks what a deflate client read for a message of n bytes
// is far less (a compressed frame), and a plain one's at least n.
function checkWire(wire, deflaters, plain, n, what) {
  for (const c of deflaters) {
    check(wire[c.name] < n / 2, `${c.name}, ${what}: ${wire[c.name]} bytes on the wire for a ${n}-byte compressible message: ` +
      "not compressed, though permessage-deflate was negotiated");
  }
  check(wire[plain.name] >= n, `${plain.name}, ${what}: ${wire[plain.name]} bytes on the wire for a ${n}-byte message, without deflate`);
}

const hasParam = (ext, p) => ext.split(/\s*[;,]\s*/).includes(p);

async function main() {
  progress.step = "a: negotiate";
  const byDefault = await new Client("ws (perMessageDeflate: true)", true).open();
  const noTakeover = await new Client("ws (no context takeover, threshold 0)",
    { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 0 }).open();
  const plain = await new Client("ws (perMessageDeflate: false)", false).open();
  const deflaters = [byDefault, noTakeover];
  const all = [...deflaters, plain];
  // ws.extensions names what ws took from the answer (ws fails the
  // handshake on parameters it does not accept); the parameters are in
  // the answer's Sec-WebSocket-Extensions.
  for (const c of deflaters) {
    const ext = c.answered;
    check(c.ws.extensions === "permessage-deflate", `${c.name}: ws.extensions ${JSON.stringify(c.ws.extensions)}, want "permessage-deflate"`);
    check(ext.startsWith("permessage-deflate") && hasParam(ext, "server_no_context_takeover") && hasParam(ext, "client_no_context_takeover"),
      `${c.name}: the server answered Sec-WebSocket-Extensions ${JSON.stringify(ext)}, ` +
      "want permessage-deflate; server_no_context_takeover; client_no_context_takeover");
  }
  check(plain.ws.extensions === "" && plain.answered === "", `${plain.name}: offered nothing, got extensions ${JSON.stringify(plain.answered)}`);
  ok(`a. ws.extensions "permessage-deflate" for ${byDefault.name} and ${noTakeover.name}, the server's answer "${byDefault.answered}" ` +
    `and "${noTakeover.answered}"; ${plain.name}: none`);

  progress.step = "b: a compressible JSON message from the publish API";
  const doc = Buffer.from(document(2048, "b"));
  const costs = [];
  for (let i = 0; i < 3; i++) {
    await publish(doc, "application/json");
    const wire = await receiveAll(all, doc, false, `published JSON message ${i + 1}`);
    checkWire(wire, deflaters, plain, doc.length, `published JSON message ${i + 1}`);
    costs.push(wire);
  }
  for (const c of deflaters) {
    const sizes = costs.map((w) => w[c.name]);
    check(sizes.every((s) => s === sizes[0]),
      `${c.name}: the same message cost ${sizes.join(", ")} bytes on the wire: each should be compressed alone (no context takeover)`);
  }
  ok(`b. a ${doc.length}-byte JSON text published 3 times: intact on all three; on the wire ${byDefault.name} ${costs[0][byDefault.name]} B, ` +
    `${noTakeover.name} ${costs[0][noTakeover.name]} B each time (no context carried over), ${plain.name} ${costs[0][plain.name]} B`);

  progress.step = "c: a compressible binary message";
  const bin = Buffer.alloc(2048);
  for (let i = 0; i < bin.length; i++) bin[i] = (i % 16) * 3;
  await publish(bin, "application/octet-stream");
  const wireC = await receiveAll(all, bin, true, "published binary message");
  checkWire(wireC, deflaters, plain, bin.length, "published binary message");
  ok(`c. a ${bin.length}-byte binary message: binary and intact on all three; ${wireC[byDefault.name]} B on the wire compressed, ${wireC[plain.name]} B plain`);

  progress.step = "d: a message under -compress-min-bytes";
  const small = Buffer.from("x".repeat(200));
  await publish(small, "text/plain");
  const wireD = await receiveAll(all, small, false, "a 200-byte message");
  for (const c of all) {
    check(wireD[c.name] >= small.length, `${c.name}: ${wireD[c.name]} bytes on the wire for a 200-byte message: ` +
      "compressed, though it is under -compress-min-bytes (256)");
  }
  ok(`d. a 200-byte message went out uncompressed to all three (${wireD[byDefault.name]} B on the wire each)`);

  progress.step = "e: compressed messages from ws clients";
  const sends = [
    { from: noTakeover, data: Buffer.from(document(2048, "e1")), binary: false, what: "a 2 KiB JSON text, threshold 0" },
    { from: byDefault, data: Buffer.from(document(4096, "e2")), binary: false, what: "a 4 KiB JSON text, ws's default threshold (1024)" },
    { from: noTakeover, data: bin, binary: true, what: "a 2 KiB binary message, threshold 0" },
    { from: noTakeover, data: Buffer.from("hi"), binary: false, what: "a 2-byte text, threshold 0 (compressed anyway)" },
  ];
  const lines = [];
  for (const s of sends) {
    const wrote = await s.from.send(s.data, { binary: s.binary, compress: true });
    // A client frame carries a 4-byte mask: compressed, a 2 KiB message
    // is well under half of itself; a 2-byte one is still a valid (if
    // larger) deflate stream, so only the big ones are held to it.
    if (s.data.length >= 1024) {
      check(wrote < s.data.length / 2, `${s.from.name}: sent ${s.what}: ${wrote} bytes written for ${s.data.length}: ws did not compress it`);
    }
    const wire = await receiveAll(all, s.data, s.binary, `${s.what} from ${s.from.name}, back`);
    if (s.data.length >= 1024) checkWire(wire, deflaters, plain, s.data.length, `${s.what}, back`);
    lines.push(`${s.what}: ${wrote} B written, ${wire[plain.name]} B to the plain client`);
  }
  ok(`e. sent compressed and came back intact to all three (the plain client byte for byte): ${lines.join("; ")}`);

  progress.step = "f: a compressed message that inflates past -max-message";
  const bomb = Buffer.alloc(1 << 20, 0x61); // 1 MiB of "a": about 1 KB deflated
  const wrote = await noTakeover.send(bomb, { binary: false, compress: true });
  const closed = await withDeadline(noTakeover.closed, opt.wait, `close of ${noTakeover.name} after the bomb`);
  check(closed.code === 1009, `${noTakeover.name}: sent ${bomb.length} bytes deflated to ${wrote}: closed with ${closed.code} "${closed.reason}", want 1009`);
  check(noTakeover.messages.length === 0, `${noTakeover.name}: got a message back for the bomb`);
  const after = Buffer.from(document(1500, "f"));
  await publish(after, "application/json");
  await receiveAll([byDefault, plain], after, false, "a message published after the bomb");
  ok(`f. ${bomb.length} bytes deflated to ${wrote} on the wire: the sender was closed with 1009 "${closed.reason}"; the others carried on`);

  progress.step = "g: the json format, compressed";
  const jsonDeflate = await new Client("ws json (perMessageDeflate: true)", true, "channel=d&format=json").open();
  const jsonPlain = await new Client("ws json (perMessageDeflate: false)", false, "channel=d&format=json").open();
  const welcomes = [];
  for (const c of [jsonDeflate, jsonPlain]) {
    const w = await c.next("welcome");
    welcomes.push(JSON.parse(w.data.toString()));
    check(welcomes.at(-1).type === "welcome", `${c.name}: first message ${w.data.toString().slice(0, 200)}, want the welcome`);
    c.mark();
  }
  check(hasParam(jsonDeflate.answered, "server_no_context_takeover") && jsonPlain.answered === "",
    `json clients: answers ${JSON.stringify(jsonDeflate.answered)} and ${JSON.stringify(jsonPlain.answered)}`);
  const docG = document(2048, "g");
  await publish(docG, "application/json", "d");
  const got = [];
  for (const c of [jsonDeflate, jsonPlain]) {
    const m = await c.next("the message published on d");
    check(!m.isBinary, `${c.name}: a binary frame, want text`);
    const f = JSON.parse(m.data.toString());
    check(f.type === "message" && f.channel === "d" && f.seq > welcomes[0].seq && JSON.stringify(f.data) === docG,
      `${c.name}: got ${m.data.toString().slice(0, 200)}..., want {"type":"message","channel":"d",...,"data":<the ${docG.length}-byte document>}`);
    got.push(m);
  }
  check(Buffer.compare(got[0].data, got[1].data) === 0, "json clients: the deflate client's envelope differs from the plain one's");
  check(got[0].wire < got[0].data.length / 2 && got[1].wire >= got[1].data.length,
    `json clients: ${got[0].wire} B on the wire compressed, ${got[1].wire} B plain, for a ${got[0].data.length}-byte envelope`);
  ok(`g. json format on channel d: the same ${got[0].data.length}-byte envelope to both, ${got[0].wire} B on the wire compressed, ${got[1].wire} B plain`);

  progress.step = "close";
  await Promise.all([byDefault.close(), plain.close(), jsonDeflate.close(), jsonPlain.close()]);
  console.log("PASS: permessage-deflate with ws behaves as documented");
}

run(opt, main);
