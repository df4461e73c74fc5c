// Drives twurple (ApiClient, EventSubWsListener, ChatClient) against a chatd edge for the test suite.
// Usage: TWURPLE_MOCK_API_PORT=P node twurple_client.mjs CONFIG-JSON
//   CONFIG: {clientId, clientSecret?, token: {accessToken, refreshToken?, scope?}, chat?: {channel, port}}
//   Without clientSecret the token goes to a StaticAuthProvider, with it to a RefreshingAuthProvider
//   (intent 'chat'). `chat` starts a ChatClient on IRC over WebSocket at 127.0.0.1:port.
// Prints one JSON event per line on stdout; reads one JSON command per line on stdin:
//   {"op": "api", "seq": N, "call": "chat.getSettings", "args": [...], "asUser"?: id}
//                                                                      → result | rejected (raw Helix data)
//   {"op": "listen", "on": "onChannelBan", "args": [...]}              → subscribed, then eventsub events
//   {"op": "say", "seq": N, "channel": "...", "text": "..."}           → result | rejected
import net from "node:net";
import readline from "node:readline";
import { ApiClient } from "@twurple/api";
import { RefreshingAuthProvider, StaticAuthProvider } from "@twurple/auth";
import { ChatClient } from "@twurple/chat";
import { getRawData } from "@twurple/common";
import { EventSubWsListener } from "@twurple/eventsub-ws";

const config = JSON.parse(process.argv[2]);
const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");
// Helix and EventSub data as Twitch sent it (twurple's objects keep it under a symbol).
const raw = (value) =>
  Array.isArray(value) ? value.map(raw) : value instanceof Object ? getRawData(value) ?? value : value;
// twurple's log lines (reconnects among them) as events; debug and trace stay out.
const logger = { minLevel: "info", custom: (level, message) => emit({ event: "log", level, message }) };

let authProvider;
if (config.clientSecret) {
  authProvider = new RefreshingAuthProvider({ clientId: config.clientId, clientSecret: config.clientSecret });
  authProvider.onRefresh((userId, token) => emit({ event: "refreshed", userId, accessToken: token.accessToken }));
  const userId = await authProvider.addUserForToken(
    { expiresIn: null, obtainmentTimestamp: 0, ...config.token }, ["chat"]);
  emit({ event: "user", userId });
} else {
  authProvider = new StaticAuthProvider(config.clientId, config.token.accessToken, config.token.scope);
}
const api = new ApiClient({ authProvider, logger });

let listener;
function eventsub() {
  if (!listener) {
    listener = new EventSubWsListener({ apiClient: api, logger });
    listener.onSubscriptionCreateSuccess((sub) => emit({ event: "subscribed", id: sub.id }));
    listener.onSubscriptionCreateFailure((sub, error) =>
      emit({ event: "subscribe_failed", id: sub.id, error: String(error) }));
    listener.onUserSocketDisconnect((userId, error) => emit({ event: "socket_disconnected", error: String(error) }));
    listener.start();
  }
  return listener;
}

let chat;
if (config.chat) {
  // ChatClient has no port option; ws's createConnection (through connectionOptions.wsOptions) picks it.
  const { channel, port } = config.chat;
  chat = new ChatClient({
    authProvider, channels: [channel], hostName: "127.0.0.1", webSocket: true, ssl: false, logger,
    connectionOptions: { wsOptions: { createConnection: (options) => net.connect({ ...options, port }) } },
  });
  chat.onJoin((chan, user) => emit({ event: "joined", channel: chan, user }));
  chat.onMessage((chan, user, text, msg) =>
    emit({ event: "message", channel: chan, user, text, userId: msg.userInfo.userId }));
  chat.connect();
}

const settle = (seq, promise) => promise.then(
  (value) => emit({ event: "result", seq, value: raw(value) }),
  (error) => emit({ event: "rejected", seq, error: String(error), body: error.body }));

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const command = JSON.parse(line);
  if (command.op === "api") {
    const [group, method] = command.call.split(".");
    const run = (client) => client[group][method](...command.args);
    settle(command.seq, Promise.resolve().then(() => (command.asUser ? api.asUser(command.asUser, run) : run(api))));
  } else if (command.op === "listen") {
    eventsub()[command.on](...command.args, (event) => emit({ event: "eventsub", on: command.on, data: raw(event) }));
  } else if (command.op === "say") {
    settle(command.seq, chat.say(command.channel, command.text));
  }
});
process.stdin.on("end", () => process.exit(0));
emit({ event: "ready" });
