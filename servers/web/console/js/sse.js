// Server-Sent Events, read from a fetch() body (EventSource cannot send the x-api-key header).
// The parser follows the WHATWG "event stream" rules that matter for genmesh's gateway: lines end
// in \n, \r\n or \r (a chunk may end between \r and \n), "data:" lines of one event join with \n,
// a leading space after the colon is dropped, ":" lines are comments, and an event is dispatched
// at a blank line. Chunks may split anywhere, even inside a UTF-8 character.

/** A push parser: feed it text, it calls onEvent({event, data, id}) for every complete event. */
export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.data = [];
    this.event = "";
    this.id = "";
    this.pendingCR = false;
  }

  push(text) {
    if (this.pendingCR && text.startsWith("\n")) text = text.slice(1); // \r\n split across chunks
    this.pendingCR = false;
    this.buffer += text;
    let start = 0;
    for (;;) {
      const cr = this.buffer.indexOf("\r", start);
      const lf = this.buffer.indexOf("\n", start);
      if (cr < 0 && lf < 0) break;
      let end;
      let next;
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        end = cr;
        if (cr + 1 === this.buffer.length) {
          next = cr + 1;
          this.pendingCR = true; // the \n may come with the next chunk
        } else {
          next = this.buffer[cr + 1] === "\n" ? cr + 2 : cr + 1;
        }
      } else {
        end = lf;
        next = lf + 1;
      }
      this.line(this.buffer.slice(start, end));
      start = next;
    }
    this.buffer = this.buffer.slice(start);
  }

  /** The stream ended: an event without its closing blank line is dropped, as the spec says. */
  end() {
    this.buffer = "";
    this.data = [];
    this.event = "";
  }

  line(line) {
    if (line === "") {
      if (this.data.length) this.onEvent({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
      this.data = [];
      this.event = "";
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.id = value;
  }
}

/** Yields each event's data, parsed as JSON, from a ReadableStream of bytes. */
export async function* readEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder(); // stream mode keeps a split UTF-8 character for the next chunk
  const ready = [];
  const parser = new SSEParser((message) => ready.push(message));
  let finished = false;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        finished = true;
        break;
      }
      parser.push(decoder.decode(value, { stream: true }));
      while (ready.length) yield JSON.parse(ready.shift().data);
    }
    parser.push(decoder.decode());
    parser.end();
    while (ready.length) yield JSON.parse(ready.shift().data);
  } finally {
    // A consumer that stops early closes the connection (the server then ends the call).
    if (!finished) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}
