"""Twitch's paid and community events as chat shows them: USERNOTICE (a PRIVMSG
with `bits` for cheers) and the EventSub events each also is.

Pure: who, where and what in; `common.wire.Event`s out, formatted once as every
edge will write them. Tags, `msg-param-*` names and `system-msg` texts are
Twitch's (dev.twitch.tv/docs/chat/irc "USERNOTICE tags", checked against what
tmi.js and twurple read); the EventSub objects are Twitch's channel.chat.notification
detail objects plus channel.subscribe, channel.raid and channel.cheer.
"""
from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from clue import eventsub_events as es
from clue import stamp
from clue.channels import ChannelState
from clue.emotes import emotes_tag
from clue.helix.chat import ANNOUNCEMENT_COLORS, announcement
from common import twitch
from common.irc import Message, serialize_tags
from common.tokens import stable_id
from common.wire import Event, Identity, Notify

Person = es.Person

# Each kind's knobs default per kind: months of a resub, gifts in a mystery gift, …
DEFAULT_MONTHS = {"resub": 3}
DEFAULT_COUNT = {"submysterygift": 5, "viewermilestone": 5}
DEFAULT_BITS = {"cheer": 100, "bitsbadgetier": 1000}
DEFAULT_VIEWERS = 10
DEFAULT_ANNOUNCEMENT = "This is a test announcement."
GIFTEE = "testgiftee"  # a mystery gift's made-up recipients: testgiftee1, testgiftee2, …
# Channel points a watch streak earns on Twitch at the first milestones.
WATCH_STREAK_REWARD = 450
TIERS = {"1000": "Tier 1", "2000": "Tier 2", "3000": "Tier 3"}
PRIME = "Prime"  # msg-param-sub-plan of a Prime sub, as Twitch spells it (tmi.js looks for "Prime")
# Namespace for ids derived from a notice's message id (a raid's second event, a gift's id).
_DERIVED = uuid.UUID("5b0c2a52-7f5e-4a53-9d0e-3f1c7e0b2d11")


@dataclass(frozen=True, slots=True)
class Notice:
    """Where it happens, who does it, and the message id and time it gets."""

    server: str
    state: ChannelState
    user: Person
    message_id: str
    sent_ms: int
    emotes: dict[str, str]
    color: str = ""


@dataclass(frozen=True, slots=True)
class Options:
    """What a kind may be told; each kind reads its own (0 / "" = the kind's default)."""

    tier: str = "1000"  # 1000, 2000, 3000 or Prime
    months: int = 0
    count: int = 0
    viewers: int = DEFAULT_VIEWERS
    bits: int = 0
    message: str = ""
    color: str = "primary"
    recipient: Person | None = None  # subgift
    gifter: Person | None = None  # giftpaidupgrade


def _identity(notice: Notice, subscriber: bool = False) -> Identity:
    user_id, login, name = notice.user
    return Identity(login=login, user_id=user_id, display_name=name, color=notice.color, subscriber=subscriber)


def _usernotice(notice: Notice, msg_id: str, params: dict[str, str], system_msg: str, text: str = "", *,
                subscriber: bool = False, months: int = 0, notify: list[Notify]) -> Event:
    """The USERNOTICE with Twitch's common tags around this kind's msg-params."""
    state, identity = notice.state, _identity(notice, subscriber)
    user_tags = stamp.user_state_tags(identity, state)
    tags = {
        "badge-info": f"subscriber/{months}" if subscriber else "", "badges": user_tags["badges"],
        "color": notice.color, "display-name": identity.display_name, "emotes": emotes_tag(text, notice.emotes)[0],
        "flags": "", "id": notice.message_id, "login": identity.login, "mod": user_tags["mod"], "msg-id": msg_id,
        **{f"msg-param-{name}": value for name, value in sorted(params.items())},
        "room-id": state.room_id, "subscriber": user_tags["subscriber"], "system-msg": system_msg,
        "tmi-sent-ts": str(notice.sent_ms), "user-id": identity.user_id, "user-type": user_tags["user-type"],
    }
    # Twitch writes the channel alone when the user added no message.
    line = Message(source=notice.server, command="USERNOTICE", params=[state.name, text] if text else [state.name])
    return Event(channel=state.name, command="USERNOTICE", line=line.serialize_without_tags(trailing=bool(text)),
                 tags=serialize_tags(tags), id=notice.message_id, login=identity.login, user_id=identity.user_id,
                 text=text, sent_ms=notice.sent_ms, notify=notify)


