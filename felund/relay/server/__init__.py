"""The relay server (felund relay serve): HTTP app, state, feed, storage, metrics, static files."""
