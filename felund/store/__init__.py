"""The node's database, the operations on it, and the client that finds the running node."""