def _chat_notification(notice: Notice, notice_type: str, system_message: str, detail: dict,
                       text: str = "", subscriber: bool = False) -> Notify:
    badges = stamp.badges(_identity(notice, subscriber), notice.state)
    return es.notify("channel.chat.notification", es.chat_notification(
        notice.state.broadcaster, notice.user, notice_type, system_message=system_message,
        message_id=notice.message_id, text=text, emotes=notice.emotes, color=notice.color, badges=badges,
        detail=detail))


def _plan(options: Options, channel: str) -> tuple[dict[str, str], str, bool]:
    """msg-param-sub-plan and -sub-plan-name, EventSub's sub_tier, and whether it is Prime."""
    prime = options.tier == PRIME
    plan = {"sub-plan": options.tier, "sub-plan-name": f"Channel Subscription ({channel.lstrip('#')})"}
    return plan, "1000" if prime else options.tier, prime


def _subscribed(name: str, options: Options) -> str:
    return f"{name} subscribed with Prime." if options.tier == PRIME else \
        f"{name} subscribed at {TIERS[options.tier]}."


def derived_id(message_id: str, what: str) -> str:
    return str(uuid.uuid5(_DERIVED, f"{message_id}/{what}"))


# ---- the kinds


def sub(notice: Notice, options: Options) -> list[Event]:
    plan, tier, prime = _plan(options, notice.state.name)
    system = _subscribed(notice.user[2], options)
    params = {"cumulative-months": "1", "months": "0", "multimonth-duration": "1", "multimonth-tenure": "0",
              "should-share-streak": "0", "streak-months": "0", "was-gifted": "false", **plan}
    notify = [_chat_notification(notice, "sub", system, {"sub_tier": tier, "is_prime": prime, "duration_months": 1},
                                 options.message, subscriber=True),
              es.notify("channel.subscribe", es.subscribe(notice.state.broadcaster, notice.user, tier, False))]
    return [_usernotice(notice, "sub", params, system, options.message, subscriber=True, months=1, notify=notify)]


def resub(notice: Notice, options: Options) -> list[Event]:
    plan, tier, prime = _plan(options, notice.state.name)
    months = options.months or DEFAULT_MONTHS["resub"]
    # An unbroken subscription whose streak is shared: tmi.js reports the streak as the resub's months.
    system = f"{_subscribed(notice.user[2], options)} They've subscribed for {months} months, " \
             f"currently on a {months} month streak!"
    params = {"cumulative-months": str(months), "months": "0", "multimonth-duration": "1",
              "multimonth-tenure": "0", "should-share-streak": "1", "streak-months": str(months),
              "was-gifted": "false", **plan}
    detail = {"cumulative_months": months, "duration_months": 1, "streak_months": months, "sub_tier": tier,
              "is_prime": prime, "is_gift": False, "gifter_is_anonymous": None, "gifter_user_id": None,
              "gifter_user_name": None, "gifter_user_login": None}
    notify = [_chat_notification(notice, "resub", system, detail, options.message, subscriber=True)]
    return [_usernotice(notice, "resub", params, system, options.message, subscriber=True, months=months,
                        notify=notify)]


def subgift(notice: Notice, options: Options) -> list[Event]:
    assert options.recipient is not None
    return [_gift(notice, options, options.recipient)]


