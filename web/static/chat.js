// The chat page: IRC over WebSocket to the edge that served it, history from
// /api/v2/recent-messages, moderation through Helix. Nothing else.
import { actionText, parse } from "./irc.js";
import { badgeElement, nameColor } from "./look.js";

const MAX_MESSAGES = 300; // kept on the page, as Twitch keeps 150
const HISTORY_LIMIT = 100;
const TIMEOUT_SECONDS = 600;
const ICONS = {
  delete: "M6 2h8v2h4v2H2V4h4zM4 7h12l-1 11H5z",
  timeout: "M10 2a8 8 0 110 16 8 8 0 010-16zm-1 3v6l5 3 1-2-4-2V5z",
  ban: "M10 2a8 8 0 110 16 8 8 0 010-16zM5.5 6.9l7.6 7.6A5.5 5.5 0 005.5 6.9zm9 6.2L6.9 5.5a5.5 5.5 0 017.6 7.6z",
};

const $ = (id) => document.getElementById(id);
const store = window.sessionStorage;

const state = {
  ws: null,
  channel: "", // "#name"
  token: "",
  identity: null, // {login, user_id, client_id} from /oauth2/validate
  nick: "",
  roomId: "",
  userState: {},
  joined: false,
  wanted: false, // stay connected (reconnect when the socket drops)
  retry: 0,
  pending: [], // chat this page sent, waiting for its USERSTATE or NOTICE
  seen: new Set(), // message ids shown: history and live never show one twice
  lastTs: 0,
  lastId: "",
  buffer: null, // live lines held while history loads
  reply: null, // {id, login, text} being replied to
  sinceHistory: false, // ask history for what was missed (a reconnect)
};

// ---------------------------------------------------------------- rendering

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function icon(path) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 20 20");
  svg.setAttribute("aria-hidden", "true");
  const shape = document.createElementNS("http://www.w3.org/2000/svg", "path");
  shape.setAttribute("d", path);
  shape.setAttribute("fill-rule", "evenodd");
  svg.append(shape);
  return svg;
}

const list = $("messages");

