// Slash commands, the same words as the terminal client. Each returns
// nothing or throws UserError / InviteError, whose message the app shows as
// a notice: a command never fails silently.

import { UNVERIFIED_MEANING, UserError } from "./state.js";
import { InviteError } from "../lib/invite.js";
import { checkText, DEFAULT_CHANNEL, MAX_TEXT } from "../lib/wire.js";
import { GIVEN_ROLES, channelName } from "../lib/chatmodel.js";
import { fullTime } from "./dom.js";

// [usage, what it does]; the help overlay and Tab completion read this list.
export const COMMANDS = [
  ["/help", "this help (F1)"],
  ["/invite", "this circle's invite code, with a QR code (F2)"],
  ["/join CODE", "join a circle with an invite code"],
  ["/circles", "list your circles"],
  ["/circle create NAME", "create a new circle"],
  ["/circle join CODE", "the same as /join CODE"],
  ["/circle name NEW-NAME", "rename this circle (every member sees it)"],
  ["/circle leave", "leave this circle and forget its secret"],
  ["/channels", "list this circle's channels"],
  ["/channel create NAME [shared] [invite | key KEY]", "create a channel and go there: public, or by invitation or with a key (private: only its members read it, unless shared)"],
  ["/channel join NAME [KEY]", "join a channel (a key channel needs its key) and go there"],
  ["/channel leave NAME", "leave a channel: it is listed no more (a private one's next key leaves you out)"],
  ["/channel switch NAME", "go to a channel (Tab completes the name)"],
  ["/channel request NAME", "ask to join an invite-only channel"],
  ["/channel approve NAME PERSON", "let someone who asked into an invite-only channel"],
  ["/who [CHANNEL]", "who is in this circle, or in one of its channels, with their roles (? = unverified; removed ones say so)"],
  ["/role moderator|member PERSON", "the circle's owner makes someone a moderator, or a member again"],
  ["/kick PERSON", "remove someone from this circle (owner or moderator): the circle gets a new key they do not have"],
  ["/name [NEW-NAME]", "your display name, in every circle (without one: what it is)"],
  ["/settings", "display name, relay URL, STUN/TURN servers (F3)"],
  ["/call start|join|view|leave|end", "start a call in this channel, join it, watch it (receive only), leave it; end: the host ends it for all (F4 shows the call)"],
  ["/call revoke PERSON", "the call's host takes a viewer out of it"],
  ["/call block|unblock PERSON", "refuse that person's calls in this page, or take them again (nobody is told)"],
];

export const KEYS = [
  ["F1", "help"],
  ["F2", "invite code and QR code"],
  ["F3", "settings"],
  ["F4", "show or hide the call panel"],
  ["F5", "show or hide the circles and channels"],
  ["Escape", "close an overlay, back to the input"],
  ["Alt+Up / Alt+Down", "previous / next channel"],
  ["Enter / Shift+Enter", "send / a new line in the message"],
  ["Up / Down", "input history (from the first / last line)"],
  ["Tab", "complete a command or channel name"],
  ["PageUp / PageDown", "scroll the messages"],
];

// Display names and circle names: the node's chatmodel refuses longer ones.
const MAX_NAME = 64;

/** The first-level words, for completion. */
export const COMMAND_WORDS = [...new Set(COMMANDS.map(([u]) => u.split(" ")[0]))];
export const SUBCOMMANDS = {
  "/circle": ["create", "join", "name", "leave"],
  "/channel": ["create", "join", "switch", "leave", "request", "approve"],
  "/role": GIVEN_ROLES,
  "/call": ["start", "join", "view", "leave", "end", "revoke", "block", "unblock"],
};

/** A display or circle name the nodes accept too (felund/chatmodel.py _good_name); throws UserError. */
export function checkName(name, what) {
  if (!name) throw new UserError(`give a ${what}`);
  if (name.length > MAX_NAME) throw new UserError(`a ${what} has at most ${MAX_NAME} characters`);
  // Same rule as the node's chatmodel (str.isprintable): no control characters.
  if (/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u.test(name)) {
    throw new UserError(`a ${what} cannot contain control characters`);
  }
}

function channelArg(raw) {
  if (!raw) throw new UserError("give a channel name");
  try {
    return channelName(raw);
  } catch (e) {
    throw new UserError(e.message);
  }
}

/**
 * Run one input line. `app` gives: state, showHelp(), showInvite(), showSettings().
 * A line not starting with "/" is a message; "//text" sends "/text".
 */
