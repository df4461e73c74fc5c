"""Twitch's rate profiles (pajbot/tmi-rate-limits), each refusing exactly at its
limit: the two message buckets by role and bot status, the per-channel 1 s
floor, the duplicate rule with its U+E0000 bypass, and the JOIN rate and cap.

Every verdict is read one message at a time (USERSTATE: accepted, NOTICE: the
refusal), so "exactly the last one is refused" is what the server decided for
each message, in order."""
from __future__ import annotations

import asyncio
import itertools
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_asyncio
from support import IrcClient, running_cluster

from chatd.cluster import load_or_create_secret
from clue import limits
from clue.validation import Check, duplicate_digest, load_scripts, run_checks
from common import twitch
from common.irc import Message, parse
from common.metrics import Metrics
from common.shards import ShardSet, pipeline_call, user_key
from common.tokens import verify_token

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(90)]

REPO = Path(__file__).resolve().parent.parent
RATELIMIT_TEXT = "Your message was not sent because you are sending messages too quickly."
# Bucket tests: no floor (one channel can take a burst), a verified bot's buckets small enough to fill.
PROFILES_ENV = {"CHANNEL_FLOOR": "0", "RATE_LIMIT_VERIFIED": "200"}
# Twitch's floor, and windows short enough to watch them end.
FLOOR_ENV = {"CHANNEL_FLOOR": "1s", "RATE_WINDOW": "4s", "DUPLICATE_WINDOW": "2s", "EDGE_MAX_CHANNELS": "16"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster(tmp_path_factory):
    async with running_cluster(tmp_path_factory.mktemp("profiles"), edges=1, shards=2, env=PROFILES_ENV) as cluster:
        yield cluster


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def floor_cluster(tmp_path_factory):
    async with running_cluster(tmp_path_factory.mktemp("floor"), edges=1, shards=1, env=FLOOR_ENV) as cluster:
        yield cluster


async def connect(cluster, login: str, bot: str = "") -> IrcClient:
    """A logged-in client whose token carries a bot status."""
    irc_port, _ = cluster.edge_addresses(0)
    client = await IrcClient.tcp(irc_port, name=login)
    cluster._clients.append(client)
    await client.register(login, cluster.token(login, bot=bot))
    return client


async def answer(client: IrcClient, channel: str) -> Message:
    """The server's answer to the client's last message to `channel`."""
    return parse(await client.expect(rf" (?:USERSTATE|NOTICE) {re.escape(channel)}(?: |$)"))


def verdict(message: Message) -> str:
    return "ok" if message.command == "USERSTATE" else message.tags["msg-id"]


async def send(client: IrcClient, channel: str, text: str) -> str:
    await client.send(f"PRIVMSG {channel} :{text}")
    return verdict(await answer(client, channel))


async def burst(client: IrcClient, channel: str, count: int, label: str) -> list[str]:
    """`count` distinct messages, each sent once the previous one is answered."""
    return [await send(client, channel, f"{label} {n}") for n in range(count)]


async def grant(cluster, channel: str, role: str, login: str) -> None:
    """The broadcaster of `channel` makes `login` a moderator or VIP (`role`: mod or vip)."""
    owner = await connect(cluster, channel.lstrip("#"))
    await owner.send(f"PRIVMSG {channel} :/{role} {login}")
    assert verdict(await answer(owner, channel)) == f"{role}_success"


async def until_accepted(client: IrcClient, message: Callable[[int], tuple[str, str]],
                         timeout: float = 15.0) -> list[str]:
    """Send `message(n)` (channel, text) for n = 0, 1, … until one is accepted (a
    window has ended); returns the refusals on the way."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    refusals: list[str] = []
    for n in itertools.count():
        result = await send(client, *message(n))
        if result == "ok":
            return refusals
        refusals.append(result)
        assert loop.time() < deadline, f"{client.name}: still refused after {timeout} s: {refusals[-3:]}"
        await asyncio.sleep(0.1)
    raise AssertionError("unreachable")


# ---- the message buckets

async def test_an_ordinary_user_is_refused_at_message_21_with_twitchs_notice(cluster):
    user = await connect(cluster, "plain_user")
    verdicts = await burst(user, "#plain", 20, "line")
    await user.send("PRIVMSG #plain :line 20")
    refusal = await answer(user, "#plain")
    assert verdicts == ["ok"] * 20
    assert refusal.command == "NOTICE" and refusal.tags["msg-id"] == "msg_ratelimit"
    assert refusal.params[-1] == RATELIMIT_TEXT == twitch.notice_text("msg_ratelimit", channel="#plain")


@pytest.mark.parametrize("role", ["broadcaster", "mod", "vip"])
async def test_broadcaster_moderator_and_vip_are_refused_at_message_101(cluster, role):
    channel = f"#room_{role}"
    login = channel[1:] if role == "broadcaster" else f"{role}_sender"
    sender = await connect(cluster, login)
    if role != "broadcaster":
        await grant(cluster, channel, role, login)
    await sender.send(f"PRIVMSG {channel} :first")
    first = await answer(sender, channel)
    assert verdict(first) == "ok" and first.tags["badges"].startswith(role)  # the role holds from the first
    verdicts = await burst(sender, channel, 100, role)
    assert verdicts == ["ok"] * 99 + ["msg_ratelimit"]


async def test_a_known_bot_is_refused_at_message_51_with_or_without_a_role(cluster):
    plain = await connect(cluster, "known_plain", bot="known")
    assert await burst(plain, "#known_room", 51, "beep") == ["ok"] * 50 + ["msg_ratelimit"]
    moderator = await connect(cluster, "known_mod", bot="known")
    await grant(cluster, "#known_home", "mod", "known_mod")
    # Less than an ordinary moderator's 100, as on Twitch.
    assert await burst(moderator, "#known_home", 51, "boop") == ["ok"] * 50 + ["msg_ratelimit"]


async def test_a_verified_bot_passes_100_and_is_refused_only_past_its_own_limit(cluster):
    bot = await connect(cluster, "verified_bot", bot="verified")
    # RATE_LIMIT_VERIFIED=200 here (Twitch: 7500); no role in the channel, and no floor for it.
    verdicts = await burst(bot, "#verified_room", 201, "fast")
    assert verdicts == ["ok"] * 200 + ["msg_ratelimit"]


async def test_a_message_where_the_sender_has_no_role_draws_on_both_buckets(cluster):
    user = await connect(cluster, "two_buckets")
    await grant(cluster, "#tb_home", "mod", "two_buckets")
    # The user bucket (20) is drained by messages where the user has no role ...
    assert await burst(user, "#tb_plain", 21, "plain") == ["ok"] * 20 + ["msg_ratelimit"]
    # ... which also took 20 of the moderator bucket's 100 (the refused one took nothing):
    # where the user is a moderator, 80 more go through.
    assert await burst(user, "#tb_home", 81, "mod") == ["ok"] * 80 + ["msg_ratelimit"]


async def test_a_drained_moderator_bucket_refuses_messages_everywhere(cluster):
    user = await connect(cluster, "mod_first")
    await grant(cluster, "#mf_home", "mod", "mod_first")
    assert await burst(user, "#mf_home", 90, "mod") == ["ok"] * 90
    # The user bucket has taken nothing, but the moderator bucket has 10 left.
    assert await burst(user, "#mf_plain", 11, "plain") == ["ok"] * 10 + ["msg_ratelimit"]


async def test_commands_take_from_the_same_buckets_as_chat(cluster):
    user = await connect(cluster, "commander")
    assert await burst(user, "#cmd_room", 19, "talk") == ["ok"] * 19
    assert await send(user, "#cmd_room", "/color Blue") == "color_changed"  # the 20th
    assert await send(user, "#cmd_room", "one too many") == "msg_ratelimit"
    assert await send(user, "#cmd_room", "/color Red") == "msg_ratelimit"


# ---- duplicates

async def test_a_duplicate_is_the_last_message_after_normalization_and_u_e0000_makes_it_new(cluster):
    user = await connect(cluster, "parrot_two")
    viewer = await connect(cluster, "dup_viewer")
    await viewer.join("#dupes")
    assert await send(user, "#dupes", "same  words") == "ok"
    await user.send("PRIVMSG #dupes :same words")  # runs of spaces count as one
    refusal = await answer(user, "#dupes")
    assert refusal.tags["msg-id"] == "msg_duplicate"
    assert refusal.params[-1] == twitch.NOTICE_TEXTS["msg_duplicate"]
    assert await send(user, "#dupes", "  same words ") == "msg_duplicate"  # trimmed
    assert await send(user, "#dupes", "same words \U000e0000") == "ok"  # Twitch's bypass
    assert await send(user, "#dupes", "same words") == "ok"  # only the last message counts
    assert await send(user, "#elsewhere_dupes", "same words") == "ok"  # and only in its channel
    await viewer.wait_for_texts({"same  words", "same words \U000e0000", "same words"}, "#dupes")


@pytest.mark.parametrize("role", ["mod", "vip"])
async def test_moderators_and_vips_may_repeat_themselves(cluster, role):
    login = f"{role}_repeater"
    user = await connect(cluster, login)
    await grant(cluster, f"#{role}_repeats", role, login)
    assert [await send(user, f"#{role}_repeats", "again and again") for _ in range(3)] == ["ok"] * 3


# ---- the per-channel floor (Twitch's minimum slow mode of 1 s)

async def test_a_second_message_to_a_channel_within_1s_is_refused_but_another_channel_is_not(floor_cluster):
    for login, bot in (("floor_user", ""), ("floor_known", "known")):
        user = await connect(floor_cluster, login, bot=bot)
        channel, other = f"#{login}_a", f"#{login}_b"
        assert await send(user, channel, "one") == "ok"
        await user.send(f"PRIVMSG {channel} :two")
        refusal = await answer(user, channel)
        assert (refusal.tags["msg-id"], refusal.params[-1]) == ("msg_ratelimit", RATELIMIT_TEXT), login
        assert await send(user, other, "three") == "ok"
        # Once the second has passed, the channel takes messages again (refusals took no time from it).
        await until_accepted(user, lambda n, channel=channel: (channel, "four"))


async def test_moderators_vips_the_broadcaster_and_verified_bots_skip_the_floor(floor_cluster):
    senders = [await connect(floor_cluster, "floor_room"), await connect(floor_cluster, "verified_floor", "verified")]
    for role in ("mod", "vip"):
        senders.append(await connect(floor_cluster, f"floor_{role}"))
        await grant(floor_cluster, "#floor_room", role, f"floor_{role}")
    for sender in senders:
        assert await burst(sender, "#floor_room", 3, sender.name) == ["ok"] * 3, sender.name


async def test_a_channels_slow_mode_keeps_its_own_notice(floor_cluster):
    owner = await connect(floor_cluster, "slow_room")
    await owner.join("#slow_room")  # the room is told
    await owner.send("PRIVMSG #slow_room :/slow 5")
    await owner.expect(r"msg-id=slow_on")
    user = await connect(floor_cluster, "slow_user")
    assert await send(user, "#slow_room", "first") == "ok"
    await user.send("PRIVMSG #slow_room :second")
    refusal = await answer(user, "#slow_room")
    assert refusal.tags["msg-id"] == "msg_slowmode"
    assert re.fullmatch(r"This room is in slow mode .* talk again in [1-5] seconds\.", refusal.params[-1])


async def test_a_duplicate_and_a_full_bucket_pass_once_their_windows_end(floor_cluster):
    user = await connect(floor_cluster, "window_user")
    assert await send(user, "#window_room", "say it again") == "ok"
    # DUPLICATE_WINDOW=2s: refused by the floor, then as a duplicate, then accepted.
    refusals = await until_accepted(user, lambda n: ("#window_room", "say it again"))
    assert "msg_duplicate" in refusals and set(refusals) <= {"msg_ratelimit", "msg_duplicate"}, refusals
    # RATE_WINDOW=4s: 20 quick messages fill the user bucket (each to its own channel:
    # no floor) ...
    fresh = await connect(floor_cluster, "refill_user")
    verdicts = [await send(fresh, f"#refill_{n}", "hello") for n in range(21)]
    assert verdicts == ["ok"] * 20 + ["msg_ratelimit"]
    # ... and the window refills as its messages age out.
    refusals = await until_accepted(fresh, lambda n: (f"#refilled_{n}", "hello"))
    assert set(refusals) <= {"msg_ratelimit"}


# ---- JOINs

JOIN_ANSWERS = ("366", "NOTICE", "405")  # joined (end of NAMES), refused, over the cap


async def join_answers(client: IrcClient, channels: list[str]) -> list[Message]:
    """JOIN every channel in one line: the answer for each, in the order asked
    (whatever order they come in)."""
    await client.send("JOIN " + ",".join(channels))

    def answered(lines: list[str]) -> dict[str, Message]:
        found = {}
        for message in map(parse, lines):
            if message.command in JOIN_ANSWERS and len(message.params) >= 2:
                channel = message.params[0] if message.command == "NOTICE" else message.params[1]
                found.setdefault(channel, message)
        return found

    await client.wait_for(lambda lines: set(channels) <= set(answered(lines)))
    found = answered(client.lines)
    return [found[channel] for channel in channels]


async def test_a_verified_bot_joins_past_20_in_10s_and_an_ordinary_user_is_stopped_at_21(floor_cluster):
    for login, bot, joined in (("join_plain", "", 20), ("join_verified", "verified", 30)):
        # Two connections, 15 JOINs each: under EDGE_JOIN_RATE_LIMIT (20 per connection),
        # over JOIN_RATE_LIMIT (20 per user) together.
        connections = [await connect(floor_cluster, login, bot=bot) for _ in range(2)]
        answers = await asyncio.gather(*(
            join_answers(connection, [f"#{login}_{half}_{n}" for n in range(15)])
            for half, connection in enumerate(connections)))
        flat = [message for group in answers for message in group]
        assert sum(message.command == "366" for message in flat) == joined, login
        refused = [message for message in flat if message.command != "366"]
        assert all(message.tags.get("msg-id") == "msg_join_ratelimit" and message.params[-1]
                   == twitch.NOTICE_TEXTS["msg_join_ratelimit"] for message in refused), refused[:1]


async def test_a_connection_over_its_channel_cap_gets_405(floor_cluster):
    irc_port, _ = floor_cluster.edge_addresses(0)
    anonymous = await IrcClient.tcp(irc_port, name="capped")
    floor_cluster._clients.append(anonymous)
    await anonymous.register("justinfan4242")
    answers = await join_answers(anonymous, [f"#cap_{n}" for n in range(17)])  # EDGE_MAX_CHANNELS=16 here
    assert [message.command for message in answers] == ["366"] * 16 + ["405"]
    assert answers[-1].params[-1] == "You have joined too many channels"


# ---- the check script's contract, against a real Redis

@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shards(cluster):
    host, port = cluster.redis_addresses[0].rsplit(":", 1)
    shards = ShardSet([(host, int(port))], 2, 1.0, Metrics("127.0.0.1", 9, "t", "t"))
    yield shards
    await shards.close()


def check(user_id: str, member: str, text: str = "hi", **fields) -> Check:
    values = {"moderator_limit": 3, "user_limit": 2, "rate_window_ms": 60_000, "duplicate_window_ms": 0} | fields
    return Check(user_id=user_id, channel="#contract", text=text, member=member, **values)


async def bucket_sizes(shards: ShardSet, user_id: str) -> list[int]:
    keys = [user_key(user_id, limits.MODERATOR_BUCKET), user_key(user_id, limits.USER_BUCKET)]
    return await pipeline_call(shards.for_key(keys[0]), "test", [("ZCARD", key) for key in keys])


async def test_the_script_charges_both_buckets_once_per_message_id(shards):
    checks = [check("9001", "m1", "a"), check("9001", "m1", "a"), check("9001", "m2", "b"), check("9001", "m3", "c")]
    await run_checks(shards, checks, 2.0)
    # A retried id is accepted again without a second charge; the user bucket (2) refuses the third.
    assert [c.verdict for c in checks] == ["ok", "ok", "ok", "msg_ratelimit"]
    assert await bucket_sizes(shards, "9001") == [2, 2]
    privileged = [check("9001", "m4", "d", user_limit=0), check("9001", "m5", "e", user_limit=0)]
    await run_checks(shards, privileged, 2.0)
    assert [c.verdict for c in privileged] == ["ok", "msg_ratelimit"]  # the moderator bucket (3) is full
    assert await bucket_sizes(shards, "9001") == [3, 2]


async def test_the_script_charges_nothing_after_its_deadline(shards):
    await load_scripts(shards)
    late = check("9002", "late", floor_ms=1000, duplicate_window_ms=30_000)
    [result] = await pipeline_call(shards.for_key(late.rate_key), "test", [late.command(deadline_ms=1)])
    assert result[0] == b"expired"
    assert await bucket_sizes(shards, "9002") == [0, 0]
    on_time = check("9002", "late", floor_ms=1000, duplicate_window_ms=30_000)
    await run_checks(shards, [on_time], 2.0)
    assert on_time.verdict == "ok" and await bucket_sizes(shards, "9002") == [1, 1]


async def test_the_script_refills_as_messages_leave_the_window(shards):
    verdicts = []
    for n in range(3):
        one = check("9003", f"w{n}", f"t{n}", user_limit=2, rate_window_ms=300)
        await run_checks(shards, [one], 2.0)
        verdicts.append(one.verdict)
    assert verdicts == ["ok", "ok", "msg_ratelimit"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        again = check("9003", f"again{loop.time()}", "later", user_limit=2, rate_window_ms=300)
        await run_checks(shards, [again], 2.0)
        if again.verdict == "ok":
            break
        assert again.verdict == "msg_ratelimit" and loop.time() < deadline, "the window never refilled"
        await asyncio.sleep(0.05)


async def test_commands_charge_the_buckets_through_the_same_keys(shards):
    results = [await limits.charge_buckets(shards, "9004", f"c{n}", (3, 2), 60_000) for n in range(3)]
    assert results == [0, 0, 2]  # the user bucket is the one drained
    assert await limits.charge_buckets(shards, "9004", "c0", (3, 2), 60_000) == 0  # already taken: no charge
    assert await limits.charge_buckets(shards, "9004", "c3", (3, 0), 60_000) == 0  # a role: moderator bucket only
    assert await limits.charge_buckets(shards, "9004", "c4", (3, 0), 60_000) == 1
    assert await bucket_sizes(shards, "9004") == [3, 2]


# ---- the bot status, from the command line to the identity

async def test_token_issue_bot_puts_the_status_in_the_token(tmp_path):
    def issue(*options: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "chatd.cli", "token", "issue", "botty", *options, "--quiet",
                   "--data-dir", str(tmp_path)]  # this checkout's chatd (the cwd comes first on the path)
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=30, check=False)

    secret = load_or_create_secret(tmp_path)
    for status in ("known", "verified"):
        issued = issue("--bot", status)
        assert issued.returncode == 0, issued.stderr
        assert verify_token(secret, issued.stdout.strip()).bot == status
    assert verify_token(secret, issue().stdout.strip()).bot == ""
    assert issue("--bot", "robot").returncode == 2


# ---- pure rules (async only because the module's asyncio mark covers every test)

async def test_the_profiles_by_bot_status_and_role_follow_twitch():
    settings = SimpleNamespace(rate_limit=20, rate_limit_privileged=100, rate_limit_known=50, rate_limit_verified=7500,
                               join_limit=20, join_limit_verified=2000)
    assert limits.rate_buckets(settings, "", privileged=False) == (100, 20)
    assert limits.rate_buckets(settings, "", privileged=True) == (100, 0)
    assert limits.rate_buckets(settings, "known", privileged=False) == (50, 50)
    assert limits.rate_buckets(settings, "known", privileged=True) == (50, 0)
    assert limits.rate_buckets(settings, "verified", privileged=False) == (7500, 7500)
    # RATE_LIMIT raised past RATE_LIMIT_PRIVILEGED keeps its meaning: that many for an ordinary user.
    assert limits.rate_buckets(SimpleNamespace(**vars(settings) | {"rate_limit": 1000}), "", False) == (1000, 1000)
    assert limits.join_limit(settings, SimpleNamespace(bot="verified")) == 2000
    assert limits.join_limit(settings, SimpleNamespace(bot="known")) == 20
    assert limits.join_limit(settings, None) == 20


@pytest.mark.parametrize(("first", "second", "same"), [
    ("same words", "same  words", True),
    ("same words", "  same words\t", True),
    ("same words", "same words \U000e0000", False),
    ("same words", "Same words", False),
    ("a  b  c", "a b c", True),
])
async def test_the_duplicate_digest_normalizes_like_twitch(first, second, same):
    assert (duplicate_digest(first) == duplicate_digest(second)) is same