function atBottom() {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

function append(node) {
  const stick = atBottom();
  list.append(node);
  while (list.children.length > MAX_MESSAGES) list.firstElementChild.remove();
  if (stick) list.scrollTop = list.scrollHeight;
  else $("more").hidden = false;
}

function system(text, className = "system") {
  const node = el("div", `msg ${className}`, text);
  append(node);
  return node;
}

function timeOf(tags) {
  const ms = Number(tags["tmi-sent-ts"] || tags["rm-received-ts"] || Date.now());
  return new Date(ms).toTimeString().slice(0, 5);
}

// Text with Twitch's `emotes` tag (code point ranges) shown as emotes, and links made links.
function richText(text, emotes) {
  const fragment = document.createDocumentFragment();
  const chars = Array.from(text);
  const ranges = [];
  for (const spec of (emotes || "").split("/")) {
    const [id, positions] = spec.split(":");
    if (!positions) continue;
    for (const range of positions.split(",")) {
      const [start, end] = range.split("-").map(Number);
      if (end >= start && end < chars.length) ranges.push({ id, start, end });
    }
  }
  ranges.sort((a, b) => a.start - b.start);
  let at = 0;
  const plain = (part) => {
    for (const word of part.split(/(\s+)/)) {
      if (/^https?:\/\/\S+$/.test(word)) {
        const link = el("a", "", word);
        link.href = word;
        link.rel = "noopener noreferrer";
        link.target = "_blank";
        fragment.append(link);
      } else if (word) fragment.append(word);
    }
  };
  for (const range of ranges) {
    if (range.start < at) continue;
    plain(chars.slice(at, range.start).join(""));
    const name = chars.slice(range.start, range.end + 1).join("");
    const emote = el("span", "emote", name);
    emote.title = name;
    emote.dataset.emoteId = range.id;
    fragment.append(emote);
    at = range.end + 1;
  }
  plain(chars.slice(at).join(""));
  return fragment;
}

function canModerate(login) {
  const me = state.identity;
  if (!me || login === me.login) return false;
  const badges = state.userState.badges || "";
  const broadcaster = state.channel === `#${me.login}`;
  if (login === state.channel.slice(1)) return false; // nobody moderates the broadcaster
  return broadcaster || state.userState.mod === "1" || badges.includes("moderator/");
}

function toolButton(kind, title, action) {
  const button = el("button", `tool ${kind}`);
  button.type = "button";
  button.title = title;
  button.setAttribute("aria-label", title);
  button.append(icon(ICONS[kind]));
  button.addEventListener("click", action);
  return button;
}

function chatMessage(message, options = {}) {
  const tags = message.tags;
  const id = tags.id || "";
  if (id) {
    if (state.seen.has(id)) return null;
    state.seen.add(id);
  }
  const login = message.nick || tags.login || "";
  const text = message.params[1] || "";
  const action = actionText(text);
  const node = el("div", "msg chat");
  node.dataset.id = id;
  node.dataset.login = login;
  node.dataset.userId = tags["user-id"] || "";
  if (options.historical || tags.historical === "1") node.classList.add("historical");
  if (options.own) node.classList.add("own");
  if (state.identity && login !== state.identity.login
      && new RegExp(`\\b@?${state.identity.login}\\b`, "i").test(text)) node.classList.add("mention");

  if (tags["reply-parent-msg-id"]) {
    const parent = list.querySelector(`.msg[data-id="${CSS.escape(tags["reply-parent-msg-id"])}"]`);
    const who = tags["reply-parent-user-login"] || parent?.dataset.login || "";
    const body = tags["reply-parent-msg-body"] || parent?.querySelector(".text")?.textContent || "";
    node.append(el("span", "reply-to", who ? `Replying to @${who}: ${body}` : "Replying to a message"));
  }
  node.append(el("span", "time", timeOf(tags)));
  if (id && canModerate(login)) {
    const tools = el("span", "tools");
    tools.append(
      toolButton("delete", "Delete message", () => moderate("delete", node)),
      toolButton("timeout", `Timeout ${login} (10 minutes)`, () => moderate("timeout", node)),
      toolButton("ban", `Ban ${login}`, () => moderate("ban", node)),
    );
    node.append(tools);
  }
  for (const badge of (tags.badges || "").split(",")) {
    if (badge) node.append(badgeElement(badge));
  }
  const name = el("span", "name", tags["display-name"] || login);
  name.style.color = nameColor(tags.color, login);
  node.append(name);
  const body = el("span", action === null ? "text" : "text me");
  if (action === null) node.append(": ");
  else {
    node.append(" ");
    body.style.color = name.style.color;
  }
  body.append(richText(action === null ? text : action, tags.emotes));
  node.append(body);
  if (state.identity && id) {
    const reply = el("button", "reply-button", "Reply");
    reply.type = "button";
    reply.addEventListener("click", () => startReply(id, login, action ?? text));
    node.append(reply);
  }
  if (tags["rm-deleted"] === "1") markDeleted(node);
  if (id) {
    state.lastId = id;
  }
  const ts = Number(tags["tmi-sent-ts"] || 0);
  if (ts > state.lastTs) state.lastTs = ts;
  append(node);
  return node;
}

function userNotice(message) {
  const tags = message.tags;
  if (tags.id) {
    if (state.seen.has(tags.id)) return;
    state.seen.add(tags.id);
  }
  const node = el("div", "msg usernotice");
  node.dataset.msgId = tags["msg-id"] || "";
  node.append(el("span", "system-msg", tags["system-msg"] || tags["msg-id"] || "Notice"));
  const text = message.params[1];
  if (text) {
    const name = el("span", "name", tags["display-name"] || tags.login || "");
    name.style.color = nameColor(tags.color, tags.login || "");
    node.append(name, ": ");
    const body = el("span", "text");
    body.append(richText(text, tags.emotes));
    node.append(body);
  }
  append(node);
}

function markDeleted(node) {
  if (node.classList.contains("deleted")) return;
  node.classList.add("deleted");
  const text = node.querySelector(".text");
  if (!text) return;
  if (canModerate(node.dataset.login) || node.dataset.login === state.identity?.login) {
    node.classList.add("struck"); // moderators (and the author) still see what it said
  } else {
    text.replaceChildren("<message deleted>");
    text.classList.add("gone");
  }
  node.querySelector(".tools")?.remove();
}

function clearChat(message) {
  const tags = message.tags;
  const login = message.params[1];
  if (!login) {
    for (const node of list.querySelectorAll(".msg.chat")) markDeleted(node);
    system("Chat was cleared by a moderator");
    return;
  }
  for (const node of list.querySelectorAll(".msg.chat")) {
    if (node.dataset.login === login || (tags["target-user-id"] && node.dataset.userId === tags["target-user-id"])) {
      markDeleted(node);
    }
  }
  const seconds = Number(tags["ban-duration"] || 0);
  system(seconds ? `${login} has been timed out for ${duration(seconds)}.` : `${login} has been permanently banned.`);
}

function duration(seconds) {
  if (seconds % 86400 === 0) return seconds === 86400 ? "1 day" : `${seconds / 86400} days`;
  if (seconds % 3600 === 0) return seconds === 3600 ? "1 hour" : `${seconds / 3600} hours`;
  if (seconds % 60 === 0) return seconds === 60 ? "1 minute" : `${seconds / 60} minutes`;
  return seconds === 1 ? "1 second" : `${seconds} seconds`;
}

const MODES = [
  ["slow", (v) => (v > 0 ? `slow ${v}s` : "")],
  ["emote-only", (v) => (v === 1 ? "emote-only" : "")],
  ["subs-only", (v) => (v === 1 ? "subscribers-only" : "")],
  ["r9k", (v) => (v === 1 ? "unique chat" : "")],
  ["followers-only", (v) => (v >= 0 ? `followers-only${v ? ` ${v}m` : ""}` : "")],
];

function roomState(tags) {
  if (tags["room-id"]) state.roomId = tags["room-id"];
  const modes = $("modes");
  modes.dataset.known = JSON.stringify({ ...JSON.parse(modes.dataset.known || "{}"), ...tags });
  const known = JSON.parse(modes.dataset.known);
  modes.replaceChildren();
  for (const [tag, label] of MODES) {
    if (tag in known && known[tag] !== "") {
      const shown = label(Number(known[tag]));
      if (shown) modes.append(el("span", "mode", shown));
    }
  }
}

// ---------------------------------------------------------------- IRC

function send(line) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(`${line}\r\n`);
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = kind;
}

