// Calls in the page: what /call does (CALL_EVTs written as control events,
// signed like the others), the call we are in (its CallMedia), and the F4
// panel: who is in it with a level meter each, their video, mute, camera,
// device pickers, the host's end and revoke, and the states in words.

import { el, byId } from "./dom.js";
import { UserError } from "./state.js";
import { callEvent, callIn, foldCalls } from "./callstate.js";
import { CallMedia } from "./callmedia.js";
import { iceServersFor } from "../lib/callmesh.js";
import { relayIceServers } from "../lib/relay.js";

const SETTING_ICE = "ice"; // {fromRelay: boolean, servers: RTCIceServer[]}
// The node ids whose calls this page refuses (/call block): local, never sent, like the
// node's `felund block`; the events stay stored and passed on.
const SETTING_BLOCKED = "call_blocked";
const METER_MS = 150;

/** What ended our part in a call, in words. */
const GONE = {
  host: "call ended by host",
  ended: "call ended by host (you)",
  left: "you left the call",
  revoked: "the host removed you from the call",
};

export class Calls {
  constructor(state, { onChange }) {
    this.state = state;
    this.onChange = onChange;
    this.active = null; // {circleId, sessionId, role: "participant"|"viewer", media}
    this.gone = ""; // why our last call stopped (shown until the next one)
    this.ice = null; // the F3 setting, loaded lazily
    this.audioCtx = null;
    this.meters = new Map(); // stream id -> {analyser, data}
    this.blocked = new Set(); // loaded from the store before the first fold (load())
    this.blockedVersion = 0;
  }

  /** Read what the page keeps for calls (the blocked nodes) before the first fold. */
  async load() {
    this.setBlocked((await this.state.store.getSetting(SETTING_BLOCKED)) || []);
  }

  setBlocked(nodeIds) {
    this.blocked = new Set(nodeIds);
    this.blockedVersion += 1; // every circle's calls are folded again
  }

  // ---- the fold ------------------------------------------------------

  /** The calls of a circle (session id -> call). */
  callsOf(view) {
    const due = view.calls?.dueAt != null && Date.now() / 1000 >= view.calls.dueAt;
    const version = `${view.version}:${this.blockedVersion}`;
    if (view.callsVersion !== version || due) {
      view.calls = foldCalls(view, this.blocked);
      view.callsVersion = version;
    }
    return view.calls;
  }

  /** The call in the current channel, or null. */
  current() {
    const view = this.state.view();
    return view ? callIn(this.callsOf(view), this.state.current.channelId) : null;
  }

  /** The call we are in (as the events say now), or null. */
  mine() {
    if (!this.active) return null;
    const view = this.state.circles.get(this.active.circleId);
    return view ? this.callsOf(view).get(this.active.sessionId) || null : null;
  }

  /** After every state change: follow our call, or say why it stopped. */
  refresh() {
    if (!this.active) return;
    const me = this.state.identity.nodeId;
    const call = this.mine();
    if (!call) return this.stop(this.active.ending ? "ended" : "host");
    const inIt = this.active.role === "viewer" ? call.viewers.has(me) : call.participants.has(me);
    if (!inIt) return this.stop(this.active.leaving ? "left" : "revoked");
    this.active.media.update(call);
  }

  stop(why) {
    if (!this.active) return;
    this.active.media.close();
    this.active = null;
    this.gone = GONE[why];
    this.state.notice(this.gone);
    this.onChange();
  }

  // ---- commands ------------------------------------------------------

