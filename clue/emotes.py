"""The emote set: fills the `emotes` tag and decides emote-only mode."""
from __future__ import annotations

# name → Twitch emote id; replaced by the EMOTES setting (`Name=id,Name=id`).
DEFAULT_EMOTES = (
    "Kappa=25,PogChamp=88,LUL=425618,4Head=354,BibleThump=86,Kreygasm=41,"
    "ResidentSleeper=245,SeemsGood=64138,NotLikeThis=58765,TriHard=120232"
)


def parse_emote_set(text: str) -> dict[str, str]:
    emotes: dict[str, str] = {}
    for item in text.split(","):
        name, sep, emote_id = item.strip().partition("=")
        if not sep or not name or not emote_id.strip().isalnum():
            raise ValueError(f"expected Name=id pairs, got {item!r}")
        emotes[name] = emote_id.strip()
    return emotes


def emotes_tag(text: str, emotes: dict[str, str]) -> tuple[str, bool]:
    """Twitch's `emotes` tag (`id:start-end,start-end/id:…`, character
    positions) and whether the text is nothing but emotes."""
    positions: dict[str, list[str]] = {}
    only_emotes = True
    index = 0
    for word in text.split(" "):
        if word:
            emote_id = emotes.get(word)
            if emote_id is None:
                only_emotes = False
            else:
                positions.setdefault(emote_id, []).append(f"{index}-{index + len(word) - 1}")
        index += len(word) + 1
    tag = "/".join(f"{emote_id}:{','.join(spans)}" for emote_id, spans in positions.items())
    return tag, only_emotes and bool(positions)
