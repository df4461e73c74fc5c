"""The edge's sans-I/O connection state machine, fed strings."""
import pytest

from common.irc import LineTooLong
from common.wire import HistoryEntry, Identity
from edge.session import (
    Authenticate,
    Close,
    JoinChannel,
    PartChannel,
    Publish,
    Reply,
    Session,
)

ALICE = Identity(login="alice", user_id="1001", display_name="Alice", color="#FF0000")


def lines(actions) -> list[str]:
    return [a.line for a in actions if isinstance(a, Reply)]


def registered(caps: str = "twitch.tv/tags twitch.tv/commands") -> Session:
    session = Session()
    session.receive(f"CAP REQ :{caps}")
    session.receive("PASS oauth:abc")
    [auth] = session.receive("NICK alice")
    assert isinstance(auth, Authenticate) and auth.token == "abc"
    session.login_succeeded(ALICE)
    return session


def test_cap_ls_holds_registration_until_cap_end():
    session = Session()
    assert lines(session.receive("CAP LS")) == [
        ":tmi.twitch.tv CAP * LS :twitch.tv/tags twitch.tv/commands twitch.tv/membership"
    ]
    assert session.receive("NICK justinfan1") == []
    assert lines(session.receive("CAP REQ :twitch.tv/tags twitch.tv/foo")) == [
        ":tmi.twitch.tv CAP * NAK :twitch.tv/tags twitch.tv/foo"
    ]
    assert lines(session.receive("CAP REQ :twitch.tv/membership")) == [
        ":tmi.twitch.tv CAP * ACK :twitch.tv/membership"
    ]
    welcome = lines(session.receive("CAP END"))
    assert welcome[0] == ":tmi.twitch.tv 001 justinfan1 :Welcome, GLHF!"
    assert welcome[-1] == ":tmi.twitch.tv 376 justinfan1 :>"
    assert session.anonymous


def test_login_uses_the_token_identity_and_sends_globaluserstate():
    session = Session()
    session.receive("CAP REQ :twitch.tv/tags twitch.tv/commands")
    session.receive("PASS oauth:abc")
    session.receive("NICK whoever")
    out = lines(session.login_succeeded(ALICE))
    assert out[0] == ":tmi.twitch.tv 001 alice :Welcome, GLHF!"
    assert out[-1] == (
        "@badge-info=;badges=;color=#FF0000;display-name=Alice;emote-sets=0;user-id=1001;user-type="
        " :tmi.twitch.tv GLOBALUSERSTATE"
    )


def test_missing_or_malformed_pass_is_refused():
    session = Session()
    session.receive("PASS hunter2")
    actions = session.receive("NICK alice")
    assert lines(actions) == [":tmi.twitch.tv NOTICE * :Improperly formatted auth"]
    assert isinstance(actions[-1], Close)


def test_failed_login_closes_with_twitchs_notice():
    session = Session()
    session.receive("PASS oauth:bad")
    session.receive("NICK alice")
    actions = session.login_failed()
    assert lines(actions) == [":tmi.twitch.tv NOTICE * :Login authentication failed"]
    assert isinstance(actions[-1], Close)


def test_lines_sent_during_login_are_replayed_after_it():
    session = Session()
    session.receive("PASS oauth:abc")
    session.receive("NICK alice")
    assert session.receive("JOIN #a") == []
    actions = session.login_succeeded(ALICE)
    assert JoinChannel("#a") in actions


def test_join_part_and_privmsg():
    session = registered()
    assert session.receive("JOIN #Foo,#bar,not-a-channel") == [
        JoinChannel("#foo"),
        JoinChannel("#bar"),
        Reply("@msg-id=msg_channel_suspended :tmi.twitch.tv NOTICE * :This channel does not exist or has been suspended."),
    ]
    out = lines(session.join_succeeded("#foo", {"room-id": "7"}, {"mod": "0"}))
    assert out[:3] == [
        ":alice!alice@alice.tmi.twitch.tv JOIN #foo",
        ":alice.tmi.twitch.tv 353 alice = #foo :alice",
        ":alice.tmi.twitch.tv 366 alice #foo :End of /NAMES list",
    ]
    assert out[3] == "@mod=0 :tmi.twitch.tv USERSTATE #foo"
    assert out[4] == "@room-id=7 :tmi.twitch.tv ROOMSTATE #foo"
    assert session.receive("@client-nonce=n;badges=staff/1 PRIVMSG #foo :hi there") == [
        Publish("#foo", "hi there", {"client-nonce": "n"})
    ]
    # As on Twitch: chat needs no completed JOIN (#bar is still joining) or any JOIN (#baz).
    assert session.receive("PRIVMSG #bar :not yet") == [Publish("#bar", "not yet", {})]
    assert session.receive("PRIVMSG #baz :drive-by") == [Publish("#baz", "drive-by", {})]
    assert lines(session.publish_accepted("#baz", {"id": "x"})) == ["@id=x :tmi.twitch.tv USERSTATE #baz"]
    actions = session.receive("PART #foo")
    assert actions[0] == PartChannel("#foo")
    assert lines(actions) == [":alice!alice@alice.tmi.twitch.tv PART #foo"]


def test_rejection_becomes_a_tagged_notice():
    session = registered()
    session.join_succeeded("#foo", {}, {})
    out = lines(session.notice("#foo", "msg_ratelimit", "Too fast."))
    assert out == ["@msg-id=msg_ratelimit :tmi.twitch.tv NOTICE #foo :Too fast."]


def test_without_tags_capability_lines_carry_no_tags():
    session = registered(caps="twitch.tv/commands")
    session.join_succeeded("#foo", {}, {})
    assert lines(session.notice("#foo", "msg_duplicate", "Same.")) == [
        ":tmi.twitch.tv NOTICE #foo :Same."
    ]