export async function runLine(line, app) {
  const { state } = app;
  if (!line.startsWith("/") || line.startsWith("//")) {
    const text = line.startsWith("//") ? line.slice(1) : line;
    try {
      checkText(text);
    } catch (e) {
      throw new UserError(
        e.kind === "size"
          ? `message not sent: at most ${MAX_TEXT} characters`
          : "message not sent: it has characters that cannot be sent (broken Unicode)",
      );
    }
    await state.send(text);
    return;
  }
  const [cmd, ...rest] = line.trim().split(/\s+/);
  const argText = line.trim().slice(cmd.length).trim();
  switch (cmd) {
    case "/help":
      app.showHelp();
      return;
    case "/invite":
      app.showInvite();
      return;
    case "/settings":
      app.showSettings();
      return;
    case "/join":
      return joinCircle(argText, state);
    case "/circles":
      if (!state.circles.size) state.notice("no circles yet: /circle create NAME or /join CODE");
      for (const view of state.circles.values()) {
        const cur = view.id === state.current.circleId ? " (current)" : "";
        state.notice(`${state.circleName(view)}  ${view.id}  via ${view.circle.relayUrl}${cur}`);
      }
      return;
    case "/circle":
      return circleCommand(rest[0], argText.slice((rest[0] || "").length).trim(), app);
    case "/channels": {
      const view = state.view();
      if (!view) throw new UserError("join or create a circle first");
      for (const ch of state.channels(view)) {
        const info = view.model.channels.get(ch);
        const mode = info ? info.accessMode : "public";
        const n = info ? info.members.size : 0;
        const members = ch === DEFAULT_CHANNEL ? ", everyone" : `, ${n} member${n === 1 ? "" : "s"}`;
        const asked = info && info.requests.size ? `, asked to join: ${info.requests.size}` : "";
        const sealed = info?.private ? " private" : "";
        state.notice(`#${ch}  ${mode}${sealed}${members}${asked}`);
      }
      return;
    }
    case "/channel":
      if (rest[0] === "create") return createChannel(line, app);
      if (rest[0] === "join") {
        const id = channelArg(rest[1]);
        // The key is the rest of the line as typed (it may hold spaces); only its hash is sent.
        const key = line.trim().replace(/^\S+\s+\S+\s+\S+\s*/, "");
        await state.joinChannel(id, key);
        state.notice(`joined #${id}`);
        return;
      }
      if (rest[0] === "switch") {
        await state.switchChannel(channelArg(rest[1]));
        return;
      }
      if (rest[0] === "leave") {
        const id = channelArg(rest[1]);
        await state.leaveChannel(id);
        state.notice(`left #${id}`);
        return;
      }
      if (rest[0] === "request") {
        const id = channelArg(rest[1]);
        await state.requestChannel(id);
        state.notice(`asked to join #${id}; a member must approve`);
        return;
      }
      if (rest[0] === "approve") {
        const id = channelArg(rest[1]);
        const who = line.trim().replace(/^\S+\s+\S+\s+\S+\s*/, ""); // a name may hold spaces
        if (!who) throw new UserError("usage: /channel approve NAME PERSON");
        await state.approve(id, who);
        state.notice(`approved ${who} in #${id}`);
        return;
      }
      throw new UserError(
        "usage: /channel create NAME [shared] [invite | key KEY] | join NAME [KEY] | switch NAME | leave NAME | request NAME | approve NAME PERSON",
      );
    case "/who": {
      const view = state.view();
      if (!view) throw new UserError("join or create a circle first");
      const channelId = rest[0] ? channelArg(rest[0]) : "";
      const people = state.people(view, channelId);
      const where = channelId ? `#${channelId}` : "the circle";
      if (!people.length) state.notice(`nobody in ${where} yet`);
      else state.notice(`in ${where}:`);
      for (const p of people) {
        const mark = p.verified ? "" : "?";
        const seen = fullTime(p.lastSeen);
        state.notice(`${mark}${p.displayName}  ${p.nodeId.slice(0, 8)}  ${p.role}  last seen ${seen}`);
      }
      if (people.some((p) => !p.verified)) state.notice(UNVERIFIED_MEANING);
      return;
    }
    case "/role": {
      const who = line.trim().replace(/^\S+\s+\S+\s*/, ""); // a name may hold spaces
      if (!GIVEN_ROLES.includes(rest[0]) || !who) throw new UserError("usage: /role moderator|member PERSON");
      await state.setRole(who, rest[0]);
      state.notice(`${who} is now a ${rest[0]}`);
      return;
    }
    case "/kick":
      return kick(argText, app);
    case "/call":
      await app.calls.command(rest[0], rest.slice(1).join(" "));
      app.callPanel.toggle(true);
      return;
    case "/name":
      if (!argText) {
        state.notice(`you are ${state.identity.displayName} (/name NEW-NAME changes it)`);
        return;
      }
      checkName(argText, "display name");
      await state.rename(argText);
      state.notice(`you are now ${argText}`);
      return;
    default:
      throw new UserError(`unknown command ${cmd} (F1 or /help lists them; //text sends "/text")`);
  }
}

