// One circle's direct DataChannel links (addendum §1.6.1, §1.8): discovery
// through the relay's /v1/peers, offers and answers through /v1/signal, one
// RTCPeerConnection and "felund-gossip" channel per peer. This file moves bytes
// only: the protocol (handshake, bounds) is lib/dctransport.js, and what comes
// in goes through CircleSync.ingestDirect, the one ingest path. The relay stays
// the path whenever no channel is authenticated.

import {
  DcSession,
  LABEL,
  MAX_BATCH,
  MAX_FRAMES_PER_WINDOW,
  dcSessionId,
  offers,
  readDcSignal,
} from "../lib/dctransport.js";
import { circleHint } from "../lib/ids.js";
import { gathered } from "./callmedia.js";

const DISCOVER_MS = 5000; // §1.6.1
const POLL_MS = 1000;
const OPEN_MS = 15000; // a channel not open by then is closed (§1.6 ICE timeouts)
const TICK_MS = 1000;
const MAX_LINKS = 50; // the /v1/peers limit
const MAX_BUFFERED = 4 * 1024 * 1024; // bytes queued on one channel before frames are dropped

export class DirectLinks {
  /**
   * @param {{sync: import("../lib/sync.js").CircleSync, iceServers?: object[]}} options
   *   iceServers: STUN only; the DataChannel never uses TURN (§1.7)
   */
  constructor({ sync, iceServers = [] }) {
    this.sync = sync;
    this.me = sync.identity.nodeId;
    this.useIceServers(iceServers);
    this.links = new Map(); // peer -> {pc, channel, session, timer}
    this.cursor = 0;
    this.closed = false;
    this.hint = circleHint(sync.circle.circleId);
    this._timers = [
      setInterval(() => this._discover(), DISCOVER_MS),
      setInterval(() => this._tick(), TICK_MS),
    ];
    this._discover();
    this._poll();
  }

  /** The ICE servers of new links, TURN left out (the DataChannel never uses TURN, §1.7). */
  useIceServers(servers) {
    this.iceServers = servers.filter((s) => ![s.urls].flat().some((u) => /^turns?:/.test(String(u))));
  }

  /** Peers whose channel is authenticated now. */
  authed() {
    return [...this.links].filter(([, l]) => l.session?.authed && !l.session.closed).map(([p]) => p);
  }

  /** Our new message, to every authenticated peer (MSG_NEW). */
  announce(wire) {
    for (const link of this.links.values()) {
      const frame = link.session?.msgNew(wire);
      if (frame) this._send(link, frame);
    }
  }

  async _discover() {
    if (this.closed || !this.sync.registered) return; // the relay refuses us until then
    try {
      for (const p of await this.sync.client.peers({ limit: MAX_LINKS })) {
        const peer = p?.node_id;
        if (typeof peer === "string" && peer !== this.me && offers(this.me, peer) && !this.links.has(peer)) {
          await this._offer(peer);
        }
      }
    } catch {
      // The relay is down or refused: the next round tries again.
    }
  }

  _link(peer) {
    if (this.links.size >= MAX_LINKS) return null;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    const link = { peer, pc, channel: null, session: null, timer: setTimeout(() => this._drop(link), OPEN_MS) };
    this.links.set(peer, link);
    pc.ondatachannel = ({ channel }) => {
      if (channel.label === LABEL && !link.channel) this._attach(link, channel);
      else channel.close();
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" || pc.connectionState === "closed") this._drop(link);
    };
    return link;
  }

  async _offer(peer) {
    const link = this._link(peer);
    if (!link) return;
    this._attach(link, link.pc.createDataChannel(LABEL, { ordered: true }));
    await link.pc.setLocalDescription();
    await gathered(link.pc); // candidates inside the SDP: one signal, not one per candidate
    await this._signal(link, "offer", link.pc.localDescription);
  }

