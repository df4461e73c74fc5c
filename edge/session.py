"""The per-connection IRC state machine, free of I/O.

`Session.receive()` takes one parsed-or-refused line and returns actions for
the shell to carry out: lines to send, a login to check, a channel to join or
leave, a message to publish, a connection to close. Answers from other
services come back through the `*_succeeded` / `*_failed` methods, which
return more actions. Nothing here awaits, reads a socket or knows about HTTP,
so every branch is testable by feeding strings.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from common import twitch
from common.irc import IRCParseError, LineTooLong, Message, parse, serialize_tags
from common.ratelimit import WindowLimit
from common.tokens import LOGIN_RE
from common.wire import HistoryEntry, Identity
from edge import ircv3
from edge.ircv3 import ChatHistory

# Tags a client may attach to PRIVMSG; every other client tag is dropped so
# no one can set server-only tags (badges, mod, user-id, id, …).
CLIENT_TAGS = ("client-nonce", "reply-parent-msg-id")

TAGS, COMMANDS, MEMBERSHIP = 1, 2, 4
TWITCH_CAPABILITY_BITS = {"twitch.tv/tags": TAGS, "twitch.tv/commands": COMMANDS, "twitch.tv/membership": MEMBERSHIP}
CAPABILITY_BITS = TWITCH_CAPABILITY_BITS | ircv3.CAPABILITY_BITS

NAMES_PER_LINE = 40  # logins per 353 line: well under 512 bytes

# Lines that arrive while a login is being checked are replayed after it.
MAX_PENDING_LINES = 64
# Twitch allows 20 JOINs per 10 s (anonymous connections too).
JOIN_WINDOW = 10.0


@dataclass(slots=True)
class Reply:
    line: str


@dataclass(slots=True)
class Close:
    reason: str


@dataclass(slots=True)
class Authenticate:
    token: str


@dataclass(slots=True)
class JoinChannel:
    channel: str


@dataclass(slots=True)
class PartChannel:
    channel: str


@dataclass(slots=True)
class Publish:
    channel: str
    text: str
    client_tags: dict[str, str]


Action = Reply | Close | Authenticate | JoinChannel | PartChannel | Publish | ChatHistory


class Session:
    # Slots and a class-level command table: an edge holds tens of thousands
    # of these, so every per-instance dict counts.
    __slots__ = (
        "_authenticating",
        "_cap_pending",
        "_clock",
        "_joins",
        "_pending",
        "anonymous",
        "channels",
        "closed",
        "identity",
        "join_limit",
        "joining",
        "max_channels",
        "nick",
        "password",
        "registered",
        "server",
        "variant",
    )

    def __init__(self, server_name: str = "tmi.twitch.tv", max_channels: int = 1000, join_limit: int = 20,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server_name
        self.max_channels = max_channels
        self.join_limit = join_limit
        self._joins: WindowLimit | None = None  # made on the first JOIN: most connections never need one
        self._clock = clock
        # Capability bits (TAGS | COMMANDS | MEMBERSHIP), read per delivery.
        self.variant = 0
        self.nick = ""
        self.password: str | None = None
        self.identity: Identity | None = None
        self.anonymous = False
        self.registered = False
        self.closed = False
        self._cap_pending = False  # CAP LS seen and CAP END not yet: hold registration
        self._authenticating = False
        self._pending: list[str | LineTooLong] | None = None
        self.channels: set[str] = set()
        # Channels whose JOIN awaits clue; None when none does (an empty set costs 216 bytes on
        # every idle connection).
        self.joining: set[str] | None = None

    # ---- capabilities of this connection, read by the delivery path
    @property
    def caps(self) -> list[str]:
        return [cap for cap, bit in CAPABILITY_BITS.items() if self.variant & bit]

    @property
    def wants_tags(self) -> bool:
        return bool(self.variant & (TAGS | ircv3.MESSAGE_TAGS))

    @property
    def wants_membership(self) -> bool:
        return bool(self.variant & MEMBERSHIP)

    @property
    def wants_commands(self) -> bool:
        return bool(self.variant & COMMANDS)

    # ---- input
    def receive(self, item: str | LineTooLong) -> list[Action]:
        if self.closed:
            return []
        if self._authenticating:
            if self._pending is None:
                self._pending = []
            if len(self._pending) >= MAX_PENDING_LINES:
                return self.disconnect("Too many lines before login completed")
            self._pending.append(item)
            return []
        if isinstance(item, LineTooLong):
            return [self._numeric("417", "Input line was too long")]
        try:
            message = parse(item)
        except IRCParseError as exc:
            return [self._notice("*", f"Malformed line ignored: {exc}")]
        command = message.command.upper()
        entry = COMMAND_TABLE.get(command)
        if entry is None:
            if not self.registered:
                return [self._numeric("451", command, "You have not registered")]
            return [self._numeric("421", command, "Unknown command")]
        # Checked once here, so a new command is safe by default.
        if not self.registered and not entry.before_registration:
            return [self._numeric("451", command, "You have not registered")]
        if len(message.params) < entry.min_params:
            return [self._numeric(entry.too_few[0], *entry.too_few[1:]) if entry.too_few
                    else self._numeric("461", command, "Not enough parameters")]
        return entry.handler(self, message)

    # ---- registration
    def _on_cap(self, message: Message) -> list[Action]:
        sub = message.params[0].upper() if message.params else ""
        target = self.nick or "*"
        if sub == "LS":
            if not self.registered:
                self._cap_pending = True
            offered = list(twitch.CAPABILITIES)
            version = message.params[1] if len(message.params) > 1 else ""
            if version.isdigit() and int(version) >= 302:  # IRCv3 clients: never what Twitch clients see
                offered += list(ircv3.CAPABILITY_BITS)
            return [self._raw(f"CAP * LS :{' '.join(offered)}")]
        if sub == "LIST":
            return [self._raw(f"CAP * LIST :{' '.join(self.caps)}")]
        if sub == "REQ":
            requested = message.params[1] if len(message.params) > 1 else ""
            names = requested.split()
            # All-or-nothing, as IRCv3 requires: one unknown cap refuses the request.
            if names and all(name.lstrip("-") in CAPABILITY_BITS for name in names):
                for name in names:
                    if name.startswith("-"):
                        self.variant &= ~CAPABILITY_BITS[name[1:]]
                    else:
                        self.variant |= CAPABILITY_BITS[name]
                return [self._raw(f"CAP * ACK :{requested}")]
            return [self._raw(f"CAP * NAK :{requested}")]
        if sub == "END":
            self._cap_pending = False
            return self._try_register()
        return [self._numeric("410", sub or "*", "Invalid CAP command", target=target)]

    def _on_pass(self, message: Message) -> list[Action]:
        if self.registered:
            return [self._numeric("462", "You may not reregister")]
        self.password = message.params[0] if message.params else ""
        return []

    def _on_nick(self, message: Message) -> list[Action]:
        if self.registered:
            return []  # Twitch ignores nick changes
        nick = (message.params[0] if message.params else "").lower()
        if not LOGIN_RE.match(nick):
            return [self._numeric("432", nick or "*", "Erroneous nickname", target="*")]
        self.nick = nick
        return self._try_register()

    def _try_register(self) -> list[Action]:
        if self.registered or self._authenticating or not self.nick or self._cap_pending:
            return []
        if twitch.is_anonymous_nick(self.nick):
            self.anonymous = True
            self.registered = True
            return self._welcome()
        password = self.password or ""
        if not password.lower().startswith("oauth:") or len(password) <= len("oauth:"):
            return [self._notice("*", "Improperly formatted auth"), Close("bad auth format")]
        self._authenticating = True
        return [Authenticate(password[len("oauth:"):])]

    def login_succeeded(self, identity: Identity) -> list[Action]:
        self._authenticating = False
        self.identity = identity
        self.nick = identity.login  # the token, not NICK, says who this is
        self.registered = True
        actions = self._welcome()
        if self.wants_commands:
            actions.append(self._tagged(self._global_user_state_tags(), "GLOBALUSERSTATE", []))
        return actions + self._replay_pending()

    def login_failed(self) -> list[Action]:
        self._authenticating = False
        self._pending = None
        return self.disconnect("Login authentication failed")

    def _replay_pending(self) -> list[Action]:
        actions: list[Action] = []
        pending, self._pending = self._pending or [], None
        for item in pending:
            actions.extend(self.receive(item))
        return actions

    def _welcome(self) -> list[Action]:
        lines = [
            self._numeric("001", "Welcome, GLHF!"),
            self._numeric("002", f"Your host is {self.server}"),
            self._numeric("003", "This server is rather new"),
            self._numeric("004", "-"),
        ]
        if self.variant & ircv3.CHATHISTORY:  # only for the IRCv3 clients that asked
            lines.append(self._numeric("005", f"CHATHISTORY={ircv3.MAX_HISTORY}", "MSGREFTYPES=msgid,timestamp",
                                       "are supported by this server"))
        return lines + [
            self._numeric("375", "-"),
            self._numeric("372", "You are in a maze of twisty passages, all alike."),
            self._numeric("376", ">"),
        ]

    # ---- keepalive and leaving
    def _on_ping(self, message: Message) -> list[Action]:
        token = message.params[-1] if message.params else self.server
        return [Reply(f":{self.server} PONG {self.server} :{_one_line(token)}")]

    def _on_quit(self, message: Message) -> list[Action]:
        self.closed = True
        return [Close("quit")]

    def _ignore(self, message: Message) -> list[Action]:
        return []

    # ---- channels
    def _on_join(self, message: Message) -> list[Action]:
        actions: list[Action] = []
        for raw in message.params[0].split(","):
            channel = twitch.normalize_channel(raw)
            if not channel:
                continue
            if not twitch.is_valid_channel(channel):
                actions.append(self._notice_id(channel, "msg_channel_suspended"))
                continue
            if channel in self.channels or self.is_joining(channel):
                continue
            if len(self.channels) + len(self.joining or ()) >= self.max_channels:
                actions.append(self._numeric("405", channel, "You have joined too many channels"))
                continue
            if self._joins is None:
                self._joins = WindowLimit(self.join_limit, JOIN_WINDOW)
            if not self._joins.allow(self._clock()):
                actions.append(self._notice_id(channel, "msg_join_ratelimit"))
                continue
            if self.joining is None:
                self.joining = set()
            self.joining.add(channel)
            actions.append(JoinChannel(channel))
        return actions

    def join_succeeded(self, channel: str, room_state: dict[str, str], user_state: dict[str, str],
                       names: list[str] | tuple[str, ...] = ()) -> list[Action]:
        """The JOIN echo, NAMES (the joiner, and with twitch.tv/membership who else is
        there), USERSTATE and ROOMSTATE."""
        self._joined_or_not(channel)
        self.channels.add(channel)
        host = f"{self.nick}.tmi.twitch.tv"
        listed = [self.nick] + [name for name in names if name != self.nick] if self.wants_membership else [self.nick]
        actions: list[Action] = [Reply(f":{twitch.user_source(self.nick)} JOIN {channel}")]
        for start in range(0, len(listed), NAMES_PER_LINE):
            chunk = " ".join(listed[start:start + NAMES_PER_LINE])
            actions.append(Reply(f":{host} 353 {self.nick} = {channel} :{chunk}"))
        actions.append(Reply(f":{host} 366 {self.nick} {channel} :End of /NAMES list"))
        if self.wants_commands:
            if not self.anonymous:
                actions.append(self._tagged(user_state, "USERSTATE", [channel]))
            actions.append(self._tagged(room_state, "ROOMSTATE", [channel]))
        return actions

    def is_joining(self, channel: str) -> bool:
        return self.joining is not None and channel in self.joining

    def _joined_or_not(self, channel: str) -> None:
        if self.joining is not None:
            self.joining.discard(channel)
            if not self.joining:
                self.joining = None

    def join_failed(self, channel: str, msg_id: str) -> list[Action]:
        self._joined_or_not(channel)
        return [self._notice_id(channel, msg_id)]

    def _on_part(self, message: Message) -> list[Action]:
        actions: list[Action] = []
        for raw in message.params[0].split(","):
            channel = twitch.normalize_channel(raw)
            if channel in self.channels:
                self.channels.discard(channel)
                actions.append(PartChannel(channel))
                actions.append(Reply(f":{twitch.user_source(self.nick)} PART {channel}"))
            elif channel:
                actions.append(self._numeric("442", channel, "You're not on that channel"))
        return actions

    # ---- chat
    def _on_privmsg(self, message: Message) -> list[Action]:
        if len(message.params) < 2:
            return [self._numeric("412", "No text to send")]
        target, text = message.params[0], message.params[1]
        channel = twitch.normalize_channel(target)
        if not channel.startswith("#"):
            return [self._numeric("401", target, "No such nick/channel")]
        # Like Twitch, a channel need not be joined to chat in it (dank-twitch-irc
        # says from a connection that never joins; bots send right after JOIN).
        if not twitch.is_valid_channel(channel):
            return [self._notice_id(channel, "msg_channel_suspended")]
        if self.anonymous:
            return [self._notice_id(channel, "msg_login_required")]
        if not text.strip():
            return [self._numeric("412", "No text to send")]
        client_tags = {key: message.tags[key] for key in CLIENT_TAGS if key in message.tags}
        return [Publish(channel, text, client_tags)]

    def publish_accepted(self, channel: str, user_state: dict[str, str]) -> list[Action]:
        if self.wants_commands:
            return [self._tagged(user_state, "USERSTATE", [channel])]
        return []

    # ---- IRCv3 history
    def _on_chathistory(self, message: Message) -> list[Action]:
        if not self.variant & ircv3.CHATHISTORY:
            return [self._numeric("421", "CHATHISTORY", "Unknown command")]
        request = ircv3.parse_chathistory(message.params)
        if isinstance(request, str):
            return [self._raw(f"FAIL CHATHISTORY {request}")]
        if request.subcommand != "TARGETS" and not twitch.is_valid_channel(request.channel):
            return [self._raw(f"FAIL CHATHISTORY INVALID_TARGET {request.subcommand} {request.channel} "
                              ":No such channel")]
        return [request]

    def history_ready(self, request: ChatHistory, entries: list[HistoryEntry], batch_id: str) -> list[Action]:
        return [Reply(line) for line in ircv3.history_lines(self.server, request, entries, self.variant,
                                                            self.wants_tags, batch_id)]

    def targets_ready(self, found: list[tuple[str, int]], batch_id: str) -> list[Action]:
        return [Reply(line) for line in ircv3.targets_lines(self.server, found, self.variant, batch_id)]

    def history_failed(self, request: ChatHistory, reason: str, code: str = "MESSAGE_ERROR") -> list[Action]:
        about = f"{request.subcommand} {request.channel}" if request.channel else request.subcommand
        return [self._raw(f"FAIL CHATHISTORY {code} {about} :{_one_line(reason)}")]

    def notice(self, channel: str, msg_id: str, text: str) -> list[Action]:
        return [self._notice_id(channel, msg_id, text)]

    # ---- line builders
    def _global_user_state_tags(self) -> dict[str, str]:
        identity = self.identity
        assert identity is not None
        return {
            "badge-info": "",
            "badges": "",
            "color": identity.color,
            "display-name": identity.display_name,
            "emote-sets": "0",
            "user-id": identity.user_id,
            "user-type": "",
        }

    def _line(self, message: Message) -> Reply:
        if not self.wants_tags:
            message.tags = {}
        return Reply(message.serialize())

    def _raw(self, text: str) -> Reply:
        return Reply(f":{self.server} {text}")

    def _numeric(self, code: str, *params: str, target: str | None = None) -> Reply:
        # Written out rather than serialized so the last parameter always takes
        # a colon, exactly as Twitch sends numerics (`:tmi.twitch.tv 004 nick :-`).
        # Every middle parameter here is a validated nick, channel or command.
        who = target if target is not None else (self.nick or "*")
        *middle, last = (who, *params)
        head = " ".join((f":{self.server}", code, *middle))
        return Reply(f"{head} :{_one_line(last)}")

    def _notice(self, target: str, text: str) -> Reply:
        return Reply(f":{self.server} NOTICE {target} :{_one_line(text)}")

    def _notice_id(self, channel: str, msg_id: str, text: str | None = None) -> Reply:
        text = text or twitch.notice_text(msg_id, channel=channel)
        target = channel if twitch.is_valid_channel(channel) else "*"
        tags = f"@{serialize_tags({'msg-id': msg_id})} " if self.wants_tags else ""
        return Reply(f"{tags}:{self.server} NOTICE {target} :{_one_line(text)}")

    def _tagged(self, tags: dict[str, str], command: str, params: list[str]) -> Reply:
        return self._line(Message(tags=dict(tags), source=self.server, command=command, params=params))

    def disconnect(self, reason: str) -> list[Action]:
        """Tell the client why with a NOTICE, then close."""
        self.closed = True
        return [self._notice("*", reason), Close(reason)]


def _one_line(text: str) -> str:
    """Trailing text never carries a line break or NUL into the output."""
    return text.replace("\r", " ").replace("\n", " ").replace("\0", " ")


@dataclass(frozen=True, slots=True)
class Command:
    handler: Callable[[Session, Message], list[Action]]
    min_params: int = 0
    before_registration: bool = False  # allowed before registration (an allow-list: off by default)
    too_few: tuple[str, ...] = ()  # the numeric and text for too few parameters, if not 461


# IRC command → entry: the whole client-facing command set in one place.
COMMAND_TABLE: dict[str, Command] = {
    "CAP": Command(Session._on_cap, 1, before_registration=True),
    "PASS": Command(Session._on_pass, 1, before_registration=True),
    "NICK": Command(Session._on_nick, 1, before_registration=True, too_few=("431", "No nickname given")),
    "USER": Command(Session._ignore, 0, before_registration=True),
    "PING": Command(Session._on_ping, 0, before_registration=True),
    "PONG": Command(Session._ignore, 0, before_registration=True),
    "QUIT": Command(Session._on_quit, 0, before_registration=True),
    "JOIN": Command(Session._on_join, 1),
    "PART": Command(Session._on_part, 1),
    "PRIVMSG": Command(Session._on_privmsg, 1, too_few=("411", "No recipient given (PRIVMSG)")),
    "CHATHISTORY": Command(Session._on_chathistory, 1),
}
