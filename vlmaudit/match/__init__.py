"""Known-content matching: hash banks (PDQ, MD5, SHA-256) against the hashes stored in reports."""
