"""The felund-v1 formats: ids, invite codes, MAC, AES-GCM, messages, the chat model (sans-IO)."""