def _gift(notice: Notice, options: Options, recipient: Person, community_gift_id: str | None = None) -> Event:
    """One gifted sub: on its own, or one of a mystery gift's (which names it)."""
    plan, tier, _ = _plan(options, notice.state.name)
    recipient_id, recipient_login, recipient_name = recipient
    system = f"{notice.user[2]} gifted a {TIERS[tier]} sub to {recipient_name}!"
    # sender-count 0: the gifter's total is not shared (then Twitch adds no sentence about it).
    params = {"gift-months": "1", "months": "1", "recipient-display-name": recipient_name, "recipient-id": recipient_id,
              "recipient-user-name": recipient_login, "sender-count": "0", **plan}
    if community_gift_id is not None:
        params["community-gift-id"] = community_gift_id
    detail = {"duration_months": 1, "cumulative_total": None, "recipient_user_id": recipient_id,
              "recipient_user_name": recipient_name, "recipient_user_login": recipient_login, "sub_tier": tier,
              "community_gift_id": community_gift_id}
    notify = [_chat_notification(notice, "sub_gift", system, detail),
              es.notify("channel.subscribe", es.subscribe(notice.state.broadcaster, recipient, tier, True))]
    return _usernotice(notice, "subgift", params, system, notify=notify)


def submysterygift(notice: Notice, options: Options) -> list[Event]:
    plan, tier, _ = _plan(options, notice.state.name)
    count = options.count or DEFAULT_COUNT["submysterygift"]
    gift_id = str(uuid.UUID(derived_id(notice.message_id, "gift")).int % 10**19)  # Twitch's ids are digits
    subs = "Sub" if count == 1 else "Subs"
    system = f"{notice.user[2]} is gifting {count} {TIERS[tier]} {subs} to {notice.state.broadcaster[2]}'s community!"
    params = {"community-gift-id": gift_id, "mass-gift-count": str(count), "sender-count": "0",
              "sub-plan": plan["sub-plan"]}
    detail = {"id": gift_id, "total": count, "sub_tier": tier, "cumulative_total": None}
    notify = [_chat_notification(notice, "community_sub_gift", system, detail)]
    # As on Twitch, the announcement is followed by each gift, naming the community gift.
    gifts = [_gift(dataclasses.replace(notice, message_id=derived_id(notice.message_id, f"gift/{number}")), options,
                   (stable_id(login := f"{GIFTEE}{number}"), login, login), gift_id)
             for number in range(1, count + 1)]
    return [_usernotice(notice, "submysterygift", params, system, notify=notify), *gifts]


def giftpaidupgrade(notice: Notice, options: Options) -> list[Event]:
    assert options.gifter is not None
    gifter_id, gifter_login, gifter_name = options.gifter
    system = f"{notice.user[2]} is continuing the Gift Sub they got from {gifter_name}!"
    params = {"promo-gift-total": "0", "promo-name": "", "sender-login": gifter_login, "sender-name": gifter_name}
    detail = {"gifter_is_anonymous": False, "gifter_user_id": gifter_id, "gifter_user_name": gifter_name,
              "gifter_user_login": gifter_login}
    notify = [_chat_notification(notice, "gift_paid_upgrade", system, detail, subscriber=True)]
    return [_usernotice(notice, "giftpaidupgrade", params, system, subscriber=True, months=1, notify=notify)]


def raid(notice: Notice, options: Options) -> list[Event]:
    """Seen in the raided channel; channel.raid also goes to the raider's own channel,
    where subscriptions by from_broadcaster_user_id listen (an EventSub-only event)."""
    raider_id, raider_login, raider_name = notice.user
    viewers = options.viewers
    system = f"{viewers} raiders from {raider_name} have joined!"
    # chatd keeps no profile pictures (its Helix users show none either).
    params = {"displayName": raider_name, "login": raider_login, "profileImageURL": "",
              "viewerCount": str(viewers)}
    detail = {"user_id": raider_id, "user_name": raider_name, "user_login": raider_login, "viewer_count": viewers,
              "profile_image_url": ""}
    raided = es.notify("channel.raid", es.raid(notice.user, notice.state.broadcaster, viewers))
    seen = _usernotice(notice, "raid", params, system, notify=[_chat_notification(notice, "raid", system, detail),
                                                                raided])
    source = Event(channel="#" + raider_login, command="", line="", id=derived_id(notice.message_id, "raid"),
                   sent_ms=notice.sent_ms, notify=[raided])
    return [seen, source]


def announce(notice: Notice, options: Options) -> list[Event]:
    """The same USERNOTICE and notification as Helix's POST /chat/announcements."""
    event = announcement(notice.server, notice.state, _identity(notice), options.message or DEFAULT_ANNOUNCEMENT,
                         ANNOUNCEMENT_COLORS[options.color], notice.emotes)
    return [event]


