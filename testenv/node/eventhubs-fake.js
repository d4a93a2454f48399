#!/usr/bin/env node
// A fake Azure Event Hubs namespace with one event hub, for tests driven by the
// real azeventhubs Go SDK (connection string with UseDevelopmentEmulator=true:
// plain AMQP, SASL ANONYMOUS, claims-based auth that accepts any token).
// The one port also serves AMQP over WebSockets (subprotocol AMQPWSB10 on
// /$servicebus/websocket, as Event Hubs does on 443): the first bytes of a
// connection tell the AMQP protocol header from an HTTP upgrade request.
//
//   node eventhubs-fake.js --port P [--host 127.0.0.1] [--hub NAME] [--partitions N]
//                          [--max-message-size BYTES] [--data FILE]
//                          [--tls-cert FILE --tls-key FILE] [--token-key FILE --token-audience AUD]
//
// With --tls-cert and --tls-key every connection is TLS, as Event Hubs' ports
// 5671 (amqps) and 443 (wss) are. With --token-key (the PEM public key of a
// token issuer, testenv/entrafake's) each $cbs put-token must carry a JWT
// (type jwt) that key signed (RS256), for --token-audience, unexpired, or it
// is answered 401; a send on a connection whose last accepted token has
// expired detaches its link with amqp:link:detach-forced, as the service
// drops the links of a claim that was not renewed. Each put-token's outcome is logged, never
// the token (an accepted one by the first 16 hex digits of its SHA-256).
//
// It proves the SDK's wire behaviour (batches, partition routing, read-back with
// start positions, management reads), not service quotas or authorization.
// Events live in memory; with --data they are also appended to FILE and read
// back at start, so a restarted fake still has them.
'use strict';

const fs = require('fs');
const crypto = require('crypto');
const net = require('net');
const tls = require('tls');
const rhea = require('rhea');
const Connection = require('rhea/lib/connection.js');
const types = rhea.types;

const opts = parseArgs(process.argv.slice(2));
const BATCH_FORMAT = 0x80013700; // the SDK's batch: each data section is one encoded message
const SECTION = { header: 0x70, deliveryAnnotations: 0x71, annotations: 0x72, data: 0x75 };
// Section descriptors may also be sent in their symbolic form.
const SYMBOLIC = {
  'amqp:header:list': 0x70, 'amqp:delivery-annotations:map': 0x71, 'amqp:message-annotations:map': 0x72,
  'amqp:properties:list': 0x73, 'amqp:application-properties:map': 0x74, 'amqp:data:binary': 0x75,
  'amqp:amqp-sequence:list': 0x76, 'amqp:value:*': 0x77, 'amqp:footer:map': 0x78,
};
const X_OPT = ['x-opt-sequence-number', 'x-opt-offset', 'x-opt-enqueued-time', 'x-opt-partition-key'];

function parseArgs(argv) {
  const o = { host: '127.0.0.1', hub: 'hub', partitions: 4, 'max-message-size': 1048576 };
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || argv[i + 1] === undefined) usage(`bad argument ${argv[i]}`);
    o[argv[i].slice(2)] = argv[i + 1];
  }
  for (const k of ['port', 'partitions', 'max-message-size']) {
    o[k] = Number(o[k]);
    if (!Number.isInteger(o[k]) || o[k] <= 0) usage(`--${k} must be a positive integer`);
  }
  return o;
}

function usage(why) {
  console.error(`eventhubs-fake: ${why}\nusage: eventhubs-fake.js --port P [--host H] [--hub NAME] ` +
    '[--partitions N] [--max-message-size BYTES] [--data FILE]');
  process.exit(2);
}

// ---- storage: per partition, events in order; offset = bytes stored before the event.
const createdAt = Date.now();
const partitions = Array.from({ length: opts.partitions }, () => ({ events: [], nextOffset: 0 }));

