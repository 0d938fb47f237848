"""The relay: its wire protocol and auth (shared), the node's client, and the server."""
