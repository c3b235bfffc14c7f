"""``wsss compare``: methods side by side on the same data, seed and budget, and their leaderboard.

``entries`` turns config files, variants and presets into run configurations; ``runner`` runs them
through the ordinary pipeline stages, sharing equal stages; ``leaderboard`` and ``page`` write the
table, its plot and the HTML page.
"""

from wsss.compare.entries import Entry, build_entries
from wsss.compare.presets import preset_entries
from wsss.compare.runner import run_compare

__all__ = ["Entry", "build_entries", "preset_entries", "run_compare"]
