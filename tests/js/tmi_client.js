// Drives tmi.js against a chatd edge for the test suite.
// Usage: node tmi_client.js PORT USERNAME TOKEN CHANNEL
// Prints one JSON event per line on stdout; reads `say TEXT` lines on stdin, and
// `call METHOD JSON-ARGS` to call a tmi.js method (ban, timeout, mods, ...) whose
// promise settles as a `result` or `rejected` event.
const tmi = require("tmi.js");
const readline = require("readline");

const [port, username, token, channel] = process.argv.slice(2);
// TMI_RECONNECT=1: behave like a long-running bot that reconnects (on RECONNECT or a drop).
const reconnect = process.env.TMI_RECONNECT === "1";
const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");

const client = new tmi.Client({
  options: { debug: false, skipUpdatingEmotesets: true },
  connection: { server: "127.0.0.1", port: Number(port), secure: false, reconnect, reconnectInterval: 200 },
  identity: { username, password: `oauth:${token}` },
  channels: [channel],
  logger: { info() {}, warn() {}, error() {} },
});

client.on("connected", (address, port) => emit({ event: "connected", address, port }));
client.on("join", (chan, user, self) => { if (self) emit({ event: "joined", channel: chan }); });
client.on("message", (chan, tags, message, self) =>
  emit({ event: "message", channel: chan, user: tags.username, displayName: tags["display-name"],
         userId: tags["user-id"], id: tags.id, message, self }));
client.on("notice", (chan, msgid, message) => emit({ event: "notice", channel: chan, msgid, message }));
client.on("clearchat", (chan) => emit({ event: "clearchat", channel: chan }));
client.on("timeout", (chan, user, reason, duration) => emit({ event: "timeout", channel: chan, user, duration }));
client.on("ban", (chan, user) => emit({ event: "ban", channel: chan, user }));
client.on("messagedeleted", (chan, user, message) => emit({ event: "messagedeleted", channel: chan, user, message }));
client.on("slowmode", (chan, enabled, length) => emit({ event: "slowmode", channel: chan, enabled, length }));
// Paid and community events, with the arguments tmi.js gives each (tags reduced to msg-id and id).
const notice = (event, chan, tags, fields) =>
  emit({ event, channel: chan, msgid: tags["msg-id"], id: tags.id, ...fields });
client.on("subscription", (chan, username, methods, message, tags) =>
  notice("subscription", chan, tags, { username, methods, message }));
client.on("resub", (chan, username, months, message, tags, methods) =>
  notice("resub", chan, tags, { username, months, message, methods }));
client.on("subgift", (chan, username, streakMonths, recipient, methods, tags) =>
  notice("subgift", chan, tags, { username, streakMonths, recipient, methods }));
client.on("submysterygift", (chan, username, count, methods, tags) =>
  notice("submysterygift", chan, tags, { username, count, methods }));
client.on("giftpaidupgrade", (chan, username, sender, tags) =>
  notice("giftpaidupgrade", chan, tags, { username, sender }));
client.on("raided", (chan, username, viewers, tags) => notice("raided", chan, tags, { username, viewers }));
client.on("cheer", (chan, tags, message) =>
  notice("cheer", chan, tags, { user: tags.username, bits: tags.bits, message }));
client.on("usernotice", (msgid, chan, tags, message) => notice("usernotice", chan, tags, { message }));
client.on("disconnected", (reason) => {
  emit({ event: "disconnected", reason });
  if (!reconnect) process.exit(0);
});
client.on("reconnect", () => emit({ event: "reconnecting" }));

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.startsWith("say ")) client.say(channel, line.slice(4)).catch((err) => emit({ event: "error", error: String(err) }));
  if (line.startsWith("call ")) {
    const [, method, args] = line.match(/^call (\w+) (.*)$/);
    client[method](...JSON.parse(args))
      .then((value) => emit({ event: "result", method, value }))
      .catch((error) => emit({ event: "rejected", method, error: String(error) }));
  }
  if (line === "quit") client.disconnect().finally(() => process.exit(0));
});
process.stdin.on("end", () => process.exit(0));

client.connect().catch((err) => { emit({ event: "error", error: String(err) }); process.exit(1); });
