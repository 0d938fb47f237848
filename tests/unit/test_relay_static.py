"""What the relay serves of the browser client: ``resolve`` never leaves the web root."""

from __future__ import annotations

from pathlib import Path

from felund.relay.server.static import resolve


def test_resolve_refuses_what_leaves_the_root(tmp_path: Path) -> None:
    root = tmp_path / "web"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("hi")
    (root / "sub" / "a.js").write_text("x")
    (tmp_path / "secret.txt").write_text("s")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    assert resolve(root, "") == root / "index.html"
    assert resolve(root, "sub/a.js") == root / "sub" / "a.js"
    for bad in ("sub", "../secret.txt", "link.txt", "sub/../index.html", "a\\b", "x\x00", "/abs"):
        assert resolve(root, bad) is None, bad