function handle(line, historical = false) {
  if (!line) return;
  const message = parse(line);
  if (state.buffer && !historical && ["PRIVMSG", "USERNOTICE", "CLEARCHAT", "CLEARMSG", "NOTICE"]
    .includes(message.command) && message.params[0] === state.channel) {
    state.buffer.push(line); // shown after the history that came before it
    return;
  }
  switch (message.command) {
    case "PING":
      send(`PONG :${message.params[0] || ""}`);
      break;
    case "001":
      state.nick = message.params[0];
      send(`JOIN ${state.channel}`);
      break;
    case "GLOBALUSERSTATE":
      break;
    case "JOIN":
      if (message.nick === state.nick && message.params[0] === state.channel) joined();
      break;
    case "ROOMSTATE":
      if (message.params[0] === state.channel) roomState(message.tags);
      break;
    case "USERSTATE":
      if (message.params[0] !== state.channel) break;
      state.userState = message.tags;
      if (message.tags.id && state.pending.length) ownMessage(state.pending.shift(), message.tags);
      break;
    case "PRIVMSG":
      if (message.params[0] === state.channel) chatMessage(message, { historical });
      break;
    case "USERNOTICE":
      if (message.params[0] === state.channel) userNotice(message);
      break;
    case "CLEARCHAT":
      if (message.params[0] === state.channel) clearChat(message);
      break;
    case "CLEARMSG": {
      const node = list.querySelector(`.msg[data-id="${CSS.escape(message.tags["target-msg-id"] || "")}"]`);
      if (node) markDeleted(node);
      break;
    }
    case "NOTICE":
      if (message.params[0] === "*" && /authentication failed/i.test(message.params[1] || "")) {
        loginFailed(message.params[1]);
        break;
      }
      if (message.params[0] === state.channel || message.params[0] === "*") {
        // A refusal of chat this page sent (msg_ratelimit, msg_banned, …) answers it.
        if (state.pending.length && !historical && (message.tags["msg-id"] || "").startsWith("msg_")) {
          state.pending.shift();
        }
        system(message.params[1] || "", "notice");
      }
      break;
    case "RECONNECT":
      state.ws?.close(); // the server is going away: come back at once
      break;
    default:
      break;
  }
}

