// Unit tests of the console's SSE parsing (servers/web/console/js/sse.js), run with node:test by
// tests/unit/test_console_js.py.
import assert from "node:assert/strict";
import { test } from "node:test";

import { SSEParser, readEvents } from "../../../servers/web/console/js/sse.js";

function parse(chunks) {
  const events = [];
  const parser = new SSEParser((event) => events.push(event));
  for (const chunk of chunks) parser.push(chunk);
  parser.end();
  return events;
}

function bytesStream(chunks) {
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(chunk);
      controller.close();
    },
  });
}

test("one data line per event, dispatched at the blank line", () => {
  const events = parse(['data: {"a": 1}\n\ndata: {"b": 2}\n\n']);
  assert.deepEqual(
    events.map((event) => event.data),
    ['{"a": 1}', '{"b": 2}'],
  );
  assert.equal(events[0].event, "message");
});

test("an event split at every possible point parses the same", () => {
  const text = 'data: {"job_id": "img-1", "queued": {"queue_position": 2}}\r\n\r\ndata: {"x": "y"}\n\n';
  const whole = parse([text]);
  for (let cut = 0; cut <= text.length; cut++) {
    assert.deepEqual(parse([text.slice(0, cut), text.slice(cut)]), whole, `cut at ${cut}`);
  }
  assert.equal(whole.length, 2);
});

test("CR, LF and CRLF line ends, a CRLF split between chunks", () => {
  assert.deepEqual(
    parse(["data: a\r", "\ndata: b\r\n\r", "\n"]).map((event) => event.data),
    ["a\nb"],
  );
  assert.deepEqual(
    parse(["data: a\r\rdata: b\n\n"]).map((event) => event.data),
    ["a", "b"],
  );
});

test("multi-line data, comments, event names, fields without a space", () => {
  const events = parse([": keep-alive\nevent: progress\ndata:first\ndata: second\nid: 7\n\n"]);
  assert.deepEqual(events, [{ event: "progress", data: "first\nsecond", id: "7" }]);
});

test("an event without its closing blank line is dropped at the end", () => {
  assert.deepEqual(parse(['data: {"a": 1}\n\ndata: {"cut": ']), [{ event: "message", data: '{"a": 1}', id: "" }]);
});

test("readEvents decodes UTF-8 split across chunks and parses JSON", async () => {
  const bytes = new TextEncoder().encode('data: {"delta": {"text": "héllo ✓"}}\n\ndata: {"result": {}}\n\n');
  const chunks = [];
  for (let i = 0; i < bytes.length; i += 3) chunks.push(bytes.slice(i, i + 3)); // splits the multi-byte characters
  const events = [];
  for await (const event of readEvents(bytesStream(chunks))) events.push(event);
  assert.deepEqual(events, [{ delta: { text: "héllo ✓" } }, { result: {} }]);
});

test("readEvents: a consumer that stops early cancels the stream", async () => {
  let cancelled = false;
  const body = new ReadableStream({
    pull(controller) {
      controller.enqueue(new TextEncoder().encode('data: {"n": 1}\n\n'));
    },
    cancel() {
      cancelled = true;
    },
  });
  for await (const event of readEvents(body)) {
    assert.deepEqual(event, { n: 1 });
    break;
  }
  assert.equal(cancelled, true);
});
