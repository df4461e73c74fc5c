// How names and badges look, as on Twitch: a user without a color gets one of
// Twitch's defaults (the same for a login every time), too-dark colors are lightened
// for the dark background, and badges are small labelled squares.

const DEFAULT_COLORS = ["#FF0000", "#0000FF", "#008000", "#B22222", "#FF7F50", "#9ACD32", "#FF4500", "#2E8B57",
  "#DAA520", "#D2691E", "#5F9EA0", "#1E90FF", "#FF69B4", "#8A2BE2", "#00FF7F"];

const BADGES = {
  broadcaster: ["B", "Broadcaster"],
  moderator: ["M", "Moderator"],
  vip: ["V", "VIP"],
  subscriber: ["S", "Subscriber"],
  partner: ["✓", "Verified"],
  verified: ["✓", "Verified"],
  premium: ["P", "Prime Gaming"],
  turbo: ["T", "Turbo"],
  staff: ["S", "Staff"],
  admin: ["A", "Admin"],
  bits: ["b", "Bits"],
  founder: ["F", "Founder"],
};

export function nameColor(color, login) {
  let hex = /^#[0-9a-f]{6}$/i.test(color || "") ? color : "";
  if (!hex) {
    let hash = 0;
    for (const char of login) hash = (hash * 31 + char.charCodeAt(0)) >>> 0;
    hex = DEFAULT_COLORS[hash % DEFAULT_COLORS.length];
  }
  let [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  const luminance = (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
  if (luminance < 0.35) { // readable on the dark background: mix with white
    const mix = (0.35 - luminance) * 1.6;
    [r, g, b] = [r, g, b].map((v) => Math.round(v + (255 - v) * Math.min(mix, 0.6)));
  }
  return `rgb(${r}, ${g}, ${b})`;
}

export function badgeElement(badge) {
  const [name, version] = badge.split("/");
  const [letter, title] = BADGES[name] || [name.slice(0, 1).toUpperCase(), name];
  const node = document.createElement("span");
  node.className = `badge ${name}`;
  node.textContent = letter;
  node.title = version && name === "subscriber" ? `${title} (${version} months)` : title;
  node.dataset.badge = name;
  return node;
}
