"""Node-to-node gossip: the handshake, v1 and native frames and sessions, set reconciliation."""
