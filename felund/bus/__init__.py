"""The node's ZeroMQ bus: the envelope, sockets with explicit limits, the asyncio face, catch-up."""