function store(p, raw, partitionKey, time, persist) {
  const part = partitions[p];
  const ev = { seq: part.events.length, offset: part.nextOffset, time, partitionKey, raw };
  part.events.push(ev);
  part.nextOffset += raw.length;
  if (persist && opts.data) {
    fs.appendFileSync(opts.data, JSON.stringify({ p, k: partitionKey, t: time, raw: raw.toString('base64') }) + '\n');
  }
  return ev;
}

if (opts.data && fs.existsSync(opts.data)) {
  for (const line of fs.readFileSync(opts.data, 'utf8').split('\n')) {
    if (!line) continue;
    const r = JSON.parse(line);
    store(r.p, Buffer.from(r.raw, 'base64'), r.k, r.t, false);
  }
}

// Splits an encoded AMQP message into its sections, keeping each one's exact bytes
// so bodies and application properties go back out byte for byte (decoding and
// re-encoding with rhea would turn an int64 property 5 into a small int).
function sections(buf) {
  const reader = new types.Reader(buf);
  const out = [];
  while (reader.remaining()) {
    const start = reader.position;
    const typed = reader.read();
    const d = typed.descriptor && typed.descriptor.value;
    out.push({ code: typeof d === 'number' ? d : SYMBOLIC[d], raw: buf.subarray(start, reader.position), typed });
  }
  return out;
}

function encode(typed) {
  const w = new types.Writer();
  w.write(typed);
  return w.toBuffer();
}

// The event as a consumer sees it: the stored message with the service's
// annotations added (replacing any the producer set) and delivery annotations dropped.
function deliveryBytes(ev) {
  const secs = sections(ev.raw);
  const ann = secs.find((s) => s.code === SECTION.annotations);
  const items = [];
  if (ann) {
    const kv = ann.typed.value;
    for (let i = 0; i + 1 < kv.length; i += 2) {
      if (!X_OPT.includes(String(kv[i].value))) items.push(kv[i], kv[i + 1]);
    }
  }
  items.push(types.wrap_symbol('x-opt-sequence-number'), types.Long(ev.seq));
  items.push(types.wrap_symbol('x-opt-offset'), types.wrap_string(String(ev.offset)));
  items.push(types.wrap_symbol('x-opt-enqueued-time'), types.wrap_timestamp(ev.time));
  if (ev.partitionKey !== undefined && ev.partitionKey !== null) {
    items.push(types.wrap_symbol('x-opt-partition-key'), types.wrap_string(ev.partitionKey));
  }
  const annBytes = encode(types.described(types.wrap_ulong(SECTION.annotations), types.Map32(items)));
  const parts = [];
  for (const s of secs.filter((s) => s.code === SECTION.header)) parts.push(s.raw);
  parts.push(annBytes);
  for (const s of secs.filter((s) => s.code > SECTION.annotations)) parts.push(s.raw);
  return Buffer.concat(parts);
}

// Same key, same partition, always (the real service uses its own hash).
function partitionForKey(key) {
  return crypto.createHash('sha256').update(key).digest().readUInt32BE(0) % opts.partitions;
}

// ---- consumers: a server-side sender per client receiver, fed as credit allows.
const consumers = new Set();

function pump(c) {
  const events = partitions[c.partition].events;
  while (c.next < events.length && c.link.sendable()) {
    const d = c.link.send(deliveryBytes(events[c.next++]), undefined, 0);
    d.settled = true; // pre-settled: the SDK never settles what it reads
  }
}

// Translates the SDK's selector, e.g. "amqp.annotation.x-opt-offset > '123'", into
// the index of the first event to deliver.
function startIndex(partition, selector) {
  const events = partitions[partition].events;
  const m = /amqp\.annotation\.x-opt-(offset|sequence-number|enqueued-time)\s*(>=|>)\s*'([^']*)'/i.exec(selector || '');
  if (!m) return events.length; // no filter: only new events, like the service's default
  const [, field, op, value] = m;
  if (value === '@latest') return events.length;
  const limit = Number(value);
  const key = { offset: 'offset', 'sequence-number': 'seq', 'enqueued-time': 'time' }[field.toLowerCase()];
  const i = events.findIndex((ev) => (op === '>=' ? ev[key] >= limit : ev[key] > limit));
  return i < 0 ? events.length : i;
}

