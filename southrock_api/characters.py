"""Characters that look like nothing: shared by the importer's codes and the API's parameter names."""

from __future__ import annotations

# Soft hyphen, zero-width spaces and joiners, direction marks and embeddings, word joiner and
# invisible operators, byte-order mark: a name or code holding one looks like one without it.
INVISIBLE = "\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff"
