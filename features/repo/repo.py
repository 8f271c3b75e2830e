"""The lab's feature definitions as the feast CLI sees them (cd features/repo && feast plan).

``mlsd features apply`` writes ``feature_store.yaml`` (and the settings it was generated from)
beside this file. The objects come from ``features.definitions``, the code the lab applies in
process, so the CLI and the lab can never disagree on a definition.
"""

from pathlib import Path

from features.definitions import build_definitions
from features.store import settings_of_repo
from features.table_files import tables_dir

# Feast collects the Feast objects it finds among this module's attributes.
globals().update(build_definitions(tables_dir(settings_of_repo(Path(__file__).parent))).by_name())
