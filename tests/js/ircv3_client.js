// Drives irc-framework, a general IRCv3 client library, against a chatd edge (IRC over TCP).
// Usage: node ircv3_client.js PORT NICK TOKEN|- CHANNEL...
// It negotiates capabilities itself (CAP LS 302, then what it knows of what is offered);
// draft/chathistory is asked for on top. Prints one JSON event per line on stdout:
// `registered` (the capabilities it enabled), `joined`, `message` (as the library parsed it:
// server-time, msgid, the batch it came in), `batch` (a finished batch), `raw` (every line
// from the server, for what the library has no event for). Reads `raw LINE` and `quit` lines
// on stdin.
const { Client } = require("irc-framework");
const readline = require("readline");

const [port, nick, token, ...channels] = process.argv.slice(2);
const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");

const client = new Client();
client.requestCap("draft/chathistory");
client.on("registered", () => {
  emit({ event: "registered", caps: client.network.cap.enabled });
  for (const channel of channels) client.join(channel);
});
client.on("join", (event) => {
  if (event.nick === nick) emit({ event: "joined", channel: event.channel });
});
client.on("privmsg", (event) =>
  emit({ event: "message", channel: event.target, nick: event.nick, text: event.message, time: event.time,
         msgid: event.tags.msgid || null, batch: event.batch ? { id: event.batch.id, type: event.batch.type } : null }));
client.on("batch end", (batch) =>
  emit({ event: "batch", id: batch.id, type: batch.type, params: batch.params, size: batch.commands.length }));
client.on("raw", (event) => {
  if (event.from_server) emit({ event: "raw", line: event.line });
});
client.on("close", () => {
  emit({ event: "close" });
  process.exit(0);
});

client.connect({
  host: "127.0.0.1", port: Number(port), nick, username: nick, gecos: nick,
  password: token === "-" ? undefined : `oauth:${token}`, auto_reconnect: false, enable_echomessage: true,
});

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.startsWith("raw ")) client.raw(line.slice(4));
  else if (line === "quit") client.quit();
});