def test_errors_keep_the_session_usable():
    session = registered()
    assert lines(session.receive(LineTooLong("too long"))) == [":tmi.twitch.tv 417 alice :Input line was too long"]
    assert lines(session.receive("WHO #foo")) == [":tmi.twitch.tv 421 alice WHO :Unknown command"]
    assert lines(session.receive("PING :tmi.twitch.tv")) == [":tmi.twitch.tv PONG tmi.twitch.tv :tmi.twitch.tv"]
    assert isinstance(session.receive("QUIT")[0], Close)


def test_commands_before_registration_are_refused():
    session = Session()
    assert lines(session.receive("JOIN #foo")) == [":tmi.twitch.tv 451 * JOIN :You have not registered"]
    assert lines(session.receive("NICK Bad-Nick!")) == [":tmi.twitch.tv 432 * bad-nick! :Erroneous nickname"]


COMMAND_CASES = [
    # (registered, line, expected replies): the command table's checks, run before any handler.
    (False, "JOIN #foo", [":tmi.twitch.tv 451 * JOIN :You have not registered"]),
    (False, "PRIVMSG #foo :hi", [":tmi.twitch.tv 451 * PRIVMSG :You have not registered"]),
    (False, "WHO #foo", [":tmi.twitch.tv 451 * WHO :You have not registered"]),
    (False, "NICK", [":tmi.twitch.tv 431 * :No nickname given"]),
    (False, "PASS", [":tmi.twitch.tv 461 * PASS :Not enough parameters"]),
    (False, "CAP", [":tmi.twitch.tv 461 * CAP :Not enough parameters"]),
    (False, "USER a 0 * :a", []),
    (False, "PING :x", [":tmi.twitch.tv PONG tmi.twitch.tv :x"]),
    (True, "JOIN", [":tmi.twitch.tv 461 alice JOIN :Not enough parameters"]),
    (True, "PART", [":tmi.twitch.tv 461 alice PART :Not enough parameters"]),
    (True, "PRIVMSG", [":tmi.twitch.tv 411 alice :No recipient given (PRIVMSG)"]),
    (True, "PRIVMSG #foo", [":tmi.twitch.tv 412 alice :No text to send"]),
    (True, "PRIVMSG nobody :hi", [":tmi.twitch.tv 401 alice nobody :No such nick/channel"]),
    (True, "PRIVMSG #Not-A-Channel :hi",
     ["@msg-id=msg_channel_suspended :tmi.twitch.tv NOTICE * :This channel does not exist or has been suspended."]),
]


@pytest.mark.parametrize(("is_registered", "line", "expected"), COMMAND_CASES)
def test_command_table_checks_registration_and_parameters(is_registered, line, expected):
    session = registered() if is_registered else Session()
    assert lines(session.receive(line)) == expected


def test_joins_are_limited_per_connection_anonymous_ones_too():
    now = [100.0]
    session = Session(join_limit=3, clock=lambda: now[0])
    session.receive("NICK justinfan42")
    assert session.receive("JOIN #a,#b,#c") == [JoinChannel("#a"), JoinChannel("#b"), JoinChannel("#c")]
    assert lines(session.receive("JOIN #d")) == [
        ":tmi.twitch.tv NOTICE #d :You are joining channels too quickly. Try again in a few seconds."
    ]
    now[0] += 10.0
    assert session.receive("JOIN #d") == [JoinChannel("#d")]


def test_cap_ls_302_also_offers_ircv3_and_ircv3_clients_get_time_msgid_and_chathistory():
    session = Session()
    assert lines(session.receive("CAP LS 302")) == [
        ":tmi.twitch.tv CAP * LS :twitch.tv/tags twitch.tv/commands twitch.tv/membership server-time "
        "message-tags batch draft/chathistory echo-message"
    ]
    assert lines(session.receive("CAP REQ :server-time message-tags batch draft/chathistory")) == [
        ":tmi.twitch.tv CAP * ACK :server-time message-tags batch draft/chathistory"
    ]
    session.receive("NICK justinfan7")
    welcome = lines(session.receive("CAP END"))
    assert ":tmi.twitch.tv 005 justinfan7 CHATHISTORY=100 MSGREFTYPES=msgid,timestamp :are supported by this " \
           "server" in welcome
    [request] = session.receive("CHATHISTORY LATEST #chan * 500")
    assert (request.channel, request.subcommand, request.references, request.limit) == ("#chan", "LATEST", ["*"],
                                                                                        100)
    assert lines(session.receive("CHATHISTORY SIDEWAYS #chan * 5")) == [
        ":tmi.twitch.tv FAIL CHATHISTORY INVALID_PARAMS SIDEWAYS :Unknown subcommand"]
    entry = HistoryEntry(ts=5, command="PRIVMSG", line="@id=x;color= :a!a@a.tmi.twitch.tv PRIVMSG #chan :hi",
                         id="x", sent_ms=1_700_000_000_000)
    assert lines(session.history_ready(request, [entry], "b1")) == [
        ":tmi.twitch.tv BATCH +b1 chathistory #chan",
        "@batch=b1;time=2023-11-14T22:13:20.000Z;msgid=x;id=x;color= :a!a@a.tmi.twitch.tv PRIVMSG #chan :hi",
        ":tmi.twitch.tv BATCH -b1",
    ]


def test_a_twitch_client_never_gets_chathistory():
    session = registered()
    assert lines(session.receive("CHATHISTORY LATEST #chan * 5")) == [
        ":tmi.twitch.tv 421 alice CHATHISTORY :Unknown command"]