function selectorOf(source) {
  const filter = (source && source.filter) || {};
  for (const v of Object.values(filter)) {
    const s = v && typeof v === 'object' && 'value' in v ? v.value : v;
    if (typeof s === 'string' && s.includes('amqp.annotation.')) return s;
  }
  return undefined;
}

// ---- addresses
function parsePartition(s) {
  const n = Number(s);
  return /^\d+$/.test(s) && n < opts.partitions ? n : undefined;
}

function route(address) {
  const hub = opts.hub;
  if (address === '$cbs') return { kind: 'rpc' };
  // Producers use the namespace's $management, partition clients the hub's.
  if (address === '$management' || address === `${hub}/$management`) return { kind: 'rpc' };
  if (address === hub) return { kind: 'hub' };
  let m = new RegExp(`^${reEscape(hub)}/Partitions/([^/]+)$`, 'i').exec(address);
  if (m && parsePartition(m[1]) !== undefined) return { kind: 'partition', partition: parsePartition(m[1]) };
  m = new RegExp(`^${reEscape(hub)}/ConsumerGroups/[^/]+/Partitions/([^/]+)$`, 'i').exec(address);
  if (m && parsePartition(m[1]) !== undefined) return { kind: 'consumer', partition: parsePartition(m[1]) };
  return undefined;
}

