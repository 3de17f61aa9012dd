// event-stream.mjs: a parser of the text/event-stream format, written
// from the WHATWG HTML standard for sse-resume.mjs (no npm package), and
// tested by event-stream.test.mjs (node --test).

// EventStreamParser is the event-stream format of the WHATWG HTML
// standard ("9.2.6 Interpreting an event stream"), fed decoded text in
// pieces of any size: lines end with CRLF, LF or CR (a CR at the end of a
// piece waits for the next one, which may start with its LF); a blank
// line dispatches the event; ":" starts a comment; "field: value" drops
// one space after the colon; data lines join with LF; id sets the last
// event id (unless it holds a NUL), kept by every later event; retry takes
// digits only; unknown fields are ignored; an event with no data is not
// dispatched (its id still counts); what is left when the stream ends
// without a blank line is discarded. It also notes what a strict client
// wants to know: whether each event named its own id.
export class EventStreamParser {
  constructor() {
    this.buf = ""; // text not yet split into lines
    this.bom = true; // a leading U+FEFF is still to be dropped
    this.data = null; // the data buffer, null before the first data line
    this.type = "";
    this.ownId = null; // the id field of the event being read, if any
    this.pending = 0; // characters of the event being read, line ends included
    this.lastEventId = "";
    this.retry = null;
    this.events = []; // dispatched, not yet taken
    this.comments = []; // comment texts, not yet taken
  }

  // push takes the next piece of text.
  push(text) {
    if (this.bom) {
      if (text === "") return;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      this.bom = false;
    }
    this.buf += text;
    const eol = /\r\n|\r|\n/g;
    let start = 0;
    for (let m; (m = eol.exec(this.buf)) !== null;) {
      if (m[0] === "\r" && m.index === this.buf.length - 1) break; // its LF may come next
      this.line(this.buf.slice(start, m.index));
      start = eol.lastIndex;
    }
    this.buf = this.buf.slice(start);
  }

  // end is the end of the stream; it returns how many characters of an
  // unfinished event it discarded, 0 if the stream ended on a boundary.
  end() {
    if (this.buf.endsWith("\r")) {
      this.line(this.buf.slice(0, -1));
      this.buf = "";
    }
    const discarded = this.pending + this.buf.length;
    this.buf = "";
    this.reset();
    return discarded;
  }

  reset() {
    this.data = null;
    this.type = "";
    this.ownId = null;
    this.pending = 0;
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    this.pending += line.length + 1;
    if (line[0] === ":") {
      this.comments.push(line.slice(1).replace(/^ /, ""));
      return;
    }
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    switch (field) {
      case "event":
        this.type = value;
        break;
      case "data":
        this.data = this.data === null ? value : `${this.data}\n${value}`;
        break;
      case "id":
        if (!value.includes("\0")) {
          this.lastEventId = value;
          this.ownId = value;
        }
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // ignored, as the format says
    }
  }

  dispatch() {
    const data = this.data;
    const type = this.type || "message";
    const ownId = this.ownId;
    this.reset();
    if (data === null) return; // nothing to dispatch: a comment, an id-only block
    this.events.push({ type, data, id: this.lastEventId, ownId });
  }
}