const CREATE_USAGE = "usage: /channel create NAME [shared] [invite | key KEY]";

/**
 * /channel create NAME [shared] [invite | key KEY]: a key or invite channel is private
 * unless shared; when members use a client that cannot read a private channel, it says
 * who and asks (as `felund channel create` does).
 */
async function createChannel(line, app) {
  const { state } = app;
  const [, , name, ...words] = line.trim().split(/\s+/);
  const id = channelArg(name);
  const shared = words[0] === "shared";
  if (shared) words.shift();
  const access = words[0] ?? "public";
  // The key is the rest of the line as typed (it may hold spaces); only its hash is sent.
  const key = access === "key" ? line.trim().replace(/^(\S+\s+){3}(shared\s+)?key\s*/, "") : "";
  if (!["public", "invite", "key"].includes(access) || (access === "invite" && words.length > 1)) {
    throw new UserError(CREATE_USAGE);
  }
  if (access === "key" && !key) throw new UserError(`a key channel needs a key: ${CREATE_USAGE}`);
  if (access === "public" && shared) throw new UserError("a public channel is shared already");
  const isPrivate = access !== "public" && !shared;
  const cannot = isPrivate ? state.cannotReadPrivate() : [];
  if (cannot.length) {
    const k = cannot.length;
    const text =
      `#${id} would be private: its messages sealed under its own key, read by its members only; ` +
      `${k} member${k === 1 ? " uses" : "s use"} a client that cannot read a private channel ` +
      `(${cannot.join(", ")}): ${k === 1 ? "it" : "they"} would not read it, even as ` +
      `member${k === 1 ? "" : "s"}. (/channel create ${id} shared ${access}${access === "key" ? " KEY" : ""} ` +
      "makes it readable by every member of the circle.)";
    if (!(await app.confirm(`Make #${id} private?`, text, "Private anyway"))) {
      state.notice(`nothing done: #${id} is not created`);
      return;
    }
  }
  await state.createChannel(id, { access, key, shared });
  state.notice(`created #${id}${isPrivate ? " (private)" : ""}`);
}

/** /kick PERSON: says what it will do and who cannot follow, asks, then removes. */
async function kick(who, app) {
  const { state } = app;
  if (!who) throw new UserError("usage: /kick PERSON");
  const plan = state.kickPlan(who);
  const circle = state.circleName(plan.view);
  const k = plan.cannot.length;
  const cannot = k
    ? ` ${k} member${k === 1 ? " uses" : "s use"} a client that cannot follow (${plan.cannot.join(", ")}): ` +
      `${k === 1 ? "it needs" : "they need"} a new invite code.`
    : "";
  const text =
    `${plan.name} will be removed from ${circle}: the circle moves to a new key that ${plan.name} ` +
    `does not get, so ${plan.name} reads nothing written from now on and what ${plan.name} writes ` +
    `is refused. Old messages stay readable.${cannot}`;
  if (!(await app.confirm(`Remove ${plan.name}?`, text, `Remove ${plan.name}`))) {
    state.notice(`nothing done: ${plan.name} stays`);
    return;
  }
  const n = await state.kick(plan);
  state.notice(`${plan.name} is removed from ${circle} (new key, epoch ${n})${cannot}`);
}

/** /join CODE and /circle join CODE. */
async function joinCircle(code, state) {
  if (!code) throw new UserError("usage: /join CODE (paste an invite code)");
  try {
    const { view, joined } = await state.joinCircle(code);
    state.notice(joined ? `joined ${state.circleName(view)}` : "already in this circle");
  } catch (e) {
    if (e instanceof InviteError) throw new UserError(`bad invite code: ${e.message}`);
    throw e;
  }
}

async function circleCommand(sub, arg, app) {
  const { state } = app;
  if (sub === "join") return joinCircle(arg, state);
  if (sub === "create") {
    checkName(arg, "circle name");
    const view = await state.createCircle(arg);
    state.notice(`created ${state.circleName(view)}: F2 shows its invite code`);
    return;
  }
  if (sub === "name") {
    checkName(arg, "circle name");
    await state.renameCircle(arg);
    state.notice(`this circle is now ${arg}`);
    return;
  }
  if (sub === "leave") {
    const view = await state.leaveCircle();
    app.afterLeave(state.circleName(view));
    return;
  }
  throw new UserError("usage: /circle create NAME | /circle join CODE | /circle name NEW-NAME | /circle leave");
}