  /** /call start|join|view|leave|end|revoke PERSON */
  async command(sub, arg) {
    const view = this.state.view();
    if (!view) throw new UserError("join a circle first");
    const me = this.state.identity.nodeId;
    const call = this.current();
    const write = (event) => this.state.control(view, event);
    switch (sub || "start") {
      case "start": {
        if (this.active) throw new UserError("you are in a call already (/call leave first)");
        if (call) throw new UserError(`a call runs in #${call.channelId}: /call join or /call view`);
        const event = callEvent("create", me, { circleId: view.id, channelId: this.state.current.channelId });
        await this.state.control(view, event);
        return this.enter(view, event.session_id, "participant");
      }
      case "join":
      case "view": {
        if (!call) throw new UserError(`no call in #${this.state.current.channelId} (/call start begins one)`);
        if (this.active) throw new UserError("you are in a call already (/call leave first)");
        const role = sub === "join" ? "participant" : "viewer";
        const already = role === "viewer" ? call.viewers.has(me) : call.participants.has(me);
        if (!already) await write(callEvent(sub, me, { sessionId: call.sessionId }));
        return this.enter(view, call.sessionId, role);
      }
      case "leave": {
        if (!this.active) throw new UserError("you are in no call");
        this.active.leaving = true;
        return this.writeActive(callEvent("leave", me, { sessionId: this.active.sessionId }));
      }
      case "end": {
        const target = this.mine() || call;
        if (!target) throw new UserError("no call to end here");
        if (target.host !== me) throw new UserError("only the call's host can end it");
        if (this.active) this.active.ending = true;
        const v = this.active ? this.state.circles.get(this.active.circleId) : view;
        return this.state.control(v, callEvent("end", me, { sessionId: target.sessionId }));
      }
      case "revoke": {
        const target = this.mine();
        if (!target || target.host !== me) throw new UserError("only the call's host can revoke a viewer");
        const v = this.state.circles.get(this.active.circleId);
        const who = this.state.person(v, arg);
        return this.revoke(who);
      }
      case "block":
      case "unblock":
        return this.block(view, sub, arg);
      default:
        throw new UserError("usage: /call start | join | view | leave | end | revoke PERSON | block PERSON | unblock PERSON");
    }
  }

  /** /call block|unblock PERSON: refuse (or take again) that node's calls in this page. */
  async block(view, sub, who) {
    if (!who) throw new UserError(`usage: /call ${sub} PERSON`);
    const nodeId = this.state.person(view, who);
    if (nodeId === this.state.identity.nodeId) throw new UserError("that is you: you cannot block yourself");
    const next = new Set(this.blocked);
    if (sub === "block") next.add(nodeId);
    else next.delete(nodeId);
    await this.state.store.putSetting(SETTING_BLOCKED, [...next].sort());
    this.setBlocked(next);
    const name = this.state.names(view).get(nodeId) || nodeId.slice(0, 8);
    this.state.notice(sub === "block" ? `${name}'s calls are refused here (nobody is told)` : `${name}'s calls are shown again`);
    this.refresh(); // a call we are in whose host is now blocked stops here
    this.onChange();
  }

  async writeActive(event) {
    await this.state.control(this.state.circles.get(this.active.circleId), event);
  }

  /** The host takes a viewer out of the call. */
  async revoke(nodeId) {
    const me = this.state.identity.nodeId;
    await this.writeActive(callEvent("revoke", me, { sessionId: this.active.sessionId, target: nodeId }));
  }

  async enter(view, sessionId, role) {
    const iceServers = iceServersFor(await this.iceSetting(), await relayIceServers(view.circle.relayUrl));
    this.gone = "";
    const media = new CallMedia({
      me: this.state.identity.nodeId,
      sessionId,
      client: () => view.sync.client,
      iceServers,
      receiveOnly: role === "viewer",
      devices: { audio: "", video: "" },
      onChange: () => this.onChange(),
    });
    this.active = { circleId: view.id, sessionId, role, media };
    this.refresh();
    this.onChange();
  }

  // ---- settings ------------------------------------------------------

  async iceSetting() {
    this.ice ??= (await this.state.store.getSetting(SETTING_ICE)) || { fromRelay: true, servers: [] };
    return this.ice;
  }

  async setIce(setting) {
    this.ice = setting;
    await this.state.store.putSetting(SETTING_ICE, setting);
  }

  // ---- level meters --------------------------------------------------

  /** The audio level (0..1) of a stream now; 0 without audio. */
  level(stream) {
    const track = stream.getAudioTracks()[0];
    if (!track) return 0;
    this.audioCtx ??= new AudioContext();
    if (this.audioCtx.state === "suspended") this.audioCtx.resume().catch(() => {});
    let m = this.meters.get(track.id);
    if (!m) {
      const analyser = this.audioCtx.createAnalyser();
      analyser.fftSize = 256;
      this.audioCtx.createMediaStreamSource(new MediaStream([track])).connect(analyser);
      m = { analyser, data: new Uint8Array(analyser.fftSize) };
      this.meters.set(track.id, m);
    }
    m.analyser.getByteTimeDomainData(m.data);
    let sum = 0;
    for (const v of m.data) sum += ((v - 128) / 128) ** 2;
    return Math.min(1, Math.sqrt(sum / m.data.length) * 4);
  }
}