function ownMessage(pending, userState) {
  const tags = { ...userState, "user-id": state.identity.user_id, "tmi-sent-ts": String(Date.now()) };
  if (pending.reply) tags["reply-parent-msg-id"] = pending.reply;
  chatMessage({ tags, nick: state.identity.login, command: "PRIVMSG", params: [state.channel, pending.text] },
    { own: true });
}

function connect() {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${window.location.host}/`, "irc");
  state.ws = ws;
  state.joined = false;
  setStatus(state.retry ? "reconnecting…" : "connecting…", "connecting");
  ws.addEventListener("open", () => {
    state.retry = 0;
    send("CAP REQ :twitch.tv/tags twitch.tv/commands");
    if (state.token) send(`PASS oauth:${state.token}`);
    send(`NICK ${state.identity ? state.identity.login : `justinfan${Math.floor(10000 + Math.random() * 89999)}`}`);
  });
  ws.addEventListener("message", (event) => {
    for (const line of String(event.data).split("\r\n")) handle(line);
  });
  ws.addEventListener("close", () => {
    if (state.ws !== ws) return;
    state.joined = false;
    setComposer();
    if (!state.wanted) return;
    state.sinceHistory = true;
    const delay = Math.min(30, 2 ** state.retry) * 1000 * (state.retry ? 1 : 0.25);
    state.retry += 1;
    setStatus(`disconnected: reconnecting in ${Math.round(delay / 1000)} s`, "error");
    setTimeout(() => { if (state.ws === ws && state.wanted) connect(); }, delay);
  });
}

function joined() {
  state.joined = true;
  setStatus(state.identity ? `live, as ${state.identity.login}` : "live, reading anonymously", "live");
  setComposer();
  loadHistory();
}

// History before the live lines: on join, and after a reconnect what was missed.
async function loadHistory() {
  state.buffer = [];
  const after = state.sinceHistory && state.lastTs ? `&after=${state.lastTs - 1000}` : "";
  const lastId = state.sinceHistory ? state.lastId : "";
  try {
    const response = await fetch(`/api/v2/recent-messages/${state.channel.slice(1)}?limit=${HISTORY_LIMIT}${after}`);
    const body = await response.json();
    let lines = body.messages || [];
    const mark = new RegExp(`(^@|;)id=${lastId}[; ]`);
    const index = lastId ? lines.findIndex((line) => mark.test(line)) : -1;
    if (index >= 0) lines = lines.slice(index + 1); // the history is in the channel's order
    for (const line of lines) handle(line, true);
  } catch (error) {
    system(`History is unavailable right now (${error.message}).`);
  }
  const held = state.buffer;
  state.buffer = null;
  for (const line of held) handle(line);
}

function loginFailed(text) {
  state.wanted = false;
  setStatus("login failed", "error");
  showJoin(`${text}: paste a token from \`chatd token issue\`, or leave it empty to read anonymously.`);
}

// ---------------------------------------------------------------- sending and moderating

function setComposer() {
  const input = $("input");
  const canSend = state.joined && Boolean(state.identity);
  input.disabled = !canSend;
  $("send").disabled = !canSend;
  input.placeholder = !state.joined ? "Not connected" : state.identity ? "Send a message" : "Log in to chat";
}

function startReply(id, login, text) {
  state.reply = { id, login };
  $("replying-text").textContent = `Replying to @${login}: ${text}`;
  $("replying").hidden = false;
  $("input").focus();
}

function stopReply() {
  state.reply = null;
  $("replying").hidden = true;
}