def bitsbadgetier(notice: Notice, options: Options) -> list[Event]:
    threshold = options.bits or DEFAULT_BITS["bitsbadgetier"]
    # IRC's system-msg is this fixed text on Twitch; chat (and EventSub) shows the sentence.
    shown = f"{notice.user[2]} just earned a new {_short(threshold)} Bits badge!"
    notify = [_chat_notification(notice, "bits_badge_tier", shown, {"tier": threshold}, options.message)]
    return [_usernotice(notice, "bitsbadgetier", {"threshold": str(threshold)}, "bits badge tier notification",
                        options.message, notify=notify)]


def viewermilestone(notice: Notice, options: Options) -> list[Event]:
    """A watch streak. No EventSub event: chatd's channel.chat.notification types
    (clue.eventsub_events.NOTICE_TYPES) have no watch_streak."""
    streams = options.count or DEFAULT_COUNT["viewermilestone"]
    system = f"{notice.user[2]} watched {streams} consecutive streams and sparked a watch streak!"
    params = {"category": "watch-streak", "copoReward": str(WATCH_STREAK_REWARD),
              "id": derived_id(notice.message_id, "milestone"), "value": str(streams)}
    return [_usernotice(notice, "viewermilestone", params, system, options.message, notify=[])]


def cheer(notice: Notice, options: Options) -> list[Event]:
    """A PRIVMSG whose `bits` tag says what it cheered, with a cheer word in its text."""
    state, identity = notice.state, _identity(notice)
    bits = options.bits or DEFAULT_BITS["cheer"]
    text = f"Cheer{bits} {options.message}".rstrip()
    emotes = emotes_tag(text, notice.emotes)[0]
    plain = stamp.privmsg_tags(identity, state, message_id=notice.message_id, sent_ms=notice.sent_ms,
                               first_msg=False, client_tags={}, color=notice.color, emotes=emotes)
    tags = {key: value for key, value in plain.items() if key in ("badge-info", "badges")}
    tags |= {"bits": str(bits)} | plain  # Twitch's place for it: right after the badges
    line = Message(source=twitch.user_source(identity.login), command="PRIVMSG", params=[state.name, text])
    notify = [
        es.notify("channel.chat.message", es.chat_message(
            state.broadcaster, notice.user, notice.message_id, text, emotes=notice.emotes, color=notice.color,
            badges=tags["badges"], bits=bits)),
        es.notify("channel.cheer", es.cheer(state.broadcaster, notice.user, text, bits)),
    ]
    return [Event(channel=state.name, command="PRIVMSG", line=line.serialize_without_tags(trailing=True),
                  tags=serialize_tags(tags), id=notice.message_id, login=identity.login, user_id=identity.user_id,
                  text=text, sent_ms=notice.sent_ms, notify=notify)]


def _short(bits: int) -> str:
    """1000 → 1K, 1000000 → 1M, as Twitch names its Bits badges."""
    for size, suffix in ((1_000_000, "M"), (1000, "K")):
        if bits >= size and bits % size == 0:
            return f"{bits // size}{suffix}"
    return str(bits)


BUILDERS: dict[str, Callable[[Notice, Options], list[Event]]] = {
    "sub": sub, "resub": resub, "subgift": subgift, "submysterygift": submysterygift,
    "giftpaidupgrade": giftpaidupgrade, "raid": raid, "announcement": announce, "bitsbadgetier": bitsbadgetier,
    "viewermilestone": viewermilestone, "cheer": cheer,
}
KINDS = tuple(BUILDERS)
# Kinds whose user may add a message (Twitch lets them share one).
WITH_MESSAGE = frozenset({"sub", "resub", "announcement", "bitsbadgetier", "viewermilestone", "cheer"})
# Kinds that need a paid tier (gifts cannot be Prime).
PAID_ONLY = frozenset({"subgift", "submysterygift"})


def build(kind: str, notice: Notice, options: Options) -> list[Event]:
    """Every event one trigger publishes, the channel's own first."""
    return BUILDERS[kind](notice, options)