/** The F4 panel: rendered from Calls and the state; keyboard first, a sheet on a phone. */
export class CallPanel {
  constructor(calls, state, { focusInput }) {
    this.calls = calls;
    this.state = state;
    this.focusInput = focusInput;
    this.root = byId("call-panel");
    this.tiles = new Map(); // peer -> {video, audio}
    byId("call-close").addEventListener("click", () => this.toggle(false));
    this.root.addEventListener("click", (e) => {
      const b = e.target.closest("button[data-call]");
      if (b) this.act(b.dataset.call, b.dataset.arg || "");
    });
    for (const [id, kind] of [["call-mic", "audio"], ["call-cam", "video"]]) {
      byId(id).addEventListener("change", (e) => this.calls.active?.media.setDevice(kind, e.target.value));
    }
    byId("call-speaker").addEventListener("change", (e) => this.setSpeaker(e.target.value));
    setInterval(() => this.meter(), METER_MS);
  }

  get shown() {
    return !this.root.hidden;
  }

  toggle(show = !this.shown) {
    this.root.hidden = !show;
    if (show) {
      this.render();
      this.fillDevices();
      const first = this.root.querySelector("#call-actions button") || byId("call-close");
      first.focus();
    } else {
      this.focusInput();
    }
  }

  async act(what, arg) {
    const { calls } = this;
    try {
      if (what === "mute") calls.active.media.setMuted(!calls.active.media.muted);
      else if (what === "camera") calls.active.media.setCameraOff(!calls.active.media.cameraOff);
      else if (what === "revoke") await calls.revoke(arg);
      else await calls.command(what, arg);
    } catch (e) {
      this.state.notice(e.message, "error");
    }
    this.render();
  }

  async fillDevices() {
    let devices = [];
    try {
      devices = await navigator.mediaDevices.enumerateDevices();
    } catch {
      return;
    }
    const fill = (id, kind) => {
      const select = byId(id);
      const keep = select.value;
      select.replaceChildren(
        el("option", { text: "default", attrs: { value: "" } }),
        ...devices
          .filter((d) => d.kind === kind && d.deviceId && d.deviceId !== "default")
          .map((d, i) => el("option", { text: d.label || `${kind} ${i + 1}`, attrs: { value: d.deviceId } })),
      );
      select.value = keep;
    };
    fill("call-mic", "audioinput");
    fill("call-cam", "videoinput");
    fill("call-speaker", "audiooutput");
  }

  setSpeaker(deviceId) {
    this.speaker = deviceId;
    for (const { audio } of this.tiles.values()) audio.setSinkId?.(deviceId).catch(() => {});
  }

  /** The words for where we stand. */
  status(call) {
    const { calls } = this;
    const a = calls.active;
    if (a) {
      const bits = [a.role === "viewer" ? "watching" : "in the call"];
      if (a.media.problem) bits.push(a.media.problem);
      if (a.media.muted) bits.push("muted");
      if (a.media.cameraOff) bits.push("camera off");
      return bits.join(" · ");
    }
    const here = call ? call.words(this.names()) : `no call in #${this.state.current.channelId}`;
    if (!calls.gone) return here;
    return call ? `${calls.gone} · ${here}` : calls.gone;
  }

  /** The current circle's names as /who gives them (node id -> name), once per change. */
  names() {
    const view = this.state.view();
    if (!view) return new Map();
    if (view.callNamesVersion !== view.version) {
      view.callNames = this.state.names(view);
      view.callNamesVersion = view.version;
    }
    return view.callNames;
  }

  name(nodeId) {
    return this.names().get(nodeId) || nodeId.slice(0, 8);
  }

