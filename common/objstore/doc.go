// Package objstore turns a batch of sink.Message into the objects the object
// store sinks (S3, Azure Blob, GCS) write. The layout is the same for all
// three, so a consumer reads every bucket the same way; a sink only does the
// PUT of each Object (key, body, Content-Type, Content-Encoding).
//
// # Modes
//
// Batch mode (the default) writes one object per batch, or one per topic when
// the key template contains {topic}. The body is NDJSON, one line per message
// in batch order:
//
//	{"id":"...","topic":"...","received":"2024-03-05T07:08:09.123456789Z","device":"...","json":{"t":21.5}}
//
// The fields always appear in this order. "received" is RFC 3339 with
// nanoseconds, UTC. The last field holds the payload and is exactly one of:
//
//   - "json": the payload embedded as raw JSON, byte for byte, when it is valid
//     UTF-8, valid JSON and contains no '\n' or '\r' (so it cannot break the
//     line, and its exact bytes, whitespace included, sit between `"json":` and
//     the line's closing '}');
//   - "text": a JSON string, when the payload is other valid UTF-8 (also JSON
//     spread over several lines); an empty payload is "text":"";
//   - "base64": standard base64 with padding, for anything else.
//
// A topic that is not valid UTF-8 (MQTT forbids it, a lax broker may pass it)
// is written as "topic_base64" instead of "topic", so it too survives exactly.
// Decode restores every message with its payload byte for byte.
//
// The key is Prefix + the rendered template + ".ndjson", plus ".gz" with gzip
// (then the body is gzip and ContentEncoding is "gzip"). Content-Type is
// "application/x-ndjson".
//
// Message mode writes one object per message: the body is the payload
// unchanged (never gzipped), the key has no extension, and Content-Type is
// "application/json" for valid JSON, "text/plain; charset=utf-8" for other
// UTF-8 and "application/octet-stream" otherwise. The object's metadata
// (S3 user metadata, Blob metadata, GCS custom metadata) holds what the line
// holds besides the payload, under the same names: "id", "topic",
// "received" (in the line's format) and "device". S3 and Blob carry
// metadata in HTTP headers, which hold printable ASCII only, so each value
// is percent-encoded (RFC 3986), the same for all three stores: every byte
// outside '!' to '~' (0x21-0x7E: control bytes, space, anything not ASCII),
// and '%' and '~', becomes %XX (upper-case hex). A plain topic such as
// "sensors/temp" is unchanged; "café/a b" becomes "caf%C3%A9/a%20b"; a
// topic that is not UTF-8 stays exact. Percent-decoding (DecodeMetadata, or
// any URL path unescape) gives the original bytes. Names and values
// together stay within 2,048 bytes (MaxMetadataBytes, S3's limit): a longer
// topic is cut and ends in "~" and 16 hex digits of its SHA-256, as in keys
// (a bare '~' marks only that).
//
// # Keys
//
// Placeholders of the template:
//
//	{device}            the device id ("unknown-device" when empty)
//	{yyyy} {mm} {dd} {hh}  UTC date and hour the object's first message was received
//	{first} {last}      ids of the object's first and last message
//	{id}                the message's id (message mode only)
//	{topic}             the MQTT topic, escaped (see below)
//
// Defaults: "{device}/{yyyy}/{mm}/{dd}/{hh}/{first}-{last}" in batch mode and
// "{device}/{yyyy}/{mm}/{dd}/{hh}/{id}" in message mode. A template must name
// {first} (batch) or {id} (message; {first} is the same there), or one object
// would overwrite another; {id} is refused in batch mode, where an object
// holds many messages.
//
// Keys are deterministic: a batch sent again after a crash holds exactly the
// same messages (the pipeline guarantees it) and so overwrites the same
// objects instead of duplicating them. Ids never repeat, so keys of different
// batches never collide, across restarts too.
//
// Values are escaped so a key is plain ASCII that no SDK, console or URL
// normaliser rewrites: bytes other than A-Z a-z 0-9 . _ - become %XX
// (upper-case hex); in {topic} a '/' stays a '/', so topic levels become key
// "folders", while in {device} and ids it is escaped. A topic level "." or
// ".." becomes %2E or %2E%2E, since GCS refuses such names and URL clients
// collapse them. Percent-decoding an escaped value gives the original bytes.
// All three stores cap keys at 1024 bytes (MaxKeyBytes): when a long topic
// would exceed that, its escaped form is cut and followed by "~" and 16 hex
// digits of its SHA-256, which keeps keys distinct per topic and
// deterministic. The full topic is always in the body.
package objstore
