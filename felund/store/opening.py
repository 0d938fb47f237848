"""Opening a home's database: private, and never blank over circles it once held.

The home keeps a mark of how many circles its database held at the last
change (``home.CIRCLES_MARK``). A database found without circles while the
mark says it had some was truncated or replaced: the store and offline
commands refuse it, and say where the last backup is, rather than start a
blank node over it.
"""

from __future__ import annotations

import contextlib

from felund import home
from felund.errors import DatabaseLost
from felund.store.database import Database


def open_database(lay: home.Layout, synchronous: str) -> Database:
    """The home's database, checked against its mark; DatabaseLost if it lost its circles."""
    db = Database(lay.database, synchronous)
    try:
        held = home.recorded_circles(lay)
        if held and not db.circles():
            backup = home.last_backup(lay)
            raise DatabaseLost(
                f"the database {lay.database} lost its circles (it held {held}); "
                + (
                    f"the last backup is {backup}"
                    if backup
                    else "no backup was made with `felund backup`"
                )
                + ". Stop the node and `felund restore` a backup into this home, or remove "
                f"{lay.home / home.CIRCLES_MARK} to start it blank"
            )
        note_circles(lay, db, held)
    except BaseException:
        db.close()
        raise
    return db


def note_circles(lay: home.Layout, db: Database, recorded: int | None = None) -> None:
    """Bring the home's mark up to date after circles changed (a no-op when it is)."""
    count = len(db.circles())
    if count != (home.recorded_circles(lay) if recorded is None else recorded):
        with contextlib.suppress(OSError):  # a full disk: the next change or start records it
            home.record_circles(lay, count)