  render() {
    if (!this.shown) return;
    const { calls } = this;
    const me = this.state.identity?.nodeId;
    const a = calls.active;
    const call = a ? calls.mine() : calls.current();
    byId("call-status").textContent = this.status(call);
    byId("call-panel").dataset.state = a ? a.role : calls.gone ? "gone" : call ? "call" : "none";
    const buttons = [];
    const button = (what, text, arg = "") =>
      buttons.push(el("button", { text, attrs: { type: "button", "data-call": what, ...(arg ? { "data-arg": arg } : {}) } }));
    if (!a && !call) button("start", "Start call");
    if (!a && call) {
      button("join", "Join");
      button("view", "Watch");
    }
    if (a && a.role === "participant") {
      button("mute", a.media.muted ? "Unmute" : "Mute");
      button("camera", a.media.cameraOff ? "Camera on" : "Camera off");
    }
    if (a) button("leave", a.role === "viewer" ? "Stop watching" : "Leave");
    if (call && call.host === me) button("end", "End for all");
    // Replaced only when they change: a redraw must not take the focus from a button.
    this.replace(byId("call-actions"), buttons);

    const people = [];
    if (call) {
      const links = a ? a.media.links : new Map();
      const unreachable = a ? a.media.unreachable : new Map();
      const row = (id, role) => {
        const link = links.get(id);
        let state = id === me ? "you" : link ? link.state : "";
        if (state !== "connected" && unreachable.has(id)) state = unreachable.get(id);
        const kids = [
          el("span", { class: "call-name", text: this.name(id) }),
          el("span", { class: "call-role", text: id === call.host ? "host" : role }),
          el("meter", { class: "call-level", attrs: { min: "0", max: "1", value: "0", "data-peer": id, "aria-label": `${this.name(id)}'s level` } }),
          el("span", { class: "call-link", text: state, attrs: { "data-peer": id } }),
        ];
        if (role === "viewer" && call.host === me && a) {
          kids.push(el("button", { text: "Revoke", attrs: { type: "button", "data-call": "revoke", "data-arg": id, "aria-label": `revoke ${this.name(id)}` } }));
        }
        people.push(el("li", { attrs: { "data-peer": id } }, kids));
      };
      for (const id of [...call.participants].sort()) row(id, "participant");
      for (const id of [...call.viewers].sort()) row(id, "viewer");
    }
    this.replace(byId("call-people"), people);
    this.renderTiles();
  }

  replace(parent, children) {
    const key = children.map((c) => c.outerHTML).join("");
    if (parent.dataset.drawn === key) return;
    parent.dataset.drawn = key;
    // Focus inside stays inside: on the same action if it is still offered, else the first.
    const focused = parent.contains(document.activeElement) ? document.activeElement.dataset.call : null;
    parent.replaceChildren(...children);
    if (focused !== null) (parent.querySelector(`[data-call="${focused}"]`) || parent.querySelector("button"))?.focus();
  }

  renderTiles() {
    const links = this.calls.active ? this.calls.active.media.links : new Map();
    for (const [peer, tile] of this.tiles) {
      if (links.get(peer)?.stream === tile.stream) continue;
      tile.box.remove();
      this.tiles.delete(peer);
    }
    for (const [peer, link] of links) {
      if (this.tiles.has(peer)) continue;
      const video = el("video", { attrs: { autoplay: "", playsinline: "", "aria-label": `${this.name(peer)}'s video` } });
      video.muted = true; // the sound plays through the audio element (its speaker can be picked)
      video.srcObject = link.stream;
      const audio = el("audio", { attrs: { autoplay: "" } });
      audio.srcObject = link.stream;
      if (this.speaker) audio.setSinkId?.(this.speaker).catch(() => {});
      const box = el("figure", { class: "call-tile", attrs: { "data-peer": peer } }, [video, audio, el("figcaption", { text: this.name(peer) })]);
      byId("call-videos").append(box);
      this.tiles.set(peer, { box, video, audio, stream: link.stream });
    }
  }

  meter() {
    if (!this.shown || !this.calls.active) return;
    const { media } = this.calls.active;
    const me = this.state.identity.nodeId;
    const streams = new Map([[me, media.stream]]);
    for (const [peer, link] of media.links) streams.set(peer, link.stream);
    for (const m of this.root.querySelectorAll("meter.call-level")) {
      const stream = streams.get(m.dataset.peer);
      m.value = stream ? this.calls.level(stream) : 0;
    }
  }
}
