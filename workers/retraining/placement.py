"""A new model version reaches models/<product>/ only once it is registered.

Both the scoring step and the describer step stage a version under models/.work,
register its row (candidate or rejected), then call place_registered: a directory
under models/<product>/ is always a registered version, and a kill between two steps
leaves at worst a row whose directory is missing (never active: it fails to load and
is logged) or a staged directory that `clad model prune` removes.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from pipeline.storage.database import transaction
from pipeline.storage.repository import activate_model_version


def place_registered(factory: sessionmaker[Session], staged: Path, final: Path, *,
                     activate: bool) -> None:
    """Move the registered version `final.name` from `staged` into place, then make it
    the product's active version when `activate`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    staged.rename(final)
    if activate:
        with transaction(factory) as session:
            activate_model_version(session, final.name)
