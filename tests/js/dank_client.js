// Drives dank-twitch-irc against a chatd edge (IRC over plain TCP) for the test suite.
// Usage: node dank_client.js PORT USERNAME TOKEN CHANNEL
// Prints one JSON event per line on stdout; reads `say TEXT` lines on stdin, each
// answered by a `said` or `say_failed` event (numbered by `seq`, from 1) once
// client.say()'s promise settles, and `quit`.
//
// Note: client.say() never uses a connection that has joined the channel; dank-twitch-irc
// opens a second connection for it (after its 2 s connection rate limit) and sends the
// PRIVMSG right behind CAP/PASS/NICK, then waits 2 s for USERSTATE #channel (or a NOTICE
// #channel with a refusal msg-id such as msg_banned or msg_duplicate).
const { ChatClient } = require("dank-twitch-irc");
const readline = require("readline");

const [port, username, token, channel] = process.argv.slice(2);
const channelName = channel.replace(/^#/, "");
const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");
// The error and its causes, outermost first: dank-twitch-irc wraps the server's line.
const describe = (error) => {
  const chain = [];
  for (let e = error; e != null; e = e.cause) chain.push({ type: e.constructor.name, message: e.message });
  return { error: String(error), type: error.constructor.name, causes: chain };
};

const client = new ChatClient({
  username,
  password: `oauth:${token}`,
  connection: { type: "tcp", host: "127.0.0.1", port: Number(port), secure: false },
  // say() rejections are reported below; this only silences the unhandled-rejection warnings.
  ignoreUnhandledPromiseRejections: true,
});

// DANK_TRACE=1: every line sent and received, on stderr.
if (process.env.DANK_TRACE === "1") {
  client.on("rawCommmand", (line) => process.stderr.write(`> ${line}\n`)); // sic: the library's event name
  client.on("message", (msg) => process.stderr.write(`< ${msg.rawSource}\n`));
}
client.on("ready", () => emit({ event: "ready" }));
client.on("JOIN", (msg) => {
  if (msg.joinedUsername === username) emit({ event: "joined", channel: `#${msg.channelName}` });
});
client.on("PRIVMSG", (msg) =>
  emit({ event: "message", channel: `#${msg.channelName}`, user: msg.senderUsername, displayName: msg.displayName,
         userId: msg.senderUserID, id: msg.messageID, message: msg.messageText }));
client.on("NOTICE", (msg) =>
  emit({ event: "notice", channel: msg.channelName ? `#${msg.channelName}` : null, msgid: msg.messageID,
         message: msg.messageText }));
// Every failed operation is also emitted here; without a listener EventEmitter would throw.
client.on("error", (error) => emit({ event: "client_error", ...describe(error) }));
client.on("close", (error) => {
  emit({ event: "close", error: error ? String(error) : null });
  process.exit(0);
});

let says = 0;
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.startsWith("say ")) {
    const text = line.slice(4);
    const seq = ++says; // the n-th say command, so repeated texts can be told apart
    const started = Date.now();
    client.say(channelName, text).then(
      () => emit({ event: "said", seq, text, ms: Date.now() - started }),
      (error) => emit({ event: "say_failed", seq, text, ms: Date.now() - started, ...describe(error) }),
    );
  }
  if (line === "quit") {
    client.close();
  }
});
process.stdin.on("end", () => process.exit(0));

client.connect();
client.join(channelName).then(
  () => emit({ event: "join_resolved", channel: `#${channelName}` }),
  (error) => emit({ event: "join_failed", channel: `#${channelName}`, ...describe(error) }),
);