function submit(event) {
  event.preventDefault();
  const input = $("input");
  const text = input.value.trim();
  if (!text || !state.joined) return;
  const reply = state.reply?.id;
  send(`${reply ? `@reply-parent-msg-id=${reply} ` : ""}PRIVMSG ${state.channel} :${text}`);
  // Chat (and /me) comes back as USERSTATE or a NOTICE; other commands answer as they do.
  if (!text.startsWith("/") || text.startsWith("/me ")) {
    state.pending.push({ text: text.startsWith("/me ") ? `\u0001ACTION ${text.slice(4)}\u0001` : text, reply });
  }
  input.value = "";
  stopReply();
}

async function moderate(kind, node) {
  const me = state.identity;
  const query = `broadcaster_id=${encodeURIComponent(state.roomId)}&moderator_id=${encodeURIComponent(me.user_id)}`;
  const headers = { Authorization: `Bearer ${state.token}`, "Client-Id": me.client_id };
  let response;
  if (kind === "delete") {
    response = await fetch(`/helix/moderation/chat?${query}&message_id=${encodeURIComponent(node.dataset.id)}`,
      { method: "DELETE", headers });
  } else {
    const data = { user_id: node.dataset.userId, reason: "" };
    if (kind === "timeout") data.duration = TIMEOUT_SECONDS;
    response = await fetch(`/helix/moderation/bans?${query}`, {
      method: "POST", headers: { ...headers, "Content-Type": "application/json" }, body: JSON.stringify({ data }),
    });
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    system(`Could not ${kind}: ${body.message || response.statusText}`, "notice");
  }
}

// ---------------------------------------------------------------- joining

function showJoin(error = "") {
  $("join-channel").value = state.channel.slice(1) || new URLSearchParams(window.location.search).get("channel") || "";
  $("join-token").value = "";
  $("join-error").textContent = error;
  $("join-error").hidden = !error;
  $("join").hidden = false;
  $("join-channel").focus();
}

async function validate(token) {
  const response = await fetch("/oauth2/validate", { headers: { Authorization: `OAuth ${token}` } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok || !body.login) throw new Error(body.message || "the token is not valid");
  return body;
}

async function join(channel, token) {
  state.wanted = false;
  state.ws?.close();
  state.ws = null;
  state.channel = `#${channel.replace(/^#/, "").toLowerCase()}`;
  state.token = token;
  state.identity = token ? await validate(token) : null;
  state.seen.clear();
  state.pending = [];
  state.lastTs = 0;
  state.lastId = "";
  state.sinceHistory = false;
  state.userState = {};
  list.replaceChildren();
  $("modes").replaceChildren();
  delete $("modes").dataset.known;
  $("channel-name").textContent = state.channel;
  document.title = `${state.channel} – chatd chat`;
  const url = new URL(window.location.href);
  url.searchParams.set("channel", state.channel.slice(1));
  window.history.replaceState(null, "", url);
  state.wanted = true;
  state.retry = 0;
  connect();
}

$("join-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const channel = $("join-channel").value.trim();
  const token = $("join-token").value.trim().replace(/^oauth:/, "") || store.getItem("chatd.token") || "";
  try {
    await join(channel, token);
  } catch (error) {
    showJoin(error.message);
    return;
  }
  if (token) store.setItem("chatd.token", token);
  $("join").hidden = true;
});
$("forget-token").addEventListener("click", () => {
  store.removeItem("chatd.token");
  $("join-token").value = "";
  $("join-error").textContent = "Token forgotten: you will read anonymously.";
  $("join-error").hidden = false;
});
$("open-join").addEventListener("click", () => showJoin());
$("composer").addEventListener("submit", submit);
$("cancel-reply").addEventListener("click", stopReply);
$("more").addEventListener("click", () => {
  list.scrollTop = list.scrollHeight;
  $("more").hidden = true;
});
list.addEventListener("scroll", () => { if (atBottom()) $("more").hidden = true; });

const wanted = new URLSearchParams(window.location.search).get("channel");
if (wanted) {
  join(wanted, store.getItem("chatd.token") || "").catch((error) => showJoin(error.message));
} else {
  showJoin();
}