function reEscape(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// Echo the client's terminus and settle modes: go-amqp rejects an attach whose
// settle modes differ from what it asked for, and rhea's defaults do differ.
function echoAttach(link) {
  const remote = link.remote.attach;
  link.local.attach.source = remote.source ? remote.source.described() : null;
  link.local.attach.target = remote.target ? remote.target.described() : null;
  link.local.attach.snd_settle_mode = remote.snd_settle_mode;
  link.local.attach.rcv_settle_mode = remote.rcv_settle_mode;
}

// A refused attach carries neither source nor target, then detaches with the error
// (what go-amqp waits for to report it).
function refuse(link, description) {
  link.local.attach.source = null;
  link.local.attach.target = null;
  link.close({ condition: 'amqp:not-found', description });
}

// ---- request/response ($cbs put-token, $management READ)
const replyLinks = new Map(); // reply-to address -> server sender on that connection

function respond(request, status, description, body) {
  const link = replyLinks.get(request.reply_to);
  if (!link) return console.error(`no reply link for ${request.reply_to}`);
  link.send({
    correlation_id: request.message_id,
    application_properties: { 'status-code': types.wrap_int(status), 'status-description': description },
    body,
  });
}

// ---- claims-based authorization: with --token-key, the tokens are checked.
const tokenKey = opts['token-key'] ? crypto.createPublicKey(fs.readFileSync(opts['token-key'])) : null;
const claimExpiry = new WeakMap(); // connection -> expiry of its last accepted token (ms)

// checkToken returns why a put-token's token is refused, or its expiry (ms).
function checkToken(req) {
  const ap = req.application_properties || {};
  if (ap.type !== 'jwt') return { why: `token type ${ap.type}, want jwt` };
  const parts = String(req.body).split('.');
  if (parts.length !== 3) return { why: 'not a JWT' };
  let claims;
  try {
    const ok = crypto.verify('sha256', Buffer.from(parts[0] + '.' + parts[1]), tokenKey, Buffer.from(parts[2], 'base64url'));
    if (!ok) return { why: 'the signature does not verify' };
    claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
  } catch (err) {
    return { why: `not a JWT: ${err.message}` };
  }
  if (claims.aud !== opts['token-audience']) return { why: `audience ${claims.aud}, want ${opts['token-audience']}` };
  if (Date.now() > claims.exp * 1000) return { why: 'the token has expired' };
  return { exp: claims.exp * 1000 };
}

function putToken(req, connection) {
  if (!tokenKey) return respond(req, 202, 'Accepted'); // any token will do
  const r = checkToken(req);
  if (r.why) {
    console.log(`eventhubs-fake: put-token refused: ${r.why}`);
    return respond(req, 401, `Unauthorized: ${r.why}`);
  }
  claimExpiry.set(connection, r.exp);
  // A fingerprint, not the token: a test matches it with the tokens issued.
  const fp = crypto.createHash('sha256').update(String(req.body)).digest('hex').slice(0, 16);
  console.log(`eventhubs-fake: put-token accepted, valid ${((r.exp - Date.now()) / 1000).toFixed(1)}s, token sha256:${fp}`);
  respond(req, 202, 'Accepted');
}

function handleRPC(address, req, connection) {
  const ap = req.application_properties || {};
  if (address === '$cbs') return putToken(req, connection);
  if (ap.operation !== 'READ') return respond(req, 400, `unsupported operation ${ap.operation}`);
  if (ap.name !== opts.hub) return respond(req, 404, `no event hub ${ap.name}`);
  // Replies are maps with string keys; the SDK insists on these exact AMQP types.
  if (ap.type === 'com.microsoft:eventhub') {
    return respond(req, 200, 'OK', {
      name: opts.hub,
      type: ap.type,
      created_at: types.wrap_timestamp(createdAt),
      partition_count: types.wrap_int(opts.partitions),
      partition_ids: types.wrap_array(partitions.map((_, i) => String(i)), 0xa1),
      georeplication_factor: types.wrap_int(1),
    });
  }
  if (ap.type === 'com.microsoft:partition') {
    const p = parsePartition(String(ap.partition));
    if (p === undefined) return respond(req, 404, `no partition ${ap.partition}`);
    const events = partitions[p].events;
    const last = events[events.length - 1];
    return respond(req, 200, 'OK', {
      name: opts.hub,
      type: ap.type,
      partition: String(p),
      begin_sequence_number: types.Long(0),
      last_enqueued_sequence_number: types.Long(last ? last.seq : -1),
      last_enqueued_offset: last ? String(last.offset) : '-1',
      last_enqueued_time_utc: types.wrap_timestamp(last ? last.time : 0),
      is_partition_empty: !last,
    });
  }
  return respond(req, 400, `unsupported type ${ap.type}`);
}

// ---- producing: store each event of a batch in its partition, then accept.
let roundRobin = 0;

function handleSend(target, ctx) {
  if (tokenKey && !(Date.now() <= (claimExpiry.get(ctx.connection) || 0))) {
    // As the service does when a claim expires: the link is detached
    // (retryable; the client attaches again after putting a new token).
    console.log('eventhubs-fake: link detached: no unexpired token on this connection');
    return ctx.receiver.close({ condition: 'amqp:link:detach-forced',
      description: "Unauthorized access. 'Send' claim(s) are required to perform this operation: the token put on $cbs for this connection has expired" });
  }
  const raw = Buffer.isBuffer(ctx.message) ? ctx.message : rhea.message.encode(ctx.message);
  if (raw.length > opts['max-message-size']) {
    return ctx.delivery.reject({ condition: 'amqp:link:message-size-exceeded', description: `${raw.length} bytes` });
  }
  let events = [raw];
  let key;
  const batchSections = sections(raw);
  const ann = batchSections.find((s) => s.code === SECTION.annotations);
  if (ann) key = types.unwrap_map_simple(ann.typed)['x-opt-partition-key'];
  if (ctx.delivery.format === BATCH_FORMAT) {
    events = batchSections.filter((s) => s.code === SECTION.data).map((s) => Buffer.from(s.typed.value));
  }
  let p = target.partition;
  if (p === undefined) p = key !== undefined ? partitionForKey(String(key)) : roundRobin++ % opts.partitions;
  const now = Date.now();
  for (const e of events) store(p, e, key === undefined ? undefined : String(key), now, true);
  ctx.delivery.accept();
  for (const c of consumers) if (c.partition === p) pump(c);
}

// ---- server
const container = rhea.create_container({ id: 'eventhubs-fake' });

container.on('receiver_open', (ctx) => { // the client sends on this link
  const link = ctx.receiver;
  const address = link.remote.attach.target && link.remote.attach.target.address;
  const target = route(address);
  if (!target || target.kind === 'consumer') return refuse(link, `cannot send to ${address}`);
  echoAttach(link);
  if (target.kind !== 'rpc') link.local.attach.max_message_size = opts['max-message-size'];
  link.on('message', (mctx) => {
    try {
      if (target.kind === 'rpc') {
        handleRPC(address, mctx.message, mctx.connection);
        mctx.delivery.accept();
      } else {
        handleSend(target, mctx);
      }
    } catch (err) {
      console.error(err);
      mctx.delivery.reject({ condition: 'amqp:internal-error', description: String(err.message) });
    }
  });
});

container.on('sender_open', (ctx) => { // the client receives on this link
  const link = ctx.sender;
  const source = link.remote.attach.source;
  const from = route(source && source.address);
  if (!from || (from.kind !== 'rpc' && from.kind !== 'consumer')) {
    return refuse(link, `cannot receive from ${source && source.address}`);
  }
  echoAttach(link);
  if (from.kind === 'rpc') {
    const replyTo = link.remote.attach.target.address;
    replyLinks.set(replyTo, link);
    link.on('sender_close', () => replyLinks.delete(replyTo));
    return;
  }
  const c = { link, partition: from.partition, next: startIndex(from.partition, selectorOf(source)) };
  consumers.add(c);
  link.on('sendable', () => pump(c));
  link.on('sender_close', () => consumers.delete(c));
});

// A client going away (or being killed by a test) is routine, not fatal.
function forget(ctx) {
  for (const c of consumers) if (c.link.connection === ctx.connection) consumers.delete(c);
  for (const [k, l] of replyLinks) if (l.connection === ctx.connection) replyLinks.delete(k);
}
container.on('disconnected', forget);
container.on('connection_close', forget);
container.on('error', (err) => console.error('amqp error:', err && err.message));

const server = opts['tls-cert']
  ? tls.createServer({ cert: fs.readFileSync(opts['tls-cert']), key: fs.readFileSync(opts['tls-key']) }, (socket) => sniff(socket))
  : net.createServer((socket) => sniff(socket));
server.on('tlsClientError', (err) => console.log(`eventhubs-fake: TLS handshake failed: ${err.message}`));
server.listen({ host: opts.host, port: opts.port });

// sniff reads a connection's first bytes: the AMQP protocol header goes to
// rhea as is; an HTTP request must be a WebSocket upgrade.
function sniff(socket) {
  let buf = Buffer.alloc(0);
  const onData = (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    if (buf.length < 4) return;
    if (buf.subarray(0, 4).toString('latin1') === 'AMQP') {
      socket.removeListener('data', onData);
      console.log(`eventhubs-fake: amqp connection from ${socket.remotePort}`);
      new Connection({ autoaccept: false }, container).accept(socket);
      socket.emit('data', buf);
      return;
    }
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) {
      if (buf.length > 16384) socket.destroy();
      return;
    }
    socket.removeListener('data', onData);
    upgrade(socket, buf.subarray(0, end).toString('latin1'), buf.subarray(end + 4));
  };
  socket.on('data', onData);
  socket.on('error', () => {});
}

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const WS_PROTOCOL = 'AMQPWSB10';