  async _signal(link, type, body) {
    try {
      await this.sync.client.postSignal({
        sessionId: dcSessionId(this.me, link.peer),
        toNodeId: link.peer,
        type,
        payload: JSON.stringify(body),
        ttlS: type === "candidate" ? 60 : 120,
      });
    } catch (e) {
      // Never retried, as the other client: the link times out and discovery offers again.
      console.warn(`felund: direct ${type} not sent`, e.message);
    }
  }

  async _poll() {
    while (!this.closed) {
      if (this.sync.registered) await this._pullSignals(); // the relay refuses us until then
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  async _pullSignals() {
    try {
      for (const s of await this.sync.client.pullSignals({ sinceId: this.cursor })) {
        if (Number.isInteger(s.id) && s.id > this.cursor) this.cursor = s.id;
        await this._take(readDcSignal(s, this.me));
      }
    } catch {
      // The relay is down or refused: the next poll tries again.
    }
  }

  async _take(sig) {
    if (!sig || this.closed) return;
    let link = this.links.get(sig.peer);
    try {
      if (sig.candidate) {
        if (link?.pc.remoteDescription) await link.pc.addIceCandidate(sig.candidate);
        return;
      }
      if (sig.description.type === "offer") {
        if (link || offers(this.me, sig.peer)) return; // no renegotiation; we offer to larger ids
        link = this._link(sig.peer);
        if (!link) return;
        await link.pc.setRemoteDescription(sig.description);
        await link.pc.setLocalDescription();
        await gathered(link.pc);
        await this._signal(link, "answer", link.pc.localDescription);
      } else if (link && link.pc.signalingState === "have-local-offer") {
        await link.pc.setRemoteDescription(sig.description);
      }
    } catch (e) {
      console.warn("felund: direct signal not applied", e.message);
    }
  }

  _attach(link, channel) {
    link.channel = channel;
    let opened;
    // Frames wait for the session (onopen's start is async), then are taken one at a time, in order.
    link.chain = new Promise((resolve) => (opened = resolve));
    channel.onopen = async () => {
      clearTimeout(link.timer);
      link.session = new DcSession({
        secretHex: this.sync.circle.secret,
        nodeId: this.me,
        circleHint: await this.hint,
        now: Date.now(),
      });
      this._send(link, link.session.hello());
      opened();
    };
    link.queued = 0;
    channel.onmessage = ({ data }) => {
      // Frames waiting are bounded too: a peer faster than we take its frames is dropped.
      if (++link.queued > MAX_FRAMES_PER_WINDOW) return this._drop(link);
      link.chain = link.chain
        .then(() => this._frame(link, data))
        .catch((e) => {
          console.warn("felund: direct frame not taken", e.message);
          this._drop(link);
        })
        .finally(() => link.queued--);
    };
    channel.onclose = () => this._drop(link);
  }

  async _frame(link, data) {
    if (this.links.get(link.peer) !== link || link.session.closed) return;
    const r = await link.session.receive(data, Date.now());
    for (const frame of r.send) this._send(link, frame);
    if (r.close) {
      console.warn(`felund: direct link to ${link.peer.slice(0, 8)} closed: ${r.close}`);
      this._drop(link);
      return;
    }
    if (r.authed) this._send(link, link.session.msgsSend(await this.sync.newestWires(MAX_BATCH)));
    if (r.messages.length) await this.sync.ingestDirect(r.messages);
  }

  _send(link, frame) {
    const ch = link.channel;
    if (ch?.readyState === "open" && ch.bufferedAmount < MAX_BUFFERED) ch.send(frame);
  }

  _tick() {
    const now = Date.now();
    for (const link of [...this.links.values()]) if (link.session?.tick(now)) this._drop(link);
  }

  _drop(link) {
    if (this.links.get(link.peer) !== link) return;
    this.links.delete(link.peer);
    clearTimeout(link.timer);
    link.channel?.close();
    link.pc.close();
  }

  close() {
    this.closed = true;
    for (const t of this._timers) clearInterval(t);
    for (const link of [...this.links.values()]) this._drop(link);
  }
}
