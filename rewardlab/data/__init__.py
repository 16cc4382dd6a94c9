"""Preference data: sources → formats (with field checks) → loading → splits → encoding → collation → sampling."""
