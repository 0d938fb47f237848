// The media of one call: local microphone and camera, one RTCPeerConnection
// per peer that lib/callmesh.linksOf names, signalled over the relay's
// /v1/signal (signed, polled) with the perfect-negotiation pattern (§1.6.2).
// Each description is sent once ICE gathering is done (candidates inside the
// SDP: one signal instead of one per candidate, under the relay's 20 per
// 10 s); candidates found later, and the other client's trickled ones, travel
// as media-candidate.

import { RelayError } from "../lib/relay.js";
import { hasTurn, linksOf, mediaSessionId, readSignal, ttlOf } from "../lib/callmesh.js";

const POLL_MS = 1000;
const GATHER_MS = 2500; // the longest wait for ICE gathering before a description goes anyway
const CONNECT_MS = 20000; // a connection not up by then is closed and made again (§1.6 ICE timeouts)
const HELD_MAX = 64; // signals kept for a peer the call does not list yet (its join not seen here)
const HELD_MS = 30000;
const POST_TRIES = 5;

/** Local media wanted: `audio`/`video` device ids ("" = default). */
async function localMedia({ audio = "", video = "" }) {
  const want = (id) => (id ? { deviceId: { exact: id } } : true);
  try {
    return { stream: await navigator.mediaDevices.getUserMedia({ audio: want(audio), video: want(video) }), problem: null };
  } catch (e) {
    // No camera is no reason not to talk: try the microphone alone.
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: want(audio) });
      return { stream, problem: null };
    } catch (e2) {
      const denied = e2.name === "NotAllowedError" || e.name === "NotAllowedError";
      return { stream: new MediaStream(), problem: denied ? "no microphone permission" : "no microphone" };
    }
  }
}

/** Resolves when pc has gathered its candidates (or after GATHER_MS). */
export const gathered = (pc) =>
  new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const done = () => {
      pc.removeEventListener("icegatheringstatechange", check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    const timer = setTimeout(done, GATHER_MS);
    pc.addEventListener("icegatheringstatechange", check);
  });

export class CallMedia {
  /**
   * @param {{me: string, sessionId: string, client: function(): import("../lib/relay.js").RelayClient,
   *   iceServers: object[], receiveOnly: boolean, devices: {audio: string, video: string},
   *   onChange: function(): void}} options client() is the circle's signed relay client now
   */
  constructor({ me, sessionId, client, iceServers, receiveOnly, devices, onChange }) {
    this.me = me;
    this.sessionId = sessionId;
    this.client = client;
    this.iceServers = iceServers;
    this.receiveOnly = receiveOnly;
    this.devices = { ...devices };
    this.onChange = onChange;
    this.links = new Map(); // peer -> Link
    this.call = null;
    this.stream = null; // local MediaStream (participants)
    this.problem = null; // "no microphone permission" | "no microphone" | null
    this.muted = false;
    this.cameraOff = false;
    this.cursor = 0;
    this.held = []; // [{signal, at}]
    this.unreachable = new Map(); // peer -> what the panel says while no try has connected
    this.closed = false;
    this.ready = receiveOnly ? Promise.resolve() : this._openLocal();
    this._poll();
  }

  async _openLocal() {
    const { stream, problem } = await localMedia(this.devices);
    if (this.closed) {
      for (const t of stream.getTracks()) t.stop();
      return;
    }
    this.stream = stream;
    this.problem = problem;
    this.onChange();
  }

  /** The call changed (a fold): open the connections it names, close the others. */
  async update(call) {
    this.call = call;
    await this.ready;
    if (this.closed) return;
    const wanted = linksOf(call, this.me);
    for (const [peer, link] of this.links) {
      if (!wanted.has(peer)) {
        this._drop(peer, link);
        this.onChange();
      }
    }
    for (const [peer, plan] of wanted) {
      if (!this.links.has(peer) && plan.offerer) {
        this._open(peer, plan);
        this.onChange();
      }
    }
    const held = this.held;
    this.held = [];
    for (const h of held) if (Date.now() - h.at < HELD_MS) await this._take(h.signal, h.at);
  }

