// ANSI SGR colour codes (ESC [ ... m) to styled <span>s. The text always becomes text nodes; other
// escape sequences (cursor moves, erase, OSC titles) are dropped. 256-colour and RGB values are set
// through the CSSOM (element.style), which the page's CSP allows, unlike style="" attributes.

const SEQUENCE = /\x1b\[([0-9;]*)([A-Za-z])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;
const BASIC = ["#000000", "#cd3131", "#0dbc79", "#e5e510", "#2472c8", "#bc3fbc", "#11a8cd", "#e5e5e5",
  "#666666", "#f14c4c", "#23d18b", "#f5f543", "#3b8eea", "#d670d6", "#29b8db", "#ffffff"];

function color256(n) {
  if (n < 16) return BASIC[n];
  if (n >= 232) {
    const v = 8 + (n - 232) * 10;
    return `rgb(${v}, ${v}, ${v})`;
  }
  const i = n - 16;
  const steps = [0, 95, 135, 175, 215, 255];
  return `rgb(${steps[Math.floor(i / 36)]}, ${steps[Math.floor(i / 6) % 6]}, ${steps[i % 6]})`;
}

/** A fresh style state (pass the same one for consecutive lines to carry colours over). */
export function fresh() {
  return { bold: false, dim: false, italic: false, underline: false, fg: null, bg: null, fgColor: null, bgColor: null };
}

function extended(codes, i) {
  // 38;5;n or 38;2;r;g;b -> [css colour, codes consumed after the 38/48]
  if (codes[i + 1] === 5 && codes.length > i + 2) return [color256(codes[i + 2] & 255), 2];
  if (codes[i + 1] === 2 && codes.length > i + 4) {
    const [r, g, b] = codes.slice(i + 2, i + 5).map((v) => Math.max(0, Math.min(255, v)));
    return [`rgb(${r}, ${g}, ${b})`, 4];
  }
  return [null, codes.length];
}

function apply(state, params) {
  const codes = params === "" ? [0] : params.split(";").map((p) => (p === "" ? 0 : Number.parseInt(p, 10)));
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) Object.assign(state, fresh());
    else if (c === 1) state.bold = true;
    else if (c === 2) state.dim = true;
    else if (c === 3) state.italic = true;
    else if (c === 4) state.underline = true;
    else if (c === 22) { state.bold = false; state.dim = false; }
    else if (c === 23) state.italic = false;
    else if (c === 24) state.underline = false;
    else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) { state.fg = c; state.fgColor = null; }
    else if (c === 39) { state.fg = null; state.fgColor = null; }
    else if (c >= 40 && c <= 47) { state.bg = c; state.bgColor = null; }
    else if (c >= 100 && c <= 107) { state.bg = null; state.bgColor = BASIC[c - 100 + 8]; }
    else if (c === 49) { state.bg = null; state.bgColor = null; }
    else if (c === 38 || c === 48) {
      const [colour, used] = extended(codes, i);
      if (colour && c === 38) { state.fg = null; state.fgColor = colour; }
      if (colour && c === 48) { state.bg = null; state.bgColor = colour; }
      i += used;
    }
  }
}

function styled(state, text) {
  const plain = !state.bold && !state.dim && !state.italic && !state.underline && state.fg === null
    && state.bg === null && !state.fgColor && !state.bgColor;
  if (plain) return document.createTextNode(text);
  const span = document.createElement("span");
  const classes = [];
  if (state.bold) classes.push("ansi-bold");
  if (state.dim) classes.push("ansi-dim");
  if (state.italic) classes.push("ansi-italic");
  if (state.underline) classes.push("ansi-underline");
  if (state.fg !== null) classes.push(`ansi-fg-${state.fg}`);
  if (state.bg !== null) classes.push(`ansi-bg-${state.bg}`);
  span.className = classes.join(" ");
  if (state.fgColor) span.style.color = state.fgColor;
  if (state.bgColor) span.style.backgroundColor = state.bgColor;
  span.textContent = text;
  return span;
}

/** Nodes for one line of terminal output; `state` (optional) carries styles across lines. */
export function renderAnsi(line, state = fresh()) {
  const nodes = [];
  let last = 0;
  const text = String(line ?? "");
  SEQUENCE.lastIndex = 0;
  for (let found = SEQUENCE.exec(text); found; found = SEQUENCE.exec(text)) {
    if (found.index > last) nodes.push(styled(state, text.slice(last, found.index)));
    if (found[2] === "m") apply(state, found[1]);
    last = SEQUENCE.lastIndex;
  }
  if (last < text.length) nodes.push(styled(state, text.slice(last)));
  return nodes;
}