function httpError(socket, status, why) {
  console.log(`eventhubs-fake: websocket upgrade refused: ${status} ${why}`);
  socket.end(`HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(why)}\r\nConnection: close\r\n\r\n${why}`);
}

// upgrade answers a WebSocket handshake (RFC 6455) and hands the connection
// to rhea as a WebSocket.
function upgrade(socket, head, rest) {
  const [requestLine, ...lines] = head.split('\r\n');
  const [method, path] = requestLine.split(' ');
  const h = {};
  for (const l of lines) {
    const i = l.indexOf(':');
    if (i > 0) h[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  if (method !== 'GET' || (h.upgrade || '').toLowerCase() !== 'websocket' || !h['sec-websocket-key']) {
    return httpError(socket, '400 Bad Request', 'neither AMQP nor a WebSocket upgrade');
  }
  if (path !== '/$servicebus/websocket') return httpError(socket, '404 Not Found', `no WebSocket endpoint at ${path}`);
  const protocols = (h['sec-websocket-protocol'] || '').split(',').map((p) => p.trim());
  if (!protocols.includes(WS_PROTOCOL)) return httpError(socket, '400 Bad Request', `subprotocol ${WS_PROTOCOL} required`);
  const accept = crypto.createHash('sha1').update(h['sec-websocket-key'] + WS_GUID).digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: ${WS_PROTOCOL}\r\n\r\n`);
  console.log(`eventhubs-fake: websocket connection from ${socket.remotePort}`);
  const ws = wsEndpoint(socket);
  container.websocket_accept(ws, { autoaccept: false });
  ws.feed(rest);
}

// wsEndpoint is the little of the npm 'ws' socket that rhea's wrapper uses
// (send, close, onmessage, onclose, onerror), over RFC 6455 framing: client
// frames are masked, server frames are not; AMQP travels in binary frames.
function wsEndpoint(socket) {
  let buf = Buffer.alloc(0);
  let closed = false;
  const frame = (op, data) => {
    let h;
    if (data.length < 126) h = Buffer.from([0x80 | op, data.length]);
    else if (data.length < 65536) { h = Buffer.alloc(4); h[0] = 0x80 | op; h[1] = 126; h.writeUInt16BE(data.length, 2); }
    else { h = Buffer.alloc(10); h[0] = 0x80 | op; h[1] = 127; h.writeBigUInt64BE(BigInt(data.length), 2); }
    return Buffer.concat([h, data]);
  };
  const ws = {
    url: `websocket from ${socket.remotePort}`,
    onmessage: null, onclose: null, onerror: null,
    send(data) { if (!closed) socket.write(frame(0x2, Buffer.from(data))); },
    close() {
      if (closed) return;
      closed = true;
      socket.end(frame(0x8, Buffer.from([0x03, 0xe8]))); // 1000: normal closure
    },
    feed(chunk) {
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
      for (;;) {
        if (buf.length < 2) return;
        const op = buf[0] & 0x0f;
        let len = buf[1] & 0x7f;
        let off = 2;
        if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
        else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
        if (!(buf[1] & 0x80)) { socket.destroy(); return fail(new Error('an unmasked client frame')); }
        if (buf.length < off + 4 + len) return;
        const key = buf.subarray(off, off + 4);
        const payload = Buffer.from(buf.subarray(off + 4, off + 4 + len));
        for (let i = 0; i < len; i++) payload[i] ^= key[i & 3];
        buf = buf.subarray(off + 4 + len);
        switch (op) {
          case 0x0: case 0x2: if (payload.length && ws.onmessage) ws.onmessage({ data: payload }); break;
          case 0x8: ws.close(); break;
          case 0x9: if (!closed) socket.write(frame(0xa, payload)); break;
          case 0xa: break;
          default: socket.destroy(); return fail(new Error(`websocket opcode ${op}: AMQP needs binary frames`));
        }
      }
    },
  };
  const fail = (err) => { if (ws.onerror) ws.onerror(err); };
  socket.on('data', (chunk) => ws.feed(chunk));
  socket.on('close', () => { closed = true; if (ws.onclose) ws.onclose(); });
  socket.on('error', fail);
  return ws;
}

server.on('listening', () => console.log(`eventhubs-fake: hub ${opts.hub}, ${opts.partitions} partitions, ` +
  `max message ${opts['max-message-size']} bytes, listening on ${opts.host}:${opts.port}`));
server.on('error', (err) => { console.error(`eventhubs-fake: ${err.message}`); process.exit(1); });
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