  /** A connection to peer; one opened for a received offer adds its tracks after it (no glare). */
  _open(peer, plan, { forOffer = false } = {}) {
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    const link = {
      peer,
      pc,
      polite: !plan.offerer, // the first offer's sender is impolite (§1.6.2 step 4)
      sends: plan.sends,
      makingOffer: false,
      ignoreOffer: false,
      described: false, // our first description has gone: later candidates trickle
      candidates: [],
      tracked: false,
      stream: new MediaStream(),
      state: "connecting",
      timer: setTimeout(() => this._timeout(peer, link), CONNECT_MS),
    };
    this.links.set(peer, link);
    pc.ontrack = ({ track }) => {
      link.stream.addTrack(track);
      this.onChange();
    };
    pc.onicecandidate = ({ candidate }) => {
      if (candidate && link.described) this._post(link, "media-candidate", candidate.toJSON());
    };
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      if (s === "connected") {
        clearTimeout(link.timer);
        this.unreachable.delete(peer);
      }
      if (s === "failed") this.unreachable.set(peer, this._unreachable());
      link.state = s;
      this.onChange();
    };
    pc.onnegotiationneeded = async () => {
      try {
        link.makingOffer = true;
        await pc.setLocalDescription();
        await gathered(pc);
        await this._describe(link, "media-offer");
      } catch (e) {
        console.warn("felund: call offer failed", e);
      } finally {
        link.makingOffer = false;
      }
    };
    if (forOffer) return link;
    if (plan.sends) this._addTracks(link);
    else {
      // Nothing to send yet (no microphone): offer to receive all the same.
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.addTransceiver("video", { direction: "recvonly" });
    }
    return link;
  }

  _addTracks(link) {
    link.tracked = true;
    if (!this.stream) return;
    for (const track of this.stream.getTracks()) {
      const sender = link.pc.addTrack(track, this.stream);
      if (this._silenced(track)) sender.replaceTrack(null);
    }
  }

  _silenced(track) {
    return (track.kind === "audio" && this.muted) || (track.kind === "video" && this.cameraOff);
  }

  _unreachable() {
    return hasTurn(this.iceServers) ? "unreachable" : "peer unreachable (no TURN)";
  }

  _timeout(peer, link) {
    if (this.links.get(peer) !== link || link.pc.connectionState === "connected") return;
    this._drop(peer, link);
    // Said until a new try connects; the offerer makes it now.
    this.unreachable.set(peer, this._unreachable());
    this.onChange();
    this.update(this.call);
  }

  _drop(peer, link) {
    clearTimeout(link.timer);
    link.pc.close();
    this.links.delete(peer);
  }

  async _describe(link, type) {
    link.described = true;
    const d = link.pc.localDescription;
    await this._post(link, type, { type: d.type, sdp: d.sdp });
  }

  async _post(link, type, body, tries = POST_TRIES) {
    const signal = {
      sessionId: mediaSessionId(this.sessionId, this.me, link.peer),
      toNodeId: link.peer,
      type,
      payload: JSON.stringify(body),
      ttlS: ttlOf(type),
    };
    for (let attempt = 1; attempt <= tries && !this.closed; attempt++) {
      try {
        await this.client().postSignal(signal);
        return;
      } catch (e) {
        // Candidates are not worth a wait (as the other client); descriptions are retried.
        if (!(e instanceof RelayError) || type === "media-candidate" || attempt === tries) {
          console.warn(`felund: signal ${type} not sent`, e.message);
          return;
        }
        const wait = e.retryAfter ? e.retryAfter * 1000 : Math.min(5000, 500 * 2 ** (attempt - 1));
        await new Promise((r) => setTimeout(r, wait));
      }
    }
  }

  async _poll() {
    while (!this.closed) {
      try {
        const signals = await this.client().pullSignals({ sinceId: this.cursor });
        for (const s of signals) {
          if (Number.isInteger(s.id) && s.id > this.cursor) this.cursor = s.id;
          await this._take(s, Date.now());
        }
      } catch (e) {
        // The relay is down or refused: the next poll tries again.
      }
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  async _take(raw, at) {
    const sig = readSignal(raw, this.sessionId, this.me);
    if (!sig || this.closed) return;
    let link = this.links.get(sig.peer);
    const plan = linksOf(this.call, this.me).get(sig.peer);
    if (!plan) {
      // Its join may not have reached us yet: keep it a while.
      if (this.held.length < HELD_MAX) this.held.push({ signal: raw, at });
      return;
    }
    if (!link) {
      if (sig.type !== "media-offer") {
        if (this.held.length < HELD_MAX) this.held.push({ signal: raw, at });
        return;
      }
      link = this._open(sig.peer, { ...plan, offerer: false }, { forOffer: true });
    }
    const { pc } = link;
    try {
      if (sig.candidate) {
        if (pc.remoteDescription) await pc.addIceCandidate(sig.candidate);
        else link.candidates.push(sig.candidate);
        return;
      }
      const offer = sig.description.type === "offer";
      const collision = offer && (link.makingOffer || pc.signalingState !== "stable");
      link.ignoreOffer = !link.polite && collision;
      if (link.ignoreOffer) return;
      if (!offer && pc.signalingState !== "have-local-offer") return; // a stale answer
      await pc.setRemoteDescription(sig.description); // the polite side rolls back implicitly
      for (const c of link.candidates.splice(0)) await pc.addIceCandidate(c).catch(() => {});
      if (offer) {
        if (link.sends && !link.tracked) this._addTracks(link);
        await pc.setLocalDescription();
        await gathered(pc);
        await this._describe(link, "media-answer");
      }
    } catch (e) {
      console.warn("felund: call signal not applied", e.message);
    }
  }

  /** Mute or unmute: no packet leaves while muted (the sender carries no track). */
  setMuted(muted) {
    this.muted = muted;
    this._silence("audio");
  }

  setCameraOff(off) {
    this.cameraOff = off;
    this._silence("video");
  }

  _silence(kind) {
    const track = this.stream?.getTracks().find((t) => t.kind === kind);
    if (!track) return;
    track.enabled = !this._silenced(track);
    for (const { pc } of this.links.values()) {
      for (const t of pc.getTransceivers()) {
        if (t.sender && t.receiver.track.kind === kind && t.currentDirection !== "recvonly" && t.direction !== "recvonly") {
          t.sender.replaceTrack(this._silenced(track) ? null : track);
        }
      }
    }
    this.onChange();
  }

  /** Another microphone or camera: the new track replaces the old on every sender (no signalling). */
  async setDevice(kind, deviceId) {
    this.devices[kind === "audio" ? "audio" : "video"] = deviceId;
    if (this.receiveOnly || !this.stream) return;
    const fresh = await navigator.mediaDevices.getUserMedia({ [kind]: deviceId ? { deviceId: { exact: deviceId } } : true });
    const track = fresh.getTracks()[0];
    const old = this.stream.getTracks().find((t) => t.kind === kind);
    if (old) {
      this.stream.removeTrack(old);
      old.stop();
    }
    this.stream.addTrack(track);
    track.enabled = !this._silenced(track);
    for (const link of this.links.values()) {
      if (!link.sends) continue;
      const t = link.pc.getTransceivers().find((x) => x.receiver.track.kind === kind && x.direction !== "recvonly");
      if (t) await t.sender.replaceTrack(this._silenced(track) ? null : track);
      else link.pc.addTrack(track, this.stream); // a first camera: renegotiates
    }
    this.onChange();
  }

  /** Byte counts of every connection (getStats), for the panel and the tests. */
  async stats() {
    const out = {};
    for (const [peer, { pc }] of this.links) {
      const s = { inAudio: 0, inVideo: 0, outAudio: 0, outVideo: 0 };
      (await pc.getStats()).forEach((r) => {
        if (r.type === "inbound-rtp") s[r.kind === "audio" ? "inAudio" : "inVideo"] += r.bytesReceived || 0;
        if (r.type === "outbound-rtp") s[r.kind === "audio" ? "outAudio" : "outVideo"] += r.bytesSent || 0;
      });
      out[peer] = s;
    }
    return out;
  }

  close() {
    this.closed = true;
    for (const [peer, link] of this.links) this._drop(peer, link);
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    this.onChange();
  }
}
