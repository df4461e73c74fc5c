// IRC lines as Twitch sends them: `@tags :source COMMAND params :trailing` (IRCv3 message tags).

const ESCAPES = { ":": ";", s: " ", "\\": "\\", r: "\r", n: "\n" };

export function unescapeTag(value) {
  // An unknown escape is the character itself; a lone trailing backslash is dropped.
  return value.replace(/\\(.?)/g, (_, next) => (next in ESCAPES ? ESCAPES[next] : next));
}

export function parse(line) {
  let rest = line;
  const tags = {};
  let source = "";
  if (rest.startsWith("@")) {
    const space = rest.indexOf(" ");
    for (const part of rest.slice(1, space < 0 ? undefined : space).split(";")) {
      if (!part) continue;
      const equals = part.indexOf("=");
      if (equals < 0) tags[part] = "";
      else tags[part.slice(0, equals)] = unescapeTag(part.slice(equals + 1));
    }
    rest = space < 0 ? "" : rest.slice(space + 1).replace(/^ +/, "");
  }
  if (rest.startsWith(":")) {
    const space = rest.indexOf(" ");
    source = rest.slice(1, space < 0 ? undefined : space);
    rest = space < 0 ? "" : rest.slice(space + 1).replace(/^ +/, "");
  }
  const params = [];
  while (rest.length) {
    if (rest.startsWith(":")) {
      params.push(rest.slice(1));
      break;
    }
    const space = rest.indexOf(" ");
    if (space < 0) {
      params.push(rest);
      break;
    }
    params.push(rest.slice(0, space));
    rest = rest.slice(space + 1).replace(/^ +/, "");
  }
  const command = (params.shift() || "").toUpperCase();
  return { tags, source, nick: source.split("!")[0], command, params };
}

// The words of a CTCP ACTION (`/me`), or null for plain chat.
export function actionText(text) {
  return text.startsWith("\u0001ACTION ") && text.endsWith("\u0001") ? text.slice(8, -1) : null;
}
